"""The DuckDB side of the fold: opening a projection, its bookkeeping, and one batch at a time.

A batch is written in ONE transaction holding the changed rows, the dead letters and the
consumer offsets (the tracking record): a crash before COMMIT leaves the previous batch's
state and offsets, so the consumer re-reads exactly what was not applied.

Nothing of the state lives in Python between batches: before a batch, ``stored_world`` pages
in only what that batch can reach (see profile_engine.batch_fold), so starting on a large
projection is immediate and memory does not grow with the number of profiles.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from profile_engine.batch_fold import BatchChanges, Prepared, StoredProfile, StoredWorld
from profile_engine.crypto import KeyRing
from profile_engine.errors import NeedsOperator, first_line
from profile_engine.fold import FoldConfig
from profile_engine.rules import EventTimePolicy
from projections.connection import ProjectionUnavailable, connect, duckdb_errors, write_errors

# 4: the history tables (profiles over time); 5: identifier_day_states;
# 6: reachability_input_tally
SCHEMA_VERSION = "6"
CHECKPOINT_THRESHOLD = "512MB"
# DuckDB 2.0 creates files in its newest storage format, which no DuckDB 1.x client opens
# (most notebooks and BI tools still ship 1.x). A file keeps the storage version it was
# created with, so new projections are created in one that DuckDB 1.4 and later read.
STORAGE_VERSION = "v1.4.0"


def sql_file(name: str) -> str:
    return resources.files("projections").joinpath(name).read_text(encoding="utf-8")


class ProjectionConfigError(NeedsOperator):
    """The projection was built with other fold settings than the ones requested."""


# DuckDB holds an ART index whole in memory to change it: a batch of random 128-bit keys
# touches nearly every block of nodes, and a changed block cannot be evicted before the next
# checkpoint (past the limit the commit fails, and DuckDB may declare the database invalid).
# So a writer's limit is its working memory plus room for the lookup indexes, which grow
# with the indexed rows: bytes per row and index, measured in the README ("The lookup
# indexes in a writer's memory": 35 at 10M events, 39 on a 1M-profile projection), rounded up.
INDEX_BYTES_PER_ROW = 40
# The reserve is sized for the indexed tables to grow by a quarter; a writer that can change
# its settings refits it after a batch once they grew by a tenth (ProjectionStore).
INDEX_ROOM = 1.25
REFIT_AFTER_GROWTH = 1.1


def open_projection(
    db_path: str | Path, indexes: bool = True, room: float = INDEX_ROOM, least: int = 0
) -> duckdb.DuckDBPyConnection:
    """Open a projection for writing, creating tables, views and (unless ``indexes`` is
    false) indexes as needed; ``room`` and ``least``: how far the indexed tables may grow
    before the memory limit must be refit (see fit_limit_to_indexes)."""
    limit = memory_limit()
    _create_file(str(db_path))
    con = connect(db_path)
    # DuckDB caches up to 80% of the machine's memory by default; the fold's memory must not
    # grow with the projection, so its buffer pool is bounded (it spills to disk past it).
    con.execute(f"SET memory_limit = '{limit}'")
    # Every batch rewrites rows spread over whole tables, so each checkpoint rewrites many row
    # groups; at the default 16 MB of WAL that happens every batch. The WAL is replayed after
    # a crash, so a larger threshold puts nothing at risk.
    con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
    try:
        check_schema_version(con, str(db_path))
    except ProjectionConfigError:
        con.close()
        raise
    con.execute(sql_file("schema.sql"))
    con.execute(sql_file("views.sql"))
    if indexes:
        create_indexes(con)
        fit_limit_to_indexes(con, limit, room, least)
    return con


def index_reserve_bytes(con: duckdb.DuckDBPyConnection) -> int:
    """Room for the lookup indexes the projection has (none while a rebuild folds): each
    index's table rows times INDEX_BYTES_PER_ROW, from DuckDB's row counts (no scan)."""
    row = first_row(
        con,
        "SELECT coalesce(sum(t.estimated_size), 0) FROM duckdb_indexes() AS i"
        " JOIN duckdb_tables() AS t USING (database_name, schema_name, table_name)"
        " WHERE i.database_name = current_database()",
    )
    return int(row[0] if row else 0) * INDEX_BYTES_PER_ROW


def fit_limit_to_indexes(
    con: duckdb.DuckDBPyConnection, working: str, room: float = INDEX_ROOM, least: int = 0
) -> int:
    """Set DuckDB's limit to ``working`` plus the indexes' reserve times ``room`` (at least
    ``least`` bytes); returns the reserve it was sized for."""
    reserve = index_reserve_bytes(con)
    con.execute(f"SET memory_limit = '{writer_limit_bytes(working, reserve, room, least)} bytes'")
    return reserve


def index_room(reserve: int, room: float = INDEX_ROOM, least: int = 0) -> int:
    """The bytes a writer's limit holds beyond its working memory for indexes of ``reserve``."""
    return max(round(reserve * room), least)


def writer_limit_bytes(working: str, reserve: int, room: float = INDEX_ROOM, least: int = 0) -> int:
    """A writer's memory limit: its ``working`` memory plus the room for its indexes."""
    return limit_bytes(working) + index_room(reserve, room, least)


# Measured in the README's Benchmarks: at 1GB the fold's process peaked above 2 GB at 10M
# events, and 640MB folds the 2M-event file with no more CPU; below it the CPU rises.
DEFAULT_MEMORY_LIMIT = "640MB"
# Building the lookup indexes at the end of a rebuild needs more than folding: at 10M events
# the checkpoint and index build ran out of 640MB. Used unless the variable sets a limit.
DEFAULT_INDEX_BUILD_LIMIT = "1GB"
MEMORY_ENV = "PROFILE_ENGINE_DUCKDB_MEMORY"
MIN_MEMORY_BYTES = 64 * 1024**2  # below this DuckDB cannot even create the tables
_MEMORY_TEXT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B)\s*", re.IGNORECASE)


class MemoryLimitInvalid(NeedsOperator):
    """A memory setting (PROFILE_ENGINE_DUCKDB_MEMORY, ...) is not a size DuckDB can work in."""


def memory_limit() -> str:
    """DuckDB's memory limit for a writer: PROFILE_ENGINE_DUCKDB_MEMORY or 640MB."""
    return _checked_limit(os.environ.get(MEMORY_ENV) or DEFAULT_MEMORY_LIMIT)


def index_build_limit() -> str:
    """DuckDB's memory limit while a rebuild builds its indexes: PROFILE_ENGINE_DUCKDB_MEMORY
    or 1GB."""
    return _checked_limit(os.environ.get(MEMORY_ENV) or DEFAULT_INDEX_BUILD_LIMIT)


def _checked_limit(text: str) -> str:
    if limit_bytes(text) < MIN_MEMORY_BYTES:
        raise MemoryLimitInvalid(f"{MEMORY_ENV}={text} is too small: DuckDB needs at least 64MiB")
    return text.strip()


def limit_bytes(text: str, variable: str = MEMORY_ENV) -> int:
    """The bytes of a size such as 640MB or 1.5GiB; MemoryLimitInvalid, naming ``variable``
    (where the text came from), for anything else."""
    match = _MEMORY_TEXT.fullmatch(text)
    if match is None:
        raise MemoryLimitInvalid(f"{variable}={text!r} is not a size such as 512MB or 2GB")
    number, unit = float(match.group(1)), match.group(2).upper()
    power = "KMGT".index(unit[0]) + 1
    return int(number * (1024 if "I" in unit else 1000) ** power)


def _create_file(path: str) -> None:
    """Create an empty database file in STORAGE_VERSION unless the file exists."""
    if Path(path).exists():
        return
    try:
        duckdb.connect(path, config={"storage_compatibility_version": STORAGE_VERSION}).close()
    except duckdb.Error as error:
        raise ProjectionUnavailable(f"cannot create {path}: {first_line(error)}") from error


def create_indexes(con: duckdb.DuckDBPyConnection) -> None:
    # indexes.sql is optional: deleting it trades lookup speed for write speed.
    with suppress(FileNotFoundError):
        con.execute(sql_file("indexes.sql"))


def drop_indexes(con: duckdb.DuckDBPyConnection) -> None:
    names = con.execute(
        "SELECT index_name FROM duckdb_indexes() WHERE database_name = current_database()"
    ).fetchall()
    for (name,) in names:
        con.execute(f'DROP INDEX IF EXISTS "{name}"')


def stored_schema_version(con: duckdb.DuckDBPyConnection) -> str | None:
    has_meta = first_row(
        con,
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'projection_meta'"
        " AND database_name = current_database()",
    )
    if not has_meta or not has_meta[0]:
        return None
    row = first_row(con, "SELECT value FROM projection_meta WHERE key = 'schema_version'")
    return None if row is None else str(row[0])


def check_schema_version(con: duckdb.DuckDBPyConnection, db_path: str) -> None:
    """Refuse a projection written by another version of the tables: rebuild it instead.
    The first read of a file: one DuckDB cannot read (cut short, damaged) is named here."""
    with duckdb_errors(db_path):
        stored = stored_schema_version(con)
    if stored is not None and stored != SCHEMA_VERSION:
        raise ProjectionConfigError(
            f"{db_path} holds projection tables of version {stored}; this profile-engine "
            f"writes version {SCHEMA_VERSION}: run `profile-engine rebuild --db {db_path}`"
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    source: str
    partition: int | None
    offset: int | None
    line_number: int | None
    key: bytes | None
    raw: bytes | None
    reason: str
    timestamp_us: int | None = None
    # Where it came in its batch: the number of events folded before it (not stored). An
    # erasure later in the batch reaches it; one earlier does not. None: before them all.
    position: int | None = None
    # The identifier keys of a decoded event the fold refused (not stored): an erasure of one
    # of them reaches it even where the value cannot be read back (a rebuild after the keys
    # of a sealed person were destroyed).
    id_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TopicOffset:
    topic: str
    partition: int
    next_offset: int


def first_row(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()
) -> tuple[Any, ...] | None:
    """The first row of a query, with the result consumed (DuckDB refuses other work on a
    connection whose last result was not read to its end)."""
    rows = con.execute(sql, list(params)).fetchall()
    return rows[0] if rows else None


def arrow(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> pa.Table:
    """A query's result as an Arrow table (the copy DuckDB warns about is small here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return con.execute(sql, list(params)).to_arrow_table()


def _write_meta(con: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    """One projection_meta entry, replaced (inside the caller's transaction)."""
    con.execute("DELETE FROM projection_meta WHERE key = ?", [key])
    con.execute("INSERT INTO projection_meta VALUES (?, ?)", [key, value])


class ProjectionStore:
    """One projection database: its bookkeeping, the stored world of a batch, batch commits."""

    def __init__(
        self,
        db_path: str | Path,
        con: duckdb.DuckDBPyConnection | None = None,
        indexes: bool = True,
        around_commit: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> None:
        """``around_commit``: entered just before each COMMIT and left after it (the live
        server readies its readers for the commit; see projections.read_transactions)."""
        self.db_path = str(db_path)
        self.con = con if con is not None else open_projection(db_path, indexes)
        self._owns_connection = con is None
        self._around_commit = around_commit
        self.set_meta("schema_version", SCHEMA_VERSION)
        # What the memory limit's index reserve was sized for. None: no indexes are kept up,
        # or the connection was given (the server's, sandboxed: its settings are locked, so
        # the server reopens it with a new limit instead; see projections.live).
        self._reserved_for: int | None = None
        self._pending_source: str | None = None  # the topic, recorded with the first batch
        # The master key of a keyed projection (set by projections.sealed.check_keying): an
        # erasure opens the values it takes with it, to find them in dead letters.
        self.ring: KeyRing | None = None
        if indexes and self._owns_connection:
            self._reserved_for = index_reserve_bytes(self.con)

    def close(self) -> None:
        if self._owns_connection:
            self.con.close()

    def __enter__(self) -> ProjectionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta, settings, offsets --------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as con:
            _write_meta(con, key, value)

    def get_meta(self, key: str) -> str | None:
        row = first_row(self.con, "SELECT value FROM projection_meta WHERE key = ?", [key])
        return None if row is None else str(row[0])

    def fold_config(self, requested: FoldConfig | None) -> FoldConfig:
        """The identity limits this projection was built with; they must not change."""
        stored = self.get_meta("id_limits")
        if stored is None:
            config = requested or FoldConfig()
            self.set_meta("id_limits", json.dumps(dict(config.id_limits), sort_keys=True))
            return config
        config = FoldConfig(id_limits=json.loads(stored))
        if requested is not None and dict(requested.id_limits) != dict(config.id_limits):
            raise ProjectionConfigError(
                f"this projection was built with id limits {stored}; rebuild to change them"
            )
        return config

    def time_policy(self, requested: EventTimePolicy | None) -> EventTimePolicy:
        """The event-time window's bounds this projection was built with; they must not change."""
        stored = self.get_meta("event_time_policy")
        if stored is None:
            policy = requested or EventTimePolicy()
            self.set_meta("event_time_policy", json.dumps(asdict(policy), sort_keys=True))
            return policy
        policy = EventTimePolicy(**json.loads(stored))
        if requested is not None and requested != policy:
            raise ProjectionConfigError(
                f"this projection was built with the event-time window {stored}; rebuild to "
                "change it"
            )
        return policy

    def check_source(self, topic: str, *, replace: bool = False) -> None:
        """A projection folds one topic: record it, and refuse another one later. A consumer
        records it with its first batch (a mistyped topic on the first run, which folds
        nothing, ties the database to nothing); a rebuild at once (``replace``)."""
        stored = self.get_meta("source_topic")
        if replace:
            self.set_meta("source_topic", topic)
        elif stored is None:
            self._pending_source = topic
        elif stored != topic:
            raise ProjectionConfigError(
                f"{self.db_path} was built from topic {stored!r}, not {topic!r}; rebuild it "
                f"from {topic!r} with `profile-engine rebuild --topic {topic} --force`"
            )

    def settings_rows(self) -> list[tuple[str, str]]:
        rows = self.con.execute("SELECT key, value FROM settings").fetchall()
        return [(str(k), str(v)) for k, v in rows]

    def add_settings_rows(self, rows: Iterable[tuple[str, str]]) -> None:
        rows = list(rows)
        if rows:
            self.con.executemany("INSERT INTO settings VALUES (?, ?)", rows)

    def offsets(self, topic: str) -> dict[int, int]:
        rows = self.con.execute(
            'SELECT "partition", next_offset FROM consumer_offsets WHERE topic = ?', [topic]
        ).fetchall()
        return {int(p): int(o) for p, o in rows}

    def counts(self) -> dict[str, int]:
        tables = ("profiles", "identifiers", "events", "applied_events", "dead_letters")
        return {
            t: int(self.con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]) for t in tables
        }

    def build_indexes(self) -> None:
        """Build the lookup indexes over a filled projection and checkpoint it.

        An ART index must fit in memory while it is built, and the buffer pool is full of the
        fold's unwritten pages by then: a checkpoint first writes them out so they can be
        evicted, leaving the memory limit to the indexes. Both run under index_build_limit."""
        with write_errors(self.db_path):
            # Building needs no room for the indexes: DuckDB writes out what it built (the
            # eight indexes of a 10M-event projection were built at a 512MB limit).
            self.con.execute(f"SET memory_limit = '{index_build_limit()}'")
            self.con.execute("CHECKPOINT")
            create_indexes(self.con)
            self.con.execute("CHECKPOINT")
            self._reserved_for = fit_limit_to_indexes(self.con, memory_limit())

    def drop_indexes(self) -> None:
        drop_indexes(self.con)

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        with self._around_commit():
            con.execute("COMMIT")

    # -- one batch ----------------------------------------------------------------------------

    def stored_world(self, batch: Sequence[Prepared], config: FoldConfig) -> StoredWorld:
        """Page in what folding ``batch`` can reach; see profile_engine.batch_fold."""
        from projections.batch_writer import load_world

        with write_errors(self.db_path):
            return load_world(self.con, batch, config)

    def commit_batch(
        self,
        changes: BatchChanges | None,
        offsets: Sequence[TopicOffset] = (),
        dead_letters: Sequence[DeadLetter] = (),
    ) -> None:
        """Write one batch of changes, its dead letters and the offsets in one transaction."""
        from projections.batch_writer import write_changes, write_dead_letters, write_offsets

        with write_errors(self.db_path), self.transaction() as con:
            if self._pending_source is not None:
                _write_meta(con, "source_topic", self._pending_source)
            if changes is not None:
                write_changes(con, changes, dead_letters, self.ring)
            else:
                write_dead_letters(con, dead_letters)
            write_offsets(con, offsets)
        self._pending_source = None
        self._refit_limit()

    def _refit_limit(self) -> None:
        """Grow the memory limit with the indexed tables (see INDEX_BYTES_PER_ROW)."""
        if self._reserved_for is None:
            return
        if index_reserve_bytes(self.con) > self._reserved_for * REFIT_AFTER_GROWTH:
            self._reserved_for = fit_limit_to_indexes(self.con, memory_limit())


__all__ = [
    "SCHEMA_VERSION",
    "DeadLetter",
    "ProjectionConfigError",
    "ProjectionStore",
    "StoredProfile",
    "StoredWorld",
    "TopicOffset",
    "open_projection",
]
