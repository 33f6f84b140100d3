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
import json
import math
import re
import uuid
from datetime import date, datetime, timedelta
from typing import Any

import duckdb

from profile_engine.batch_fold import trait_text
from profile_engine.events import CHANNEL_ID_TYPE
from profile_engine.identifiers import normalise
from profile_engine.keys import identifier_key
from profile_engine.reachability import CHANNELS
from profile_engine.state import ProfileState
from projections import queries
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


def last_event_day(con: duckdb.DuckDBPyConnection) -> date | None:
    """The UTC day of the newest event folded (by event time), None before any event: the
    web page's chart ends there, since the data may be older than the wall clock."""
    row = con.execute("SELECT max(timestamp)::DATE FROM events").fetchone()
    return row[0] if row else None


def latest_active_month(con: duckdb.DuckDBPyConnection) -> str | None:
    """'YYYY-MM' of the newest month with activity (MAU > 0), None when there is none."""
    row = con.execute(
        "SELECT strftime(max(timestamp), '%Y-%m') FROM active_events"
        " WHERE profile_id IN (SELECT profile_id FROM profiles)"
    ).fetchone()
    return row[0] if row else None


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
        "month": f"{day.year:04d}-{day.month:02d}",  # strftime writes year 1 as "1"
        "channels": {
            name: {
                "reachable": row[f"{name}_reachable"],
                "unreachable": row[f"{name}_unreachable"],
            }
            for name in wanted
        },
    }


def day_after(day: date) -> date:
    """The midnight that ends ``day`` (the last day Python knows ends at its own start: no
    event is that late, the event-time window ends long before)."""
    return day if day == date.max else day + timedelta(days=1)


def daily_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """The rows as the CSV `counts --daily --format csv` prints (header, one line a day)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row[c].isoformat() if isinstance(row[c], date) else row[c]
                         for c in columns])  # fmt: skip
    return out.getvalue()


# -- a profile as it was ---------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1)


def _moment(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def profile_as_of(
    con: duckdb.DuckDBPyConnection, lookup_key: str, day: date
) -> dict[str, Any] | None:
    """The profile document of ``TYPE:VALUE`` as it was at the end of ``day`` (see
    ``profile_and_identifiers_as_of``)."""
    found = profile_and_identifiers_as_of(con, lookup_key, day)
    return None if found is None else found[0]


def profile_and_identifiers_as_of(
    con: duckdb.DuckDBPyConnection, lookup_key: str, day: date
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The profile document of ``TYPE:VALUE`` as it was at the end of ``day`` (UTC), in the
    shape of projections.queries.profile_document, and its identifiers with their channel,
    eligibility and reason (as queries.identifier_rows); None when the identifier did not resolve
    then, or its profile has been erased since.

    The profile then is the root the identifier's attachment (or the profile id) belonged to
    on that day; its members are the profiles merged into that root by then. Identifiers and
    their tags come from the identifier day facts up to that day, traits, subscriptions,
    orders and the timeline from the members' timeline events before the cut, folded with
    the specification's last-writer-wins rules.
    """
    id_type, value = queries.parse_lookup_key(lookup_key)
    start = _start_profile(con, id_type, value, day)
    if start is None:
        return None
    live_root = queries.resolve_profile_id(con, "profile_id", start)
    if live_root is None:  # erased since
        return None
    lineage = _tree_lineage(con, live_root)
    if start not in lineage or lineage[start][0] > day:
        return None
    root = _root_at(lineage, start, day)
    members = [pid for pid in lineage if lineage[pid][0] <= day and
               _root_at(lineage, pid, day) == root]  # fmt: skip
    identifiers = _identifiers_as_of(con, members, day)
    ccpa_opted_out = any(ccpa == "opt_out" for *_, ccpa in identifiers)
    records = queries.identifier_records(con, [row[:11] for row in identifiers], ccpa_opted_out)
    events = _member_events(con, live_root, members, day)
    return _document(root, events, records, ccpa_opted_out), records


def _start_profile(
    con: duckdb.DuckDBPyConnection, id_type: str, value: str, day: date
) -> str | None:
    """The profile an identifier attached to (if by the end of ``day``), or a profile id."""
    if id_type == "profile_id":
        try:
            return str(uuid.UUID(value.strip()))
        except ValueError:
            return None
    identifier = normalise(id_type, value)
    if identifier is None:
        return None
    row = con.execute(
        "SELECT profile_id::VARCHAR FROM identifier_attachments"
        " WHERE id_key = ?::UUID AND attached_at < ?::DATE",
        [identifier_key(id_type, identifier.value), day_after(day)],
    ).fetchone()
    return None if row is None else str(row[0])


Lineage = dict[str, tuple[date, str | None, date | None]]  # pid -> (created, into, merged day)


def _tree_lineage(con: duckdb.DuckDBPyConnection, live_root: str) -> Lineage:
    rows = con.execute(
        "SELECT profile_id::VARCHAR, created_at::DATE, merged_into::VARCHAR, merged_at::DATE"
        " FROM profile_lineage WHERE profile_id = ?::UUID OR profile_id IN ("
        "  SELECT merged_profile_id FROM profile_merges WHERE survivor_profile_id = ?::UUID)",
        [live_root, live_root],
    ).fetchall()
    return {str(pid): (created, into, merged) for pid, created, into, merged in rows}


def _root_at(lineage: Lineage, pid: str, day: date) -> str:
    """The root ``pid`` belonged to at the end of ``day``: its merges in order, each applying
    from the latest day among it and the ones before (see history_writer._root_intervals)."""
    node, since = pid, date.min
    while True:
        _, into, merged = lineage[node]
        if into is None or merged is None or into not in lineage:
            return node
        since = max(since, merged)
        if since > day:
            return node
        node = into


def _identifiers_as_of(
    con: duckdb.DuckDBPyConnection, members: list[str], day: date
) -> list[tuple[Any, ...]]:
    """Rows in queries._IDENTIFIER_FACTS order, plus the CCPA request then, for every
    identifier the members held at the end of ``day``: each one's latest day state then."""
    rows = con.execute(
        """
        WITH held AS (
            SELECT a.id_key, a.profile_id, a.id_type, a.valid, i.id_value
            FROM identifier_attachments AS a JOIN identifiers AS i USING (id_key)
            WHERE a.profile_id IN (SELECT unnest(?::UUID[])) AND a.attached_at < ?::DATE
        ), latest AS (
            SELECT s.* FROM identifier_day_states AS s
            SEMI JOIN held AS h ON s.id_key = h.id_key AND s.profile_id = h.profile_id
            WHERE s.day <= ?::DATE
            QUALIFY row_number() OVER (PARTITION BY s.id_key, s.profile_id ORDER BY s.day DESC) = 1
        )
        SELECT h.id_type, h.id_value, h.valid, s.first_seen_us, s.last_seen_us, s.last_seen_eid,
            s.explicit_consent, s.explicit_us, s.explicit_eid, s.unknown_us, s.unknown_eid,
            coalesce(s.hard_bounces, 0), coalesce(s.complaints, 0),
            len(coalesce(s.recent_soft_bounces_us, [])), s.ccpa
        FROM held AS h
        LEFT JOIN latest AS s ON s.id_key = h.id_key AND s.profile_id = h.profile_id
        """,
        [members, day_after(day), day],
    ).fetchall()
    return [_identifier_state(*row) for row in rows]


def _identifier_state(
    id_type: str,
    value: str,
    valid: bool,
    first: int | None,
    last_us: int | None,
    last_eid: str | None,
    explicit: str | None,
    explicit_us: int | None,
    explicit_eid: str | None,
    unknown_us: int | None,
    unknown_eid: str | None,
    hard: int,
    complaints: int,
    consecutive: int,
    ccpa: str | None,
) -> tuple[Any, ...]:
    """An identifier's row from its day state: the fold's rules (profile_engine.state)."""
    if explicit is None or explicit_us is None:
        consent = "unknown"
    elif explicit in ("opted_in", "opted_out") or unknown_us is None:
        consent = explicit
    else:
        newer = (unknown_us, unknown_eid or "") > (explicit_us, explicit_eid or "")
        consent = "unknown" if newer else explicit
    return (
        id_type, value, valid, valid and hard == 0 and complaints == 0, consent, hard,
        complaints, consecutive, _moment(last_us), last_eid, _moment(first), ccpa,
    )  # fmt: skip


def _member_events(
    con: duckdb.DuckDBPyConnection, live_root: str, members: list[str], day: date
) -> list[tuple[Any, ...]]:
    """The timeline events that landed on the members before the cut, oldest first."""
    rows = con.execute(
        "SELECT e.event_id, e.type, epoch_us(e.timestamp), e.event_name, e.payload,"
        " coalesce(l.profile_id, e.profile_id)::VARCHAR"
        " FROM events AS e LEFT JOIN event_landings AS l USING (event_id)"
        " WHERE e.profile_id = ?::UUID AND e.timestamp < ?::DATE",
        [live_root, day_after(day)],
    ).fetchall()
    wanted = set(members)
    mine = [row[:5] for row in rows if row[5] in wanted]
    mine.sort(key=lambda row: (row[2], row[0]))
    return mine


def _document(
    root: str,
    events: list[tuple[Any, ...]],
    identifiers: list[dict[str, Any]],
    ccpa_opted_out: bool,
) -> dict[str, Any]:
    state = ProfileState(root, (0, ""))
    for event_id, kind, us, name, payload_text in events:
        payload = json.loads(payload_text) if isinstance(payload_text, str) else payload_text
        key = (us, event_id)
        if kind == "identify":
            for trait, value in payload.get("traits", {}).items():
                state.set_trait(trait, value, key)
        elif kind == "track" and name == "purchase":
            props = payload.get("properties") or {}
            order_id, revenue = props.get("order_id"), props.get("revenue")
            if order_id is not None and isinstance(revenue, int | float):
                state.set_order(str(order_id), float(revenue), key)
        elif kind == "subscription":
            channel = payload["channel"]
            ident = payload.get("identifiers", {}).get(CHANNEL_ID_TYPE[channel])
            state.set_subscription(payload["list_id"], channel, payload["status"], ident, key)
    last_email = next(
        (i["value"] for i in identifiers if i["type"] == "email" and i["is_last_seen"]), None
    )
    orders = state.orders.values()
    order_count = len(state.orders)
    revenue = math.fsum(amount for amount, _ in orders)
    traits = {}
    for trait, (value, (us, source)) in sorted(state.traits.items()):
        if value is not None:
            text, value_type = trait_text(value)
            traits[trait] = {"value": queries.typed_trait(text, value_type),
                             "updated_at": queries.iso(_moment(us)), "source": source}  # fmt: skip
    return {
        "profile_id": root,
        "first_seen": queries.iso(_moment(min((e[2] for e in events), default=None))),
        "ccpa_opted_out": ccpa_opted_out,
        "email_hash_number": queries.email_hash_number(last_email),
        "traits": traits,
        "identifiers": [queries.public_identifier(i) for i in identifiers],
        "reachable": queries.reachable_from(identifiers),
        "subscriptions": [
            {
                "list_id": lst,
                "channel": ch,
                "status": status,
                "identifier": ident,
                "updated_at": queries.iso(_moment(key[0])),
            }
            for (lst, ch), (status, ident, key) in sorted(state.subscriptions.items())
        ],
        "orders": {
            "count": order_count,
            "revenue": revenue,
            "average": revenue / order_count if order_count else None,
            "last_purchase_at": queries.iso(_moment(max((k[0] for _, k in orders), default=None))),
        },
        "timeline": [
            {
                "event_id": event_id,
                "type": kind,
                "timestamp": queries.iso(_moment(us)),
                "event_name": name,
                "payload": json.loads(payload) if isinstance(payload, str) else payload,
            }
            for event_id, kind, us, name, payload in sorted(
                events, key=lambda e: (e[2], e[0]), reverse=True
            )[: queries.TIMELINE_LENGTH]
        ],
    }
