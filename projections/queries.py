"""Read-side queries of the projections: counts, the profile view, read-only SQL and export.

Every number comes from the SQL views of views.sql, so the CLI and SQL users agree. All
functions take an open sandboxed connection (see projections.readonly) and never write to it;
SQL from users is checked first (projections.sql_checks).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv

from profile_engine.crypto import KeyRing, is_token
from profile_engine.errors import first_line
from profile_engine.events import ID_PRIORITY, ID_RANK, ID_TYPE_CHANNEL
from profile_engine.identifiers import normalise
from profile_engine.keys import identifier_key
from profile_engine.reachability import CHANNELS, IdentifierFacts, SettingValue, judge
from projections.output_file import output_file
from projections.sealed import reading_keys, reveal_document
from projections.settings import (
    effective_settings,
    known_overrides,
    settings_in_force,
)
from projections.sql_checks import (
    QueryError,
    check_read_statement,
    check_where,
    expression_select,
    statement_with_where,
    utf8_text,
)
from projections.typed_traits import quote_identifier, quote_literal

MONTH_PATTERN = re.compile(r"^(?!0000)\d{4}-(0[1-9]|1[0-2])$")
LOOKUP_TYPES = (*ID_PRIORITY, "profile_id")
TIMELINE_LENGTH = 20
EXPORT_FORMATS = ("csv", "json")

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
    id_type, sep, value = utf8_text(text, "the identifier").partition(":")
    if not sep or not value:
        raise QueryError(f"{text!r} is not TYPE:VALUE (e.g. email:ann@example.com)")
    if id_type not in LOOKUP_TYPES:
        raise QueryError(
            f"unknown identifier type {id_type!r}; use one of {', '.join(LOOKUP_TYPES)}"
        )
    return id_type, value


def resolve_profile_id(
    con: duckdb.DuckDBPyConnection, id_type: str, value: str, ring: KeyRing | None = None
) -> str | None:
    """The live profile an identifier (normalised first) or a profile id resolves to;
    ``ring``: the master key's, for a keyed projection (keys are blind indexes there)."""
    if id_type == "profile_id":
        return _resolve_profile_id_value(con, value.strip())
    identifier = normalise(id_type, value)
    if identifier is None:
        return None
    # The 128-bit key of (type, value) is what the identifiers_by_key index holds: a hash,
    # or in a keyed projection the blind index. Which one is asked only on a miss.
    key_of = identifier_key if ring is None else ring.identifier_key
    found = _owner(con, key_of(id_type, identifier.value))
    if found is None:
        keyed = reading_keys(con, ring)  # refuses a keyed projection without its key
        if keyed is None and ring is not None:
            found = _owner(con, identifier_key(id_type, identifier.value))
    return found


def _owner(con: duckdb.DuckDBPyConnection, id_key: str) -> str | None:
    row = con.execute(
        "SELECT profile_id::VARCHAR FROM identifiers WHERE id_key = ?::UUID", [id_key]
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


def profile_view(
    con: duckdb.DuckDBPyConnection, lookup_key: str, ring: KeyRing | None = None
) -> dict[str, Any] | None:
    """The profile document of ``TYPE:VALUE``, or None when it resolves to no live profile."""
    id_type, value = parse_lookup_key(lookup_key)
    profile_id = resolve_profile_id(con, id_type, value, ring)
    if profile_id is None:
        return None
    return profile_document(con, profile_id, ring)


def profile_document(
    con: duckdb.DuckDBPyConnection, profile_id: str, ring: KeyRing | None = None
) -> dict[str, Any] | None:
    """The profile page's document; in a keyed projection its sealed values are opened with
    the projection's data keys (an erased one reads as null)."""
    document = _profile_document(con, profile_id)
    if document is None:
        return None
    revealed: dict[str, Any] = reveal_document(con, document, ring)
    if revealed is document:
        return document
    document = revealed
    document["identifiers"].sort(key=identifier_order)
    last_email = next(
        (i["value"] for i in document["identifiers"] if i["type"] == "email" and i["is_last_seen"]),
        None,
    )
    document["email_hash_number"] = email_hash_number(last_email)
    return document


_IDENTIFIER_FACTS = (
    "id_type, id_value, valid, deliverable, consent, hard_bounces, complaints,"
    " consecutive_soft_bounces, last_seen, last_seen_event_id, first_seen"
)


# A lookup is a handful of index reads, and each statement costs more to plan and run than
# its read; in the server each one also gives the GIL up and takes it back several times,
# each time behind the fold. So the page's rows come in one statement: each table is read by
# a subquery of its own, filtered on the profile id alone, which DuckDB answers from that
# table's index. The timeline is the newest TIMELINE_LENGTH events, kept by arg_max as it
# reads them (a sort of the profile's events, or a LIMIT, would read more).
_PROFILE_PAGE = f"""
    SELECT
        (SELECT (first_seen, ccpa_opted_out, order_count, revenue, last_purchase_at)
            FROM profiles WHERE profile_id = $1::UUID),
        (SELECT list((key, value)) FROM settings),
        (SELECT list(({_IDENTIFIER_FACTS})) FROM identifiers WHERE profile_id = $1::UUID),
        (SELECT list((true, name, value, value_type, source, updated_at))
            FROM traits WHERE profile_id = $1::UUID),
        (SELECT list((false, list_id, channel, status, identifier, updated_at))
            FROM subscriptions WHERE profile_id = $1::UUID),
        (SELECT arg_max((event_id, type, timestamp, event_name, payload), (timestamp, event_id),
            {TIMELINE_LENGTH}) FROM events WHERE profile_id = $1::UUID)
"""


def _profile_document(con: duckdb.DuckDBPyConnection, profile_id: str) -> dict[str, Any] | None:
    page = con.execute(_PROFILE_PAGE, [profile_id]).fetchone()
    if page is None or page[0] is None:
        return None
    profile, settings_rows, identifier_facts, trait_rows, subscription_rows, events = page
    first_seen, ccpa_opted_out, order_count, revenue, last_purchase_at = profile
    settings = settings_in_force(known_overrides(settings_rows or []))
    identifiers = identifier_records(con, identifier_facts or [], ccpa_opted_out, settings)
    last_email = next(
        (i["value"] for i in identifiers if i["type"] == "email" and i["is_last_seen"]), None
    )
    profile_traits, profile_subscriptions = _traits_and_subscriptions(
        (trait_rows or []) + (subscription_rows or [])
    )
    return {
        "profile_id": profile_id,
        "first_seen": iso(first_seen),
        "ccpa_opted_out": ccpa_opted_out,
        "email_hash_number": email_hash_number(last_email),
        "traits": profile_traits,
        "identifiers": [public_identifier(i) for i in identifiers],
        "reachable": reachable_from(identifiers),
        "subscriptions": profile_subscriptions,
        "orders": {
            "count": order_count,
            "revenue": revenue,
            "average": revenue / order_count if order_count else None,
            "last_purchase_at": iso(last_purchase_at),
        },
        "timeline": timeline_entries(events or []),
    }


def email_hash_number(email: str | None) -> int | None:
    """A stable 0-99 bucket of an email (for hold-out groups)."""
    if email is None:
        return None
    return int(hashlib.sha256(email.encode("utf-8")).hexdigest()[:8], 16) % 100


def identifier_rows(
    con: duckdb.DuckDBPyConnection,
    profile_id: str,
    ccpa_opted_out: bool,
    ring: KeyRing | None = None,
) -> list[dict[str, Any]]:
    """Every identifier with its tags plus channel/eligible/reason.

    The rules run in Python on the profile's few rows (profile_engine.reachability.judge):
    planning the SQL view stack would cost more than the lookup itself. They are the rules of
    the identifier_status view, and the tests fold the same logs through both.
    """
    records: list[dict[str, Any]] = reveal_document(
        con, _identifier_rows(con, profile_id, ccpa_opted_out), ring
    )
    records.sort(key=identifier_order)
    return records


def _identifier_rows(
    con: duckdb.DuckDBPyConnection,
    profile_id: str,
    ccpa_opted_out: bool,
    settings: dict[str, SettingValue] | None = None,
) -> list[dict[str, Any]]:
    rows = con.execute(
        f"SELECT {_IDENTIFIER_FACTS} FROM identifiers WHERE profile_id = ?::UUID", [profile_id]
    ).fetchall()
    return identifier_records(con, rows, ccpa_opted_out, settings)


def identifier_records(
    con: duckdb.DuckDBPyConnection,
    rows: list[tuple[Any, ...]],
    ccpa_opted_out: bool,
    settings: dict[str, SettingValue] | None = None,
) -> list[dict[str, Any]]:
    """The records of ``identifier_rows`` from rows in the order of ``_IDENTIFIER_FACTS``
    (also built from the history for a profile as of a day); ``settings`` in force, when the
    caller read them already."""
    facts = [IdentifierFacts(*row[:10]) for row in rows]
    in_force = effective_settings(con) if settings is None else settings
    verdicts = judge(facts, ccpa_opted_out, in_force)
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
    records.sort(key=identifier_order)
    return records


def identifier_order(record: dict[str, Any]) -> tuple[int, bool, str]:
    """The page's order of identifiers; sealed ones are sorted again once opened (their
    tokens sort in another order than their values; an erased value reads as null)."""
    return ID_RANK.get(record["type"], 99), not record["is_last_seen"], record["value"] or ""


def public_identifier(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("type", "value", "is_last_seen", "valid", "deliverable", "consent")
    return {**{k: record[k] for k in keys}, "first_seen": record["first_seen"],
            "last_seen": record["last_seen"]}  # fmt: skip


def reachable_from(identifiers: list[dict[str, Any]]) -> dict[str, bool]:
    """A channel is reachable when one of its identifiers is eligible."""
    return {
        channel: any(i["eligible"] for i in identifiers if i["channel"] == channel)
        for channel in CHANNELS
    }


def _traits_and_subscriptions(
    rows: list[tuple[Any, ...]],
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The profile's traits by name and its subscriptions by list and channel, from its
    trait rows (marked true) and subscription rows (marked false)."""
    # Sorted here, not by DuckDB: a sort operator costs a lookup more than the few rows do.
    rows.sort(key=lambda row: (not row[0], row[1], row[2]))
    profile_traits = {
        name: {"value": typed_trait(text, value_type), "updated_at": iso(updated), "source": src}
        for is_trait, name, text, value_type, src, updated in rows
        if is_trait
    }
    profile_subscriptions = [
        {
            "list_id": list_id,
            "channel": channel,
            "status": status,
            "identifier": identifier,
            "updated_at": iso(updated),
        }
        for is_trait, list_id, channel, status, identifier, updated in rows
        if not is_trait
    ]
    return profile_traits, profile_subscriptions


def typed_trait(text: str | None, value_type: str) -> Any:
    """The JSON value of a stored trait: numbers as numbers, booleans as booleans."""
    if text is None:
        return None
    if is_token(text):
        return text  # sealed: its value and JSON kind come out when it is revealed
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


def timeline_entries(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """The timeline's entries from (event_id, type, timestamp, event_name, payload) rows."""
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


def run_sql(con: duckdb.DuckDBPyConnection, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one statement that only reads (see sql_checks.check_read_statement); returns
    column names and rows."""
    statement = check_read_statement(con, query)
    try:
        result = con.execute(statement)
        rows = result.fetchall()
    except duckdb.Error as error:
        raise QueryError(first_line(error)) from None
    columns = [d[0] for d in result.description] if result.description else []
    return columns, rows


# -- export --------------------------------------------------------------------------------

EXPORT_VIEW = "profile_export"
EXPORT_BATCH_ROWS = 65_536
ISO_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def export_columns(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """(name, SQL type) of every export column, in order."""
    rows = con.execute(f"DESCRIBE SELECT * FROM {EXPORT_VIEW}").fetchall()
    return [(str(name), str(column_type)) for name, column_type, *_ in rows]


def export_select(con: duckdb.DuckDBPyConnection, where: str | None, output_format: str) -> str:
    """The statement an export streams: one row per profile, timestamps as ISO-8601 Z.

    csv: one column per export column, identifiers as a JSON array text. json: one column,
    each row's JSON object as DuckDB writes it. ``where`` is checked (sql_checks.check_where)
    and becomes the WHERE clause through the parse tree, never as text.
    """
    columns = export_columns(con)
    condition = _checked_where(con, where, columns) if where is not None else None
    fields = []
    for name, column_type in columns:
        quoted = quote_identifier(name)
        if column_type.startswith("TIMESTAMP"):
            fields.append((quoted, f"strftime({quoted}, '{ISO_FORMAT}')"))
        elif column_type.endswith("[]") and output_format == "csv":
            fields.append((quoted, f"to_json({quoted})::VARCHAR"))  # a JSON array cell
        else:
            fields.append((quoted, quoted))
    if output_format == "csv":
        select_list = ", ".join(f"{value} AS {quoted}" for quoted, value in fields)
    else:
        pairs = ", ".join(f"{quote_literal(name)}: {value}" for (name, _), (_, value) in
                          zip(columns, fields, strict=True))  # fmt: skip
        select_list = f"to_json({{{pairs}}})::VARCHAR AS line"
    return statement_with_where(con, f"SELECT {select_list} FROM {EXPORT_VIEW}", condition)


def _checked_where(
    con: duckdb.DuckDBPyConnection, where: str, columns: list[tuple[str, str]]
) -> dict[str, Any]:
    condition = check_where(con, where, [name for name, _ in columns])
    try:
        result_type = str(con.sql(expression_select(con, EXPORT_VIEW, condition)).types[0])
    except duckdb.Error as error:
        raise QueryError(f"--where: {first_line(error)}") from None
    if result_type not in ("BOOLEAN", '"NULL"', "NULL"):
        raise QueryError(f"--where must be a condition (true or false), not a {result_type}")
    return condition


def export_profiles(
    con: duckdb.DuckDBPyConnection,
    out_path: str,
    output_format: str,
    where: str | None = None,
    ring: KeyRing | None = None,
) -> int:
    """Write profiles to ``out_path`` as CSV (header row) or JSON Lines; returns the row count.

    DuckDB streams the rows in Arrow record batches and Python writes them (the sandboxed
    connection cannot write files), so memory stays flat however many profiles there are. The
    file appears complete or not at all (projections.output_file).
    """
    select = export_select(con, where, _checked_format(output_format))
    written = 0
    keyed = reading_keys(con, ring)  # refuses a keyed projection without its key
    revealer = None if keyed is None else ExportRevealer(con, keyed)
    try:
        with output_file(out_path) as out:
            for rows, chunk in encode_export(con, select, output_format, None, revealer):
                out.write(chunk)
                written += rows
    except OSError as error:
        raise QueryError(f"cannot write {out_path}: {error.strerror or error}") from None
    return written


def _checked_format(output_format: str) -> str:
    if output_format not in EXPORT_FORMATS:
        raise QueryError(f"unknown export format {output_format!r}; use csv or json")
    return output_format


def encode_export(
    con: duckdb.DuckDBPyConnection,
    select: str,
    output_format: str,
    params: list[Any] | None = None,
    revealer: ExportRevealer | None = None,
) -> Iterator[tuple[int, bytes]]:
    """(rows, bytes) of an export statement, a record batch at a time: CSV with its header
    first (even with no rows), or JSON Lines. ``revealer``: a keyed projection's sealed
    identifier values are written in clear."""
    try:
        with con.sql(select, params=params or None).to_arrow_reader(EXPORT_BATCH_ROWS) as reader:
            if output_format == "csv":
                yield from _csv_chunks(reader, revealer)
            else:
                for batch in reader:
                    lines = batch.column(0).to_pylist()
                    if revealer is not None:
                        lines = revealer.json_lines(lines)
                    yield len(lines), "".join(f"{line}\n" for line in lines).encode()
    except (duckdb.Error, pa.ArrowException) as error:
        raise QueryError(f"export failed: {first_line(error)}") from None


def _csv_chunks(
    reader: pa.RecordBatchReader, revealer: ExportRevealer | None = None
) -> Iterator[tuple[int, bytes]]:
    # quoting "needed" quotes every text value and nothing else, so an empty text and a NULL
    # (an empty cell) stay apart.
    sink = io.BytesIO()
    options = pa_csv.WriteOptions(quoting_style="needed")
    with pa_csv.CSVWriter(sink, reader.schema, write_options=options) as writer:
        for batch in reader:
            if revealer is not None:
                batch = revealer.csv_batch(batch)
            writer.write_batch(batch)
            yield batch.num_rows, _take(sink)
    rest = _take(sink)  # the header alone when there were no rows
    if rest:
        yield 0, rest


def _take(sink: io.BytesIO) -> bytes:
    data = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return data


# The export columns that hold identifier values (sealed in a keyed projection).
_EXPORT_VALUE_COLUMNS = ("customer_id", "email", "phone")


class ExportRevealer:
    """Opens a keyed projection's sealed identifier values in export batches (one data-key
    lookup a batch); an erased value is written as empty (null), and left out of
    ``identifiers``."""

    def __init__(self, con: duckdb.DuckDBPyConnection, ring: KeyRing) -> None:
        from projections.sealed import Revealer

        self._con = con
        self._revealer = Revealer(con, ring)

    def _values(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        tokens = [r[c] for r in records for c in _EXPORT_VALUE_COLUMNS if r.get(c)]
        tokens += [item.partition(":")[2] for r in records for item in r.get("identifiers") or ()]
        # The export's own result is still open on its connection: the data keys are read on
        # a cursor of their own (a server's: a snapshot at least as new, so an erasure
        # committed meanwhile reads as erased, never the other way round).
        with self._con.cursor() as cursor:
            self._revealer.con = cursor
            revealed = self._revealer.reveal(tokens)
        for record in records:
            for column in _EXPORT_VALUE_COLUMNS:
                value = record.get(column)
                if value in revealed:
                    record[column] = revealed[value]
            items = []
            for item in record.get("identifiers") or ():
                id_type, _, value = item.partition(":")
                if value in revealed:
                    if revealed[value] is None:
                        continue
                    value = revealed[value]
                items.append(f"{id_type}:{value}")
            if "identifiers" in record:
                record["identifiers"] = sorted(items)
        return records

    def json_lines(self, lines: list[str]) -> list[str]:
        records = self._values([json.loads(line) for line in lines])
        return [json.dumps(r, separators=(",", ":"), ensure_ascii=False) for r in records]

    def csv_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        columns = {name: batch.column(name).to_pylist() for name in batch.schema.names}
        records = [
            {
                **{c: columns[c][i] for c in _EXPORT_VALUE_COLUMNS if c in columns},
                "identifiers": json.loads(columns["identifiers"][i] or "[]"),
            }
            for i in range(batch.num_rows)
        ]
        self._values(records)
        arrays = []
        for name in batch.schema.names:
            if name in _EXPORT_VALUE_COLUMNS:
                arrays.append(pa.array([r[name] for r in records], batch.schema.field(name).type))
            elif name == "identifiers":
                texts = [json.dumps(r["identifiers"], ensure_ascii=False) for r in records]
                arrays.append(pa.array(texts, batch.schema.field(name).type))
            else:
                arrays.append(batch.column(name))
        return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)
