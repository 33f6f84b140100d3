"""The projection as a live server holds it: one DuckDB instance, a fold and readers together.

DuckDB lets one process write a file and no other process read it meanwhile, but inside that
process any number of connections to the same instance may run at once (MVCC): the fold
writes through the instance's first connection, and every read runs on a cursor of the same
instance in a read-only transaction, so it sees the last committed batch and DuckDB itself
refuses any write from it. Settings changes are the one write readers' requests may make.

This module also holds the SQL of the server's own read paths (profile search, timeline
pages, export streaming); the shared ones stay in projections/queries.py.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from profile_engine.crypto import KeyRing
from profile_engine.errors import BadInput, first_line
from profile_engine.events import ID_PRIORITY
from profile_engine.identifiers import normalise
from projections import queries
from projections.connection import DatabaseBusy, ProjectionUnavailable, sandbox
from projections.read_transactions import PrimedReads, ReadCloser, begin_read
from projections.sealed import (
    Revealer,
    check_keying,
    create_plaintext_views,
    register_functions,
)
from projections.sql_checks import check_read_statement
from projections.store import (
    INDEX_ROOM,
    ProjectionStore,
    index_reserve_bytes,
    index_room,
    limit_bytes,
    memory_limit,
    open_projection,
    writer_limit_bytes,
)

SEARCH_MAX_LIMIT = 200
TIMELINE_MAX_LIMIT = 200
SQL_MAX_BYTES = 16 * 1024 * 1024  # of values in one answer
SQL_MAX_ROWS = 1_000_000
EXPORT_BATCH_ROWS = 10_000
NAME_TRAITS = ("first_name", "last_name")
# The sandbox locks DuckDB's settings, so the server cannot refit its memory limit as consume
# does after a batch: it sizes the limit at open for the indexed tables to double, with at
# least PROFILE_ENGINE_SERVE_INDEX_MEMORY (default 1GB: about 25M indexed rows, a projection of
# some 6M events) of room for the indexes, and once they outgrow that room it reopens the
# instance with a limit sized again (``LiveProjection.reopen``). A limit only caps: a smaller
# projection never fills it.
SERVED_INDEX_ROOM = 2.0
SERVE_INDEX_ENV = "PROFILE_ENGINE_SERVE_INDEX_MEMORY"
DEFAULT_SERVED_INDEX_LEAST = "1GB"
# A reopen waits this long for the reads in flight (new ones wait behind it), then lets the
# readers go on and tries again later: a long export never holds the readers up for longer.
REOPEN_WAIT_S = 2.0


def served_index_least() -> int:
    """The room for the lookup indexes a served projection's limit holds at least."""
    text = os.environ.get(SERVE_INDEX_ENV) or DEFAULT_SERVED_INDEX_LEAST
    return limit_bytes(text, SERVE_INDEX_ENV)


# Past any timeline (and within what DuckDB takes for an OFFSET).
TIMELINE_MAX_OFFSET = 2**31 - 1


class CursorError(BadInput):
    """A pagination cursor that this server did not hand out."""


class ReadGate:
    """Readers pass together; a reopen shuts the gate, waits for those inside, and opens it."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._inside = 0
        self._shut = False

    @contextmanager
    def passing(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._shut)
            self._inside += 1
        try:
            yield
        finally:
            with self._changed:
                self._inside -= 1
                self._changed.notify_all()

    @contextmanager
    def shut(self, wait_s: float) -> Iterator[bool]:
        """Yields True with nobody inside and nobody let in until the block ends, or False
        when the readers inside did not all leave within ``wait_s`` (the gate is open again)."""
        with self._changed:
            self._shut = True
            emptied = self._changed.wait_for(lambda: self._inside == 0, timeout=wait_s)
            if not emptied:
                self._shut = False
                self._changed.notify_all()
        try:
            yield emptied
        finally:
            if emptied:
                with self._changed:
                    self._shut = False
                    self._changed.notify_all()


@dataclass(frozen=True)
class ServedMemory:
    """DuckDB's memory as the server sized it (GET /api/status, /metrics)."""

    limit_bytes: int  # the working memory plus the room for the indexes
    index_room_bytes: int
    index_reserve_bytes: int  # what the indexes need now (INDEX_BYTES_PER_ROW a row)
    reopens: int  # since the server started, to make more room


class LiveProjection:
    """One projection file opened once: the fold's connection plus cursors for readers."""

    def __init__(self, db_path: str | Path, ring: KeyRing | None = None) -> None:
        self.db_path = str(db_path)
        self.ring = ring  # the master key's ring of a keyed projection; None for a plain one
        self._gate = ReadGate()
        self._reopens = 0
        self._open()
        self._closer = ReadCloser()
        self._version = 0
        self._exact_since = 0
        self._version_lock = threading.Lock()

    def _open(self) -> None:
        least = served_index_least()
        connection = open_projection(self.db_path, room=SERVED_INDEX_ROOM, least=least)
        try:
            # As consume: a keyed projection is served only with its master key (and a plain
            # one only without); ProjectionConfigError otherwise. With the key, readers open
            # sealed values and SQL has pe_open/pe_reveal (projections.sealed).
            check_keying(ProjectionStore(self.db_path, con=connection), self.ring)
            if self.ring is not None:
                register_functions(connection, self.ring)
            # After open_projection's own settings: nothing can be changed once sandboxed.
            # The fold shares the instance and keeps registering Arrow tables and writing.
            sandbox(connection)
            reserve = index_reserve_bytes(connection)
        except BaseException:
            connection.close()
            raise
        self.connection = connection
        # Readers' cursors are made from a connection the fold never uses, one at a time.
        self._spawner = connection.cursor()
        self._spawn_lock = threading.Lock()
        self._primed = PrimedReads(self._cursor)
        self._memory = ServedMemory(
            writer_limit_bytes(memory_limit(), reserve, SERVED_INDEX_ROOM, least),
            index_room(reserve, SERVED_INDEX_ROOM, least),
            reserve,
            self._reopens,
        )

    @property
    def memory(self) -> ServedMemory:
        return self._memory

    def outgrown(self) -> bool:
        """Whether the lookup indexes, with the margin consume keeps (INDEX_ROOM), no longer
        fit the room the limit was sized with; asked on the fold's thread after a commit."""
        reserve = index_reserve_bytes(self.connection)
        self._memory = replace(self._memory, index_reserve_bytes=reserve)
        return reserve * INDEX_ROOM > self._memory.index_room_bytes

    def reopen(self, wait_s: float = REOPEN_WAIT_S) -> bool:
        """Close the instance and open it again, its limit sized for the indexes as they are
        now; False when the reads in flight did not end within ``wait_s`` (nothing changed).
        Only the fold's thread may call it, between batches: it must hold no cursor."""
        with self._gate.shut(wait_s) as emptied:
            if not emptied:
                return False
            self._close_later(self._primed.withdraw())
            self._closer.drain()  # the reads' transactions end before their connection does
            self._spawner.close()
            self.connection.close()
            self._reopens += 1
            self._open()
        return True

    @property
    def version(self) -> int:
        """Moves after every committed batch and settings change (see ``changed``)."""
        return self._version

    @property
    def exact_since(self) -> int:
        """The version of the last settings change: answers from before it are never served
        (a batch's answers may be, for the moment the next batch's are computed)."""
        return self._exact_since

    def changed(self, exact: bool = False) -> None:
        """Called by whoever commits to the projection, after the commit; ``exact`` when
        earlier answers must not be served any more (a settings change)."""
        if exact:  # primed transactions read from before the change
            self._close_later(self._primed.withdraw())
        with self._version_lock:
            self._version += 1
            if exact:
                self._exact_since = self._version

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._spawn_lock:
            return self._spawner.cursor()

    @contextmanager
    def committing(self) -> Iterator[None]:
        """Around the fold's COMMIT, on its thread: reads arriving meanwhile, and while DuckDB
        cleans up after it, take read transactions begun for them (see
        projections.read_transactions)."""
        self._close_later(self._primed.offer())
        try:
            yield
        finally:
            self._close_later(self._primed.renew())

    def _close_later(self, cursors: list[duckdb.DuckDBPyConnection]) -> None:
        for cursor in cursors:
            self._closer.close_later(cursor)

    @contextmanager
    def reading(self, plaintext_views: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor in a read-only transaction: one snapshot, writes refused by DuckDB.

        ``plaintext_views``: in a keyed projection the cursor also has the ``*_plain`` views
        (temporary, this cursor's only), as `sql` has them."""
        with self._gate.passing(), _translated(self.db_path):
            primed = self._primed.take()
            cursor = primed or self._cursor()
            try:
                if primed is None:
                    begin_read(cursor)
                if plaintext_views and self.ring is not None:
                    create_plaintext_views(cursor)
                yield cursor
            finally:
                # Ends (rolls back) the read-only transaction, off the request's path.
                self._closer.close_later(cursor)

    @contextmanager
    def writing_settings(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor that may write; used only for the settings table."""
        try:
            with self._gate.passing(), _translated(self.db_path):
                cursor = self._cursor()
                try:
                    yield cursor
                finally:
                    cursor.close()
        finally:
            self.changed(exact=True)

    def close(self) -> None:
        self._close_later(self._primed.withdraw())
        self._closer.stop()
        self._spawner.close()
        self.connection.close()


@contextmanager
def _translated(db_path: str) -> Iterator[None]:
    try:
        yield
    except duckdb.Error as error:
        if isinstance(error, duckdb.TransactionException) and "conflict" in str(error).lower():
            raise DatabaseBusy(f"{db_path} is busy: {first_line(error)}; retry") from error
        raise ProjectionUnavailable(f"{db_path} could not answer: {first_line(error)}") from error


# -- profile search --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchPage:
    profiles: list[dict[str, Any]]
    total: int
    next_cursor: str | None


def search_profiles(
    con: duckdb.DuckDBPyConnection,
    q: str = "",
    limit: int = 25,
    cursor: str | None = None,
    ring: KeyRing | None = None,
) -> SearchPage:
    """Live profiles whose identifier value, first or last name (or both as "first last"), or
    profile id starts with ``q`` (case-insensitive), most recently seen first, ``limit`` at a
    time; ``cursor`` continues after the previous page. ``ring`` (a keyed projection): values
    are sealed, so ``q`` matches an identifier exactly (by its blind index) or a profile id's
    start, and the summaries are opened."""
    if not 1 <= limit <= SEARCH_MAX_LIMIT:
        raise BadInput(f"limit must be between 1 and {SEARCH_MAX_LIMIT}")
    matching, params = _matching_profiles(q, ring)
    where, after = "", []
    if cursor is not None:
        seen, profile_id = _decode_cursor(cursor)
        where = "WHERE sort_key < ? OR (sort_key = ? AND profile_id < ?)"
        after = [seen, seen, profile_id]
    rows = con.execute(
        f"WITH matching AS ({matching}), ranked AS (SELECT profile_id,"
        " coalesce(last_seen, created_at) AS sort_key FROM matching)"
        f" SELECT profile_id::VARCHAR, sort_key FROM ranked {where}"
        " ORDER BY sort_key DESC, profile_id DESC LIMIT ?",
        [*params, *after, limit + 1],
    ).fetchall()
    counted = con.execute(f"WITH matching AS ({matching}) SELECT count(*) FROM matching", params)
    total = int(counted.fetchone()[0])  # type: ignore[index]
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1][1], page[-1][0]) if len(rows) > limit else None
    summaries = profile_summaries(con, [row[0] for row in page], ring)
    return SearchPage(summaries, total, next_cursor)


def _matching_profiles(q: str, ring: KeyRing | None = None) -> tuple[str, list[Any]]:
    """SQL (and its parameters) of the live profiles rows a search text matches."""
    if not q.strip():
        return "SELECT * FROM profiles", []
    hits, params = _search_hits(q, ring)
    return f"SELECT * FROM profiles WHERE profile_id IN ({hits})", params


def _search_hits(q: str, ring: KeyRing | None) -> tuple[str, list[Any]]:
    if ring is None:
        return _hits(q.strip().lower())
    return _keyed_hits(q.strip(), ring)


def _keyed_hits(text: str, ring: KeyRing) -> tuple[str, list[Any]]:
    """A keyed projection's matches: the identifier ``text`` is (of any type it normalises
    to), by blind index, or a profile id starting with it. Sealed values have no prefixes."""
    keys = []
    for id_type in ID_PRIORITY:
        identifier = normalise(id_type, text)
        if identifier is not None:
            keys.append(ring.identifier_key(id_type, identifier.value))
    params: list[Any] = [text.lower()]
    parts = ["SELECT profile_id FROM profiles WHERE starts_with(profile_id::VARCHAR, ?)"]
    if keys:
        marks = ", ".join(["?::UUID"] * len(keys))
        parts.append(f"SELECT profile_id FROM identifiers WHERE id_key IN ({marks})")
        params += keys
    return " UNION ".join(parts), params


def _hits(text: str) -> tuple[str, list[Any]]:
    """SQL (and its parameters) of the profile ids a lower-cased search text matches."""
    prefixes = _identifier_prefixes(text)
    id_match = " OR ".join(["starts_with(lower(id_value), ?)"] * len(prefixes))
    parts = [
        f"SELECT profile_id FROM identifiers WHERE {id_match}",
        "SELECT profile_id FROM traits WHERE name IN (?, ?) AND starts_with(lower(value), ?)",
        "SELECT profile_id FROM profiles WHERE starts_with(profile_id::VARCHAR, ?)",
    ]
    params: list[Any] = [*prefixes, *NAME_TRAITS, text, text]
    if " " in text:  # "ann lee": first and last name together
        parts.append(
            "SELECT profile_id FROM traits WHERE name IN (?, ?) GROUP BY profile_id"
            " HAVING starts_with(lower(string_agg(value, ' ' ORDER BY name)), ?)"
        )
        params += [*NAME_TRAITS, text]
    return " UNION ".join(parts), params


_PHONE_PUNCTUATION = re.compile(r"[\s().-]")


def _identifier_prefixes(text: str) -> list[str]:
    """The text itself, and for digits the E.164 forms phones are stored in (default US)."""
    prefixes = [text]
    digits = _PHONE_PUNCTUATION.sub("", text).lstrip("+")
    if len(digits) >= 3 and digits.isdigit():
        prefixes += ["+" + digits, "+1" + digits]
    return list(dict.fromkeys(prefixes))


def _encode_cursor(sort_key: datetime, profile_id: str) -> str:
    raw = json.dumps([sort_key.isoformat(), profile_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, profile_id = json.loads(raw)
        return datetime.fromisoformat(stamp), str(uuid.UUID(str(profile_id)))
    except (binascii.Error, ValueError, TypeError):
        raise CursorError(f"cursor {cursor!r} was not handed out by this server") from None


def profile_summaries(
    con: duckdb.DuckDBPyConnection, profile_ids: Sequence[str], ring: KeyRing | None = None
) -> list[dict[str, Any]]:
    """One row per profile for tables: name, last-seen identifiers, activity and orders
    (``ring``: a keyed projection's sealed names and identifiers opened)."""
    if not profile_ids:
        return []
    ids = list(profile_ids)
    marks = ", ".join(["?::UUID"] * len(ids))
    profiles = {
        row[0]: row
        for row in con.execute(
            "SELECT profile_id::VARCHAR, created_at, first_seen, last_seen, order_count, revenue,"
            f" ccpa_opted_out FROM profiles WHERE profile_id IN ({marks})",
            ids,
        ).fetchall()
    }
    names: dict[str, dict[str, str]] = {}
    for pid, name, value in con.execute(
        f"SELECT profile_id::VARCHAR, name, value FROM traits WHERE profile_id IN ({marks})"
        " AND name IN (?, ?)",
        [*ids, *NAME_TRAITS],
    ).fetchall():
        names.setdefault(pid, {})[name] = value
    contacts: dict[str, dict[str, str]] = {}
    for pid, id_type, value in con.execute(
        "SELECT profile_id::VARCHAR, id_type, id_value FROM identifiers"
        f" WHERE profile_id IN ({marks})"
        " AND is_last_seen",
        ids,
    ).fetchall():
        contacts.setdefault(pid, {})[id_type] = value
    if ring is not None:
        names, contacts = _opened(con, ring, names), _opened(con, ring, contacts)
    summaries = []
    for pid in ids:
        row = profiles.get(pid)
        if row is None:  # erased between the two queries cannot happen in one snapshot
            continue
        _, created, first_seen, last_seen, order_count, revenue, ccpa = row
        name = names.get(pid, {})
        summaries.append(
            {
                "profile_id": pid,
                "first_name": name.get("first_name"),
                "last_name": name.get("last_name"),
                "identifiers": contacts.get(pid, {}),
                "created_at": queries.iso(created),
                "first_seen": queries.iso(first_seen),
                "last_seen": queries.iso(last_seen),
                "order_count": order_count,
                "revenue": revenue,
                "ccpa_opted_out": ccpa,
            }
        )
    return summaries


def _opened(
    con: duckdb.DuckDBPyConnection, ring: KeyRing, values: dict[str, dict[str, str]]
) -> dict[str, dict[str, str]]:
    """Sealed values opened (an erased one is left out); a trait that opens to JSON other
    than a string is shown as its JSON text, as pe_open shows it."""
    revealed = Revealer(con, ring).reveal(v for inner in values.values() for v in inner.values())
    opened: dict[str, dict[str, str]] = {}
    for pid, inner in values.items():
        for name, value in inner.items():
            clear = revealed.get(value, value)
            if clear is None:
                continue
            opened.setdefault(pid, {})[name] = (
                clear if isinstance(clear, str) else json.dumps(clear, ensure_ascii=False)
            )
    return opened


# -- timeline ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimelinePage:
    events: list[dict[str, Any]]
    total: int  # events of the chosen types
    type_counts: dict[str, int]  # every type of the profile's timeline


def timeline_page(
    con: duckdb.DuckDBPyConnection,
    profile_id: str,
    types: Sequence[str] = (),
    limit: int = 25,
    offset: int = 0,
    ring: KeyRing | None = None,
) -> TimelinePage:
    """A page of one profile's timeline, newest first, optionally only some event types
    (``ring``: a keyed projection's sealed payload values opened; erased ones null)."""
    if not 1 <= limit <= TIMELINE_MAX_LIMIT:
        raise BadInput(f"limit must be between 1 and {TIMELINE_MAX_LIMIT}")
    if not 0 <= offset <= TIMELINE_MAX_OFFSET:
        raise BadInput(f"offset must be between 0 and {TIMELINE_MAX_OFFSET:,}")
    # MATERIALIZED keeps the profile filter an index lookup (a LIMIT on a sorted read turns
    # into a top-N over the whole table).
    mine = (
        "WITH mine AS MATERIALIZED (SELECT event_id, type, timestamp, event_name, payload"
        " FROM events WHERE profile_id = ?::UUID)"
    )
    type_counts = {
        kind: int(count)
        for kind, count in con.execute(
            f"{mine} SELECT type, count(*) FROM mine GROUP BY type ORDER BY type", [profile_id]
        ).fetchall()
    }
    chosen = [t for t in types if t in type_counts]
    if types and not chosen:
        return TimelinePage([], 0, type_counts)
    filter_sql = f"WHERE type IN ({', '.join('?' * len(chosen))})" if chosen else ""
    rows = con.execute(
        f"{mine} SELECT event_id, type, timestamp, event_name, payload FROM mine {filter_sql}"
        " ORDER BY timestamp DESC, event_id DESC LIMIT ? OFFSET ?",
        [profile_id, *chosen, limit, offset],
    ).fetchall()
    total = sum(type_counts[t] for t in chosen) if chosen else sum(type_counts.values())
    events = [
        {
            "event_id": event_id,
            "type": kind,
            "timestamp": queries.iso(stamp),
            "event_name": name,
            "payload": json.loads(payload) if isinstance(payload, str) else payload,
        }
        for event_id, kind, stamp, name, payload in rows
    ]
    if ring is not None:
        events = Revealer(con, ring).document(events)
    return TimelinePage(events, total, type_counts)


# -- read-only SQL with a row limit -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SqlResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool


def run_sql_limited(
    con: duckdb.DuckDBPyConnection, query: str, max_rows: int, timeout_s: float
) -> SqlResult:
    """One read statement, checked as `sql` checks it; at most ``max_rows`` rows; stopped
    after ``timeout_s`` seconds so one query cannot hold a reader thread forever."""
    if not 1 <= max_rows <= SQL_MAX_ROWS:
        raise BadInput(f"limit must be between 1 and {SQL_MAX_ROWS}")
    statement = check_read_statement(con, query)
    timer = threading.Timer(timeout_s, con.interrupt)
    timer.start()
    try:
        rows, over_budget = _rows_within_budget(con, statement, max_rows + 1)
    except duckdb.InterruptException:
        raise queries.QueryError(f"query stopped after {timeout_s:g} s") from None
    except duckdb.Error as error:
        raise queries.QueryError(first_line(error)) from None
    finally:
        timer.cancel()
    return SqlResult(rows.columns, rows.rows[:max_rows], over_budget or len(rows.rows) > max_rows)


@dataclass(frozen=True, slots=True)
class _Rows:
    columns: list[str]
    rows: list[tuple[Any, ...]]


_ROWS_PER_BATCH = 256


def _rows_within_budget(
    con: duckdb.DuckDBPyConnection, statement: str, wanted: int
) -> tuple[_Rows, bool]:
    """Up to ``wanted`` rows, fewer when their values pass SQL_MAX_BYTES (a few wide rows can
    weigh hundreds of megabytes: the answer is held whole and sent as one JSON document);
    True when some were left out for that. The rows are measured as Arrow record batches
    before any becomes Python objects: one row holding a list of millions of elements is
    megabytes in Arrow but gigabytes as Python values."""
    relation = con.sql(statement)
    columns, types = list(relation.columns), [str(t) for t in relation.types]
    # Arrow carries these two as something else; as text they come back exactly.
    sent = [
        f"CAST(#{i} AS VARCHAR)" if kind in _AS_TEXT else f"#{i}"
        for i, kind in enumerate(types, start=1)
    ]
    kept: list[pa.RecordBatch] = []
    count = size = 0
    over = False
    reader = relation.project(", ".join(sent)).to_arrow_reader(_ROWS_PER_BATCH)
    for batch in reader:
        if size + batch.nbytes > SQL_MAX_BYTES:
            batch, over = _within(batch, SQL_MAX_BYTES - size), True
        kept.append(batch.slice(0, min(batch.num_rows, wanted - count)))
        size += batch.nbytes
        count += kept[-1].num_rows
        if over or count >= wanted:
            break
    if not count:
        return _Rows(columns, []), over
    # Read back as DuckDB's own types, so the values are those a fetch gives (UUID, HUGEINT,
    # ENUM, ... as themselves, not as Arrow carried them).
    scratch = _scratch().cursor()
    try:
        table = scratch.from_arrow(pa.Table.from_batches(kept))
        back = ", ".join(f"CAST(#{i} AS {kind})" for i, kind in enumerate(types, start=1))
        return _Rows(columns, table.project(back).fetchall()), over
    finally:
        scratch.close()


_SCRATCH: list[duckdb.DuckDBPyConnection] = []
_SCRATCH_MADE = threading.Lock()


def _scratch() -> duckdb.DuckDBPyConnection:
    """An in-memory instance for reading answers back from Arrow, made once (an instance
    costs tens of milliseconds; a cursor of it, nothing) and sandboxed: the types' text holds
    names the query chose."""
    with _SCRATCH_MADE:
        if not _SCRATCH:
            made = duckdb.connect()
            sandbox(made)
            _SCRATCH.append(made)
        return _SCRATCH[0]


_AS_TEXT = frozenset({"BIT", "TIME WITH TIME ZONE"})


def _within(batch: pa.RecordBatch, budget: int) -> pa.RecordBatch:
    """The first rows of ``batch`` whose values fit ``budget`` bytes."""
    size = 0
    for i in range(batch.num_rows):
        size += batch.slice(i, 1).nbytes
        if size > budget:
            return batch.slice(0, i)
    return batch


# -- export, streamed -------------------------------------------------------------------------


def export_chunks(
    con: duckdb.DuckDBPyConnection,
    output_format: str,
    where: str | None = None,
    q: str = "",
    ring: KeyRing | None = None,
) -> Iterator[bytes]:
    """The bytes `export` writes (profile_export, optionally only a search's profiles), as
    CSV with a header or JSON Lines, a record batch at a time so memory stays flat
    (``ring``: a keyed projection's identifier values written in clear, as `export` does)."""
    if output_format not in queries.EXPORT_FORMATS:
        raise queries.QueryError(f"unknown export format {output_format!r}; use csv or json")
    select = queries.export_select(con, where, output_format)
    params: list[Any] = []
    if q.strip():
        hits, params = _search_hits(q, ring)
        # A JSON export is one column, each row's object as text.
        pid = "e.profile_id" if output_format == "csv" else "(e.line::JSON->>'profile_id')"
        select = f"SELECT e.* FROM ({select}) AS e WHERE {pid}::UUID IN ({hits})"
    revealer = None if ring is None else queries.ExportRevealer(con, ring)
    for _, chunk in queries.encode_export(con, select, output_format, params, revealer):
        yield chunk


# -- where the projection is in the log -------------------------------------------------------


def committed_offsets(con: duckdb.DuckDBPyConnection, topic: str) -> dict[int, int]:
    """``{partition: next offset}`` the projection has committed for ``topic``."""
    rows = con.execute(
        'SELECT "partition", next_offset FROM consumer_offsets WHERE topic = ?', [topic]
    ).fetchall()
    return {int(p): int(o) for p, o in rows}


def fold_position(con: duckdb.DuckDBPyConnection) -> tuple[str | None, dict[int, int], int]:
    """The topic the projection was folded from (None: from files only), its committed next
    offsets there, and the number of dead letters it keeps."""
    row = con.execute("SELECT value FROM projection_meta WHERE key = 'source_topic'").fetchone()
    topic = None if row is None else str(row[0])
    dead = con.execute("SELECT count(*) FROM dead_letters").fetchone()
    return topic, committed_offsets(con, topic) if topic else {}, int(dead[0]) if dead else 0


def event_months(con: duckdb.DuckDBPyConnection, latest: int = 24) -> list[str]:
    """'YYYY-MM' of every month from the first to the last event (UTC), newest first."""
    row = con.execute(
        "SELECT strftime(min(timestamp), '%Y-%m'), strftime(max(timestamp), '%Y-%m') FROM events"
    ).fetchone()
    if row is None or row[0] is None:
        return []
    first, last = (int(part) for part in row[0].split("-")), (int(p) for p in row[1].split("-"))
    (year, month), (end_year, end_month) = tuple(first), tuple(last)
    months: list[str] = []
    while (end_year, end_month) >= (year, month) and len(months) < latest:
        months.append(f"{end_year:04d}-{end_month:02d}")
        end_year, end_month = (end_year, end_month - 1) if end_month > 1 else (end_year - 1, 12)
    return months
