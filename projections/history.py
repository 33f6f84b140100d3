"""Profiles over time: counts as of a UTC day, the daily series, and a profile as it was.

As of day D means the state after every change caused by an event whose event time is
before midnight after D (UTC), with identity as the engine resolved it (README "Profiles over
time" says when that equals a rebuild of the log cut there) and today's settings applied.
Counts come from the table macros of views.sql (``counts_daily``), so SQL users get the same
numbers; the profile is rebuilt from the history tables and the timeline (see
``profile_as_of``).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, timedelta
from typing import Any

import duckdb

from profile_engine.reachability import CHANNELS
from projections.sql_checks import QueryError

DAY_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_DAYS = 3_660  # ten years a request: the series is built in memory

DAILY_COLUMNS = (
    "day", "total",
    "email_reachable", "email_unreachable", "sms_reachable", "sms_unreachable",
    "push_reachable", "push_unreachable", "reachable_any", "unreachable_any", "mau",
)  # fmt: skip


def parse_day(text: str, what: str = "day") -> date:
    """``YYYY-MM-DD`` (a real date) -> date, or a one-line error naming ``what``."""
    if not DAY_PATTERN.match(text or ""):
        raise QueryError(f"{what} {text!r} is not YYYY-MM-DD (e.g. 2026-03-31)")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise QueryError(f"{what} {text!r} is not a real date") from None


def check_channel(channel: str | None) -> None:
    if channel is not None and channel not in CHANNELS:
        raise QueryError(f"unknown channel {channel!r}; use one of {', '.join(CHANNELS)}")


def daily_rows(
    con: duckdb.DuckDBPyConnection, first: date, last: date, channel: str | None = None
) -> list[dict[str, Any]]:
    """One row per UTC day from ``first`` to ``last``: total, reachable and unreachable per
    channel (only ``channel``'s when given) and on any, and MAU month to date. The CSV, the
    JSON, the table, the PNG chart and the web page all take their figures from here."""
    check_channel(channel)
    if last < first:
        raise QueryError(f"--to {last} is before --from {first}")
    if (last - first).days >= MAX_DAYS:
        raise QueryError(f"at most {MAX_DAYS} days at a time")
    result = con.execute(
        f"SELECT {', '.join(DAILY_COLUMNS)} FROM counts_daily(?::DATE, ?::DATE)", [first, last]
    )
    rows = [dict(zip(DAILY_COLUMNS, row, strict=True)) for row in result.fetchall()]
    if channel is None:
        return rows
    dropped = {
        f"{c}_{kind}" for c in CHANNELS if c != channel for kind in ("reachable", "unreachable")
    }
    return [{k: v for k, v in row.items() if k not in dropped} for row in rows]


def daily_columns(channel: str | None) -> list[str]:
    if channel is None:
        return list(DAILY_COLUMNS)
    return ["day", "total", f"{channel}_reachable", f"{channel}_unreachable", "reachable_any",
            "unreachable_any", "mau"]  # fmt: skip


def counts_as_of(
    con: duckdb.DuckDBPyConnection, day: date, channel: str | None = None
) -> dict[str, Any]:
    """`counts` as of the end of ``day`` (UTC): the same shape as projections.queries.counts,
    with the MAU of the day's month through the end of the day."""
    check_channel(channel)
    row = daily_rows(con, day, day)[0]
    wanted = [channel] if channel else list(CHANNELS)
    return {
        "total": row["total"],
        "reachable_any": row["reachable_any"],
        "mau": row["mau"],
        "month": day.strftime("%Y-%m"),
        "channels": {
            name: {
                "reachable": row[f"{name}_reachable"],
                "unreachable": row[f"{name}_unreachable"],
            }
            for name in wanted
        },
    }


def day_after(day: date) -> date:
    return day + timedelta(days=1)


def daily_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """The rows as the CSV `counts --daily --format csv` prints (header, one line a day)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row[c].isoformat() if isinstance(row[c], date) else row[c]
                         for c in columns])  # fmt: skip
    return out.getvalue()
