"""Read-side queries of the projections: counts, the profile view, read-only SQL and export.

Every number comes from the SQL views of views.sql, so the CLI and SQL users agree. All
functions take an open connection (see projections.readonly) and never write to it.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from profile_engine.errors import BadInput
from profile_engine.events import ID_PRIORITY, ID_RANK, ID_TYPE_CHANNEL
from profile_engine.identifiers import normalise
from profile_engine.keys import identifier_key
from profile_engine.reachability import CHANNELS, IdentifierFacts, judge
from projections.settings import effective_settings

MONTH_PATTERN = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
LOOKUP_TYPES = (*ID_PRIORITY, "profile_id")
TIMELINE_LENGTH = 20
EXPORT_FORMATS = ("csv", "json")
# Statement types `sql` runs; everything else (INSERT, CREATE, COPY, ATTACH, SET ...) is refused
# before it reaches DuckDB, which would refuse database writes anyway (read-only connection).
READ_STATEMENT_TYPES = frozenset({"SELECT", "EXPLAIN", "PRAGMA", "CALL"})


class QueryError(BadInput):
    """A query the user asked for cannot run; str() is one line naming what is wrong."""


# -- counts --------------------------------------------------------------------------------


def counts(
    con: duckdb.DuckDBPyConnection, month: str, channel: str | None = None
) -> dict[str, Any]:
    """Total, reachable_any, MAU of ``month`` (YYYY-MM, UTC) and reachability per channel."""
    check_month(month)
    if channel is not None and channel not in CHANNELS:
        raise QueryError(f"unknown channel {channel!r}; use one of {', '.join(CHANNELS)}")
    rows = con.execute(
        "SELECT channel, total, reachable, unreachable FROM reachability_counts"
    ).fetchall()
    by_channel = {
        name: (total, reachable, unreachable) for name, total, reachable, unreachable in rows
    }
    mau_row = con.execute("SELECT mau FROM mau_for_month(?)", [month]).fetchone()
    wanted = [channel] if channel else list(CHANNELS)
    return {
        "total": by_channel["any"][0],
        "reachable_any": by_channel["any"][1],
        "mau": mau_row[0] if mau_row else 0,
        "month": month,
        "channels": {
            name: {"reachable": by_channel[name][1], "unreachable": by_channel[name][2]}
            for name in wanted
        },
    }


def check_month(month: str) -> str:
    if not MONTH_PATTERN.match(month):
        raise QueryError(f"month {month!r} is not YYYY-MM (e.g. 2026-01)")
    return month


# -- profile view --------------------------------------------------------------------------


def parse_lookup_key(text: str) -> tuple[str, str]:
    """``TYPE:VALUE`` -> (type, value); the value may itself contain colons."""
    id_type, sep, value = text.partition(":")
    if not sep or not value:
        raise QueryError(f"{text!r} is not TYPE:VALUE (e.g. email:ann@example.com)")
    if id_type not in LOOKUP_TYPES:
        raise QueryError(
            f"unknown identifier type {id_type!r}; use one of {', '.join(LOOKUP_TYPES)}"
        )
    return id_type, value


def resolve_profile_id(con: duckdb.DuckDBPyConnection, id_type: str, value: str) -> str | None:
    """The live profile an identifier (normalised first) or a profile id resolves to."""
    if id_type == "profile_id":
        return _resolve_profile_id_value(con, value.strip())
    identifier = normalise(id_type, value)
    if identifier is None:
        return None
    # The 128-bit key of (type, value) is what the identifiers_by_key index holds.
    row = con.execute(
        "SELECT profile_id::VARCHAR FROM identifiers WHERE id_key = ?::UUID",
        [identifier_key(id_type, identifier.value)],
    ).fetchone()
    return None if row is None else str(row[0])


def _resolve_profile_id_value(con: duckdb.DuckDBPyConnection, profile_id: str) -> str | None:
    try:
        canonical = str(uuid.UUID(profile_id))
    except ValueError:
        return None  # not a profile id at all
    if con.execute("SELECT 1 FROM profiles WHERE profile_id = ?::UUID", [canonical]).fetchone():
        return canonical
    row = con.execute(
        "SELECT survivor_profile_id::VARCHAR FROM profile_merges WHERE merged_profile_id = ?::UUID",
        [canonical],
    ).fetchone()
    if row is None:
        return None
    survivor = str(row[0])
    live = con.execute("SELECT 1 FROM profiles WHERE profile_id = ?::UUID", [survivor]).fetchone()
    return survivor if live else None


def profile_view(con: duckdb.DuckDBPyConnection, lookup_key: str) -> dict[str, Any] | None:
    """The profile document of ``TYPE:VALUE``, or None when it resolves to no live profile."""
    id_type, value = parse_lookup_key(lookup_key)
    profile_id = resolve_profile_id(con, id_type, value)
    if profile_id is None:
        return None
    return profile_document(con, profile_id)


def profile_document(con: duckdb.DuckDBPyConnection, profile_id: str) -> dict[str, Any] | None:
    row = con.execute(
        "SELECT first_seen, ccpa_opted_out, order_count, revenue, last_purchase_at"
        " FROM profiles WHERE profile_id = ?::UUID",
        [profile_id],
    ).fetchone()
    if row is None:
        return None
    first_seen, ccpa_opted_out, order_count, revenue, last_purchase_at = row
    identifiers = identifier_rows(con, profile_id, ccpa_opted_out)
    last_email = next(
        (i["value"] for i in identifiers if i["type"] == "email" and i["is_last_seen"]), None
    )
    return {
        "profile_id": profile_id,
        "first_seen": iso(first_seen),
        "ccpa_opted_out": ccpa_opted_out,
        "email_hash_number": email_hash_number(last_email),
        "traits": traits(con, profile_id),
        "identifiers": [_public_identifier(i) for i in identifiers],
        "reachable": reachable_from(identifiers),
        "subscriptions": subscriptions(con, profile_id),
        "orders": {
            "count": order_count,
            "revenue": revenue,
            "average": revenue / order_count if order_count else None,
            "last_purchase_at": iso(last_purchase_at),
        },
        "timeline": timeline(con, profile_id),
    }


def email_hash_number(email: str | None) -> int | None:
    """A stable 0-99 bucket of an email (for hold-out groups)."""
    if email is None:
        return None
    return int(hashlib.sha256(email.encode("utf-8")).hexdigest()[:8], 16) % 100


_IDENTIFIER_FACTS = (
    "id_type, id_value, valid, deliverable, consent, hard_bounces, complaints,"
    " consecutive_soft_bounces, last_seen, last_seen_event_id, first_seen"
)


def identifier_rows(
    con: duckdb.DuckDBPyConnection, profile_id: str, ccpa_opted_out: bool
) -> list[dict[str, Any]]:
    """Every identifier with its tags plus channel/eligible/reason.

    The rules run in Python on the profile's few rows (profile_engine.reachability.judge):
    planning the SQL view stack would cost more than the lookup itself. They are the rules of
    the identifier_status view, and the tests fold the same logs through both.
    """
    rows = con.execute(
        f"SELECT {_IDENTIFIER_FACTS} FROM identifiers WHERE profile_id = ?::UUID", [profile_id]
    ).fetchall()
    facts = [IdentifierFacts(*row[:10]) for row in rows]
    verdicts = judge(facts, ccpa_opted_out, effective_settings(con))
    records: list[dict[str, Any]] = [
        {
            "type": item.id_type,
            "value": item.value,
            "is_last_seen": verdict.is_last_seen,
            "valid": item.valid,
            "deliverable": verdict.deliverable,
            "consent": item.consent,
            "first_seen": iso(row[10]),
            "last_seen": iso(item.last_seen),
            "channel": ID_TYPE_CHANNEL.get(item.id_type),
            "eligible": verdict.eligible,
            "reason": verdict.reason,
        }
        for item, verdict, row in zip(facts, verdicts, rows, strict=True)
    ]
    records.sort(key=lambda i: (ID_RANK.get(i["type"], 99), not i["is_last_seen"], i["value"]))
    return records


def _public_identifier(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("type", "value", "is_last_seen", "valid", "deliverable", "consent")
    return {**{k: record[k] for k in keys}, "first_seen": record["first_seen"],
            "last_seen": record["last_seen"]}  # fmt: skip


def reachable_from(identifiers: list[dict[str, Any]]) -> dict[str, bool]:
    """A channel is reachable when one of its identifiers is eligible."""
    return {
        channel: any(i["eligible"] for i in identifiers if i["channel"] == channel)
        for channel in CHANNELS
    }


def traits(con: duckdb.DuckDBPyConnection, profile_id: str) -> dict[str, dict[str, Any]]:
    rows = con.execute(
        "SELECT name, value, value_type, updated_at, source FROM traits"
        " WHERE profile_id = ?::UUID ORDER BY name",
        [profile_id],
    ).fetchall()
    return {
        name: {"value": typed_trait(text, value_type), "updated_at": iso(updated), "source": src}
        for name, text, value_type, updated, src in rows
    }


def typed_trait(text: str | None, value_type: str) -> Any:
    """The JSON value of a stored trait: numbers as numbers, booleans as booleans."""
    if text is None:
        return None
    try:
        if value_type in ("long", "epoch"):
            return int(text)
        if value_type == "double":
            return float(text)
    except ValueError:
        return text
    if value_type == "boolean":
        return text.strip().lower() == "true"
    return text


def subscriptions(con: duckdb.DuckDBPyConnection, profile_id: str) -> list[dict[str, Any]]:
    rows = con.execute(
        "SELECT list_id, channel, status, identifier, updated_at FROM subscriptions"
        " WHERE profile_id = ?::UUID ORDER BY list_id, channel",
        [profile_id],
    ).fetchall()
    return [
        {"list_id": a, "channel": b, "status": c, "identifier": d, "updated_at": iso(e)}
        for a, b, c, d, e in rows
    ]


def timeline(con: duckdb.DuckDBPyConnection, profile_id: str) -> list[dict[str, Any]]:
    """The latest events, newest first."""
    # MATERIALIZED keeps the profile filter an index lookup; a plain ORDER BY ... LIMIT gets
    # rewritten into a top-N over the whole table.
    rows = con.execute(
        "WITH mine AS MATERIALIZED ("
        "  SELECT event_id, type, timestamp, event_name, payload FROM events"
        "  WHERE profile_id = ?::UUID)"
        " SELECT * FROM mine ORDER BY timestamp DESC, event_id DESC LIMIT ?",
        [profile_id, TIMELINE_LENGTH],
    ).fetchall()
    return [
        {
            "event_id": event_id,
            "type": event_type,
            "timestamp": iso(stamp),
            "event_name": name,
            "payload": json.loads(payload) if isinstance(payload, str) else payload,
        }
        for event_id, event_type, stamp, name, payload in rows
    ]


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 with Z for a UTC TIMESTAMP (DuckDB hands them back naive)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=None).isoformat() + "Z"


# -- read-only SQL -------------------------------------------------------------------------


def check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Refuse anything but one read statement, with a one-line reason."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as error:
        raise QueryError(first_line(error)) from None
    if len(statements) != 1:
        raise QueryError(f"give exactly one SQL statement (got {len(statements)})")
    kind = statements[0].type.name
    if kind not in READ_STATEMENT_TYPES:
        raise QueryError(
            f"refused: {kind} statements can change the database; `sql` is read-only "
            "(use `settings set` for settings; projections change only by folding events)"
        )


def run_sql(con: duckdb.DuckDBPyConnection, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read statement; returns column names and rows."""
    check_read_only(con, query)
    try:
        result = con.execute(query)
        rows = result.fetchall()
    except duckdb.Error as error:
        raise QueryError(first_line(error)) from None
    columns = [d[0] for d in result.description] if result.description else []
    return columns, rows


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# -- export --------------------------------------------------------------------------------


def export_select(con: duckdb.DuckDBPyConnection, where: str | None, output_format: str) -> str:
    """The SELECT over profile_export that an export writes (timestamps as ISO-8601 Z)."""
    described = con.execute("DESCRIBE SELECT * FROM profile_export").fetchall()
    columns = []
    for name, column_type, *_ in described:
        quoted = '"' + name.replace('"', '""') + '"'
        if column_type.startswith("TIMESTAMP"):
            columns.append(f"strftime({quoted}, '%Y-%m-%dT%H:%M:%S.%fZ') AS {quoted}")
        elif column_type.endswith("[]") and output_format == "csv":
            columns.append(f"to_json({quoted})::VARCHAR AS {quoted}")  # a JSON array cell
        else:
            columns.append(quoted)
    select = f"SELECT {', '.join(columns)} FROM profile_export"
    if where:
        select += f" WHERE ({where})"
    statements = _parse(con, select)
    if len(statements) != 1 or statements[0].type.name != "SELECT":
        raise QueryError(f"--where must be one SQL condition on the export columns: {where!r}")
    return select


def export_profiles(
    con: duckdb.DuckDBPyConnection, out_path: str, output_format: str, where: str | None = None
) -> int:
    """Write profiles to ``out_path`` as CSV (header row) or JSON Lines; returns the row count.

    DuckDB's COPY streams the result to the file, so memory stays flat however many profiles
    there are.
    """
    if output_format not in EXPORT_FORMATS:
        raise QueryError(f"unknown export format {output_format!r}; use csv or json")
    select = export_select(con, where, output_format)
    options = "FORMAT csv, HEADER true" if output_format == "csv" else "FORMAT json"
    target = str(Path(out_path)).replace("'", "''")
    try:
        row = con.execute(f"COPY ({select}) TO '{target}' ({options})").fetchone()
    except duckdb.Error as error:
        raise QueryError(f"export failed: {first_line(error)}") from None
    return int(row[0]) if row else 0


def _parse(con: duckdb.DuckDBPyConnection, sql: str) -> list[Any]:
    try:
        return list(con.extract_statements(sql))
    except duckdb.Error as error:
        raise QueryError(f"--where does not parse: {first_line(error)}") from None
