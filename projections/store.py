"""The DuckDB side: projection tables, batch writes, state restore and stored offsets.

A batch write is ONE transaction holding the changed rows, the dead letters and the consumer
offsets (the tracking record): a crash before COMMIT leaves the previous batch's state and
offsets, so the consumer re-reads exactly what was not applied.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from profile_engine.errors import NeedsOperator, first_line
from profile_engine.events import Identifier, ProfileEvent
from profile_engine.fold import Changes, FoldConfig, ProfileFold
from profile_engine.state import IdentifierState, ProfileState
from projections.connection import ProjectionUnavailable, connect

SCHEMA_VERSION = "2"
# DuckDB 2.0 creates files in its newest storage format, which no DuckDB 1.x client opens
# (most notebooks and BI tools still ship 1.x). A file keeps the storage version it was
# created with, so new projections are created in one that DuckDB 1.4 and later read.
STORAGE_VERSION = "v1.4.0"
_TS = pa.timestamp("us")


def _sql_file(name: str) -> str:
    return resources.files("projections").joinpath(name).read_text(encoding="utf-8")


CHECKPOINT_THRESHOLD = "512MB"


def open_projection(db_path: str | Path) -> duckdb.DuckDBPyConnection:
    """Open a projection for writing, creating tables, views and indexes as needed.

    Read-only opens for queries live in projections/readonly.py.
    """
    _create_file(str(db_path))
    # No progress bar: the consumer runs long batches and keeps its own progress display.
    con = connect(db_path)
    # Every batch deletes and re-inserts rows spread over whole tables, so each checkpoint
    # rewrites most row groups: at the default 16 MB of WAL that happens every batch and
    # grows with the tables (19 µs an event at 1M events, then the largest cost). Checkpoint
    # per 512 MB of WAL instead; the WAL is replayed after a crash, so nothing is at risk.
    con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
    try:
        check_schema_version(con, str(db_path))
    except ProjectionConfigError:
        con.close()
        raise
    con.execute(_sql_file("schema.sql"))
    con.execute(_sql_file("views.sql"))
    _create_indexes(con)
    return con


def _create_file(path: str) -> None:
    """Create an empty database file in STORAGE_VERSION unless the file exists."""
    if Path(path).exists():
        return
    try:
        duckdb.connect(path, config={"storage_compatibility_version": STORAGE_VERSION}).close()
    except duckdb.Error as error:
        raise ProjectionUnavailable(f"cannot create {path}: {first_line(error)}") from error


def _create_indexes(con: duckdb.DuckDBPyConnection) -> None:
    # indexes.sql is optional: deleting it trades lookup speed for write speed.
    with suppress(FileNotFoundError):
        con.execute(_sql_file("indexes.sql"))


class ProjectionConfigError(NeedsOperator):
    """The projection was built with other fold settings than the ones requested."""


def stored_schema_version(con: duckdb.DuckDBPyConnection) -> str | None:
    has_meta = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'projection_meta'"
        " AND database_name = current_database()"
    ).fetchone()
    if not has_meta or not has_meta[0]:
        return None
    row = con.execute("SELECT value FROM projection_meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else str(row[0])


def check_schema_version(con: duckdb.DuckDBPyConnection, db_path: str) -> None:
    """Refuse a projection written by another version of the tables: rebuild it instead."""
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


@dataclass(frozen=True, slots=True)
class TopicOffset:
    topic: str
    partition: int
    next_offset: int


def _trait_text(value: Any) -> tuple[str, str]:
    if isinstance(value, bool):
        return ("true" if value else "false"), "boolean"
    if isinstance(value, int):
        return str(value), "long"
    if isinstance(value, float):
        return repr(value), "double"
    return str(value), "string"


def _trait_value(text: str, value_type: str) -> Any:
    if value_type == "boolean":
        return text == "true"
    if value_type == "long":
        return int(text)
    if value_type == "double":
        return float(text)
    return text


class ProjectionStore:
    """Writes fold changes to DuckDB and restores a fold from it.

    ``connection``: an already open projection (from ``open_projection``) to write through,
    so that a server's readers share the writer's DuckDB instance (``connection.cursor()``).
    """

    def __init__(
        self, db_path: str | Path, connection: duckdb.DuckDBPyConnection | None = None
    ) -> None:
        self.db_path = str(db_path)
        self.con = connection if connection is not None else open_projection(db_path)
        self._set_meta("schema_version", SCHEMA_VERSION)

    def close(self) -> None:
        self.con.close()

    def drop_indexes(self) -> None:
        """Drop the lookup indexes for a long write.

        They serve `profile` lookups only, and no other process can open the file while this
        one writes it (DuckDB has one writer), so maintaining them row by row during a
        catch-up is pure cost. ``create_indexes`` (or the next writable open) restores them.
        """
        names = self.con.execute(
            "SELECT index_name FROM duckdb_indexes() WHERE database_name = current_database()"
        ).fetchall()
        for (name,) in names:
            self.con.execute(f'DROP INDEX IF EXISTS "{name}"')

    def create_indexes(self) -> None:
        _create_indexes(self.con)

    def __enter__(self) -> ProjectionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta, offsets --------------------------------------------------------------------

    def _set_meta(self, key: str, value: str) -> None:
        self.con.execute("DELETE FROM projection_meta WHERE key = ?", [key])
        self.con.execute("INSERT INTO projection_meta VALUES (?, ?)", [key, value])

    def get_meta(self, key: str) -> str | None:
        row = self.con.execute("SELECT value FROM projection_meta WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    def fold_config(self, requested: FoldConfig | None) -> FoldConfig:
        """The identity limits this projection was built with; they must not change."""
        stored = self.get_meta("id_limits")
        if stored is None:
            config = requested or FoldConfig()
            self._set_meta("id_limits", json.dumps(dict(config.id_limits), sort_keys=True))
            return config
        config = FoldConfig(id_limits=json.loads(stored))
        if requested is not None and dict(requested.id_limits) != dict(config.id_limits):
            raise ProjectionConfigError(
                f"this projection was built with id limits {stored}; rebuild to change them"
            )
        return config

    def offsets(self, topic: str) -> dict[int, int]:
        rows = self.con.execute(
            'SELECT "partition", next_offset FROM consumer_offsets WHERE topic = ?', [topic]
        ).fetchall()
        return {int(p): int(o) for p, o in rows}

    def counts(self) -> dict[str, int]:
        tables = ("profiles", "identifiers", "events", "applied_events", "dead_letters")
        return {t: int(self.con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables}  # type: ignore[index]

    # -- restore --------------------------------------------------------------------------

    def load_fold(self, config: FoldConfig | None = None) -> ProfileFold:
        """Rebuild the in-memory fold state from the tables (after a restart)."""
        fold = ProfileFold(self.fold_config(config))
        con = self.con
        for pid, created, created_eid, first, last, count in con.execute(
            "SELECT profile_id, epoch_us(created_at), created_event_id, epoch_us(first_seen),"
            " epoch_us(last_seen), event_count FROM profiles"
        ).fetchall():
            profile = ProfileState(pid, (created, created_eid))
            profile.first_seen, profile.last_seen, profile.event_count = first, last, count
            fold.profiles[pid] = profile
        self._load_identifiers(fold)
        for pid, name, text, vtype, ts, src in con.execute(
            "SELECT profile_id, name, value, value_type, epoch_us(updated_at), source FROM traits"
        ).fetchall():
            fold.profiles[pid].traits[name] = (_trait_value(text, vtype), (ts, src))
        for pid, name, ts, src in con.execute(
            "SELECT profile_id, name, epoch_us(updated_at), source FROM trait_tombstones"
        ).fetchall():
            fold.profiles[pid].traits[name] = (None, (ts, src))
        for pid, order_id, revenue, ts, eid in con.execute(
            "SELECT profile_id, order_id, revenue, epoch_us(ordered_at), event_id FROM orders"
        ).fetchall():
            fold.profiles[pid].orders[order_id] = (revenue, (ts, eid))
        for pid, list_id, channel, status, ident, ts, eid in con.execute(
            "SELECT profile_id, list_id, channel, status, identifier, epoch_us(updated_at),"
            " event_id FROM subscriptions"
        ).fetchall():
            fold.profiles[pid].subscriptions[(list_id, channel)] = (status, ident, (ts, eid))
        for merged, survivor in con.execute(
            "SELECT merged_profile_id, survivor_profile_id FROM profile_merges"
        ).fetchall():
            fold.merged_into[merged] = survivor
            fold.absorbed.setdefault(survivor, []).append(merged)
        fold.seen_event_ids = {
            r[0] for r in con.execute("SELECT event_id FROM applied_events").fetchall()
        }
        return fold

    def _load_identifiers(self, fold: ProfileFold) -> None:
        rows = self.con.execute(
            "SELECT profile_id, id_type, id_value, valid, epoch_us(first_seen),"
            " epoch_us(last_seen), last_seen_event_id, hard_bounces, complaints, soft_bounces,"
            " recent_soft_bounces_us, consent_explicit, epoch_us(consent_explicit_at),"
            " consent_explicit_event_id, epoch_us(consent_unknown_at), consent_unknown_event_id,"
            " ccpa, epoch_us(ccpa_updated_at), ccpa_event_id FROM identifiers"
        ).fetchall()
        for row in rows:
            (pid, id_type, value, valid, first, last, last_eid, hard, compl, soft, recent,
             explicit, explicit_ts, explicit_eid, unknown_ts, unknown_eid,
             ccpa, ccpa_ts, ccpa_eid) = row  # fmt: skip
            state = IdentifierState(Identifier(id_type, value, valid), pid)
            state.first_seen = first
            state.last_seen_key = (last, last_eid) if last is not None else None
            state.hard_bounces, state.complaints, state.soft_bounces = hard, compl, soft
            state.recent_soft_bounces = list(recent or [])
            state.explicit_consent = explicit
            state.explicit_key = (explicit_ts, explicit_eid) if explicit_ts is not None else None
            state.unknown_key = (unknown_ts, unknown_eid) if unknown_ts is not None else None
            state.ccpa = ccpa
            state.ccpa_key = (ccpa_ts, ccpa_eid) if ccpa_ts is not None else None
            fold.index[state.key] = state
            fold.profiles[pid].identifiers.setdefault(id_type, {})[value] = state

    # -- batch write ----------------------------------------------------------------------

    def write_batch(
        self,
        fold: ProfileFold,
        changes: Changes,
        offsets: Sequence[TopicOffset] = (),
        dead_letters: Sequence[DeadLetter] = (),
    ) -> None:
        """Write one batch of fold changes, dead letters and offsets in one transaction."""
        self.commit(prepare_batch(fold, changes, offsets, dead_letters))

    def commit(self, batch: PreparedBatch) -> None:
        """Run a prepared batch as ONE transaction: all of it lands, or none of it."""
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            for sql, tables in batch.steps:
                for name, table in tables.items():
                    con.register(name, table)
                try:
                    con.execute(sql)
                finally:
                    for name in tables:
                        con.unregister(name)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")


@dataclass
class PreparedBatch:
    """SQL statements with the Arrow tables they read, built from fold state.

    Building it touches Python objects (needs the fold to stand still); committing it is
    DuckDB work that releases the GIL, so it can overlap with folding the next batch.
    """

    steps: list[tuple[str, dict[str, pa.Table]]] = field(default_factory=list)

    def insert(self, table: str, columns: dict[str, pa.Array]) -> None:
        data = pa.table(columns)
        if data.num_rows:
            names = ", ".join(f'"{c}"' for c in columns)
            self.steps.append(
                (f"INSERT INTO {table} ({names}) SELECT {names} FROM _rows", {"_rows": data})
            )

    def run(self, sql: str, **tables: pa.Table) -> None:
        self.steps.append((sql, tables))


def prepare_batch(
    fold: ProfileFold,
    changes: Changes,
    offsets: Sequence[TopicOffset] = (),
    dead_letters: Sequence[DeadLetter] = (),
) -> PreparedBatch:
    batch = PreparedBatch()
    _prepare_profiles(batch, fold, changes)
    _prepare_identity(batch, fold, changes)
    _prepare_timeline(batch, fold, changes)
    batch.insert("applied_events", {"event_id": pa.array(changes.applied_event_ids, pa.string())})
    _prepare_dead_letters(batch, dead_letters)
    _prepare_offsets(batch, offsets)
    return batch


def _id_table(ids: Iterable[str]) -> pa.Table:
    return pa.table({"pid": pa.array(list(ids), pa.string())})


def _delete_rows_of(batch: PreparedBatch, tables: tuple[str, ...], profile_ids: set[str]) -> None:
    if profile_ids:
        ids = _id_table(profile_ids)
        for table in tables:
            batch.run(f"DELETE FROM {table} WHERE profile_id IN (SELECT pid FROM _ids)", _ids=ids)


def _prepare_profiles(batch: PreparedBatch, fold: ProfileFold, changes: Changes) -> None:
    """Replace the rows that changed: all rows of removed profiles go, and of a live profile
    only its row and the parts the batch touched are rewritten."""
    profiles = fold.profiles
    removed = changes.removed_profiles

    def rewritten(tables: tuple[str, ...], changed: set[str]) -> list[ProfileState]:
        """Delete the rows of changed and removed profiles; the live ones to write again."""
        _delete_rows_of(batch, tables, changed | removed)
        return [profiles[pid] for pid in changed if pid in profiles]

    batch.insert("profiles", _profile_columns(rewritten(("profiles",), changes.dirty_profiles)))
    values, tombstones = _trait_columns(
        rewritten(("traits", "trait_tombstones"), changes.trait_profiles)
    )
    batch.insert("traits", values)
    batch.insert("trait_tombstones", tombstones)
    batch.insert(
        "subscriptions",
        _subscription_columns(rewritten(("subscriptions",), changes.subscription_profiles)),
    )
    batch.insert("orders", _order_columns(rewritten(("orders",), changes.order_profiles)))
    # Identifier rows go by (profile, id type) group; see Changes.identifier_groups.
    _delete_rows_of(batch, ("identifiers",), removed)
    groups = [(pid, id_type) for pid, id_type in changes.identifier_groups if pid in profiles]
    if groups:
        batch.run(
            "DELETE FROM identifiers USING _groups WHERE identifiers.profile_id = _groups.pid"
            " AND identifiers.id_type = _groups.id_type",
            _groups=pa.table(
                {
                    "pid": pa.array([g[0] for g in groups], pa.string()),
                    "id_type": pa.array([g[1] for g in groups], pa.string()),
                }
            ),
        )
    batch.insert(
        "identifiers",
        _identifier_columns([profiles[pid].identifiers.get(t, {}) for pid, t in groups]),
    )


def _prepare_identity(batch: PreparedBatch, fold: ProfileFold, changes: Changes) -> None:
    # Merged-away ids move to their final survivor everywhere they are referenced.
    live_merges = [m for m in changes.merges if m.merged_profile_id in fold.merged_into]
    if live_merges:
        moves = pa.table(
            {
                "old": pa.array([m.merged_profile_id for m in live_merges], pa.string()),
                "new": pa.array(
                    [fold.merged_into[m.merged_profile_id] for m in live_merges], pa.string()
                ),
            }
        )
        batch.run(
            "UPDATE events SET profile_id = _moves.new FROM _moves"
            " WHERE events.profile_id = _moves.old",
            _moves=moves,
        )
        batch.run(
            "UPDATE profile_merges SET survivor_profile_id = _moves.new FROM _moves"
            " WHERE profile_merges.survivor_profile_id = _moves.old",
            _moves=moves,
        )
    batch.insert(
        "profile_merges",
        {
            "merged_profile_id": pa.array([m.merged_profile_id for m in live_merges], pa.string()),
            "survivor_profile_id": pa.array(
                [fold.merged_into[m.merged_profile_id] for m in live_merges], pa.string()
            ),
            "merged_at": pa.array([m.timestamp_us for m in live_merges], _TS),
            "event_id": pa.array([m.event_id for m in live_merges], pa.string()),
        },
    )
    if changes.erased_profiles:
        erased = _id_table(changes.erased_profiles)
        for sql in (
            "DELETE FROM events WHERE profile_id IN (SELECT pid FROM _erased)",
            "DELETE FROM profile_merges WHERE survivor_profile_id IN (SELECT pid FROM _erased)"
            " OR merged_profile_id IN (SELECT pid FROM _erased)",
            "DELETE FROM identity_conflicts WHERE owner_profile_id IN (SELECT pid FROM _erased)"
            " OR event_profile_id IN (SELECT pid FROM _erased)",
        ):
            batch.run(sql, _erased=erased)
    erased_ids = changes.erased_profiles
    conflicts = [
        c
        for c in changes.conflicts
        if c.owner_profile_id not in erased_ids and c.event_profile_id not in erased_ids
    ]
    batch.insert(
        "identity_conflicts",
        {
            "event_id": pa.array([c.event_id for c in conflicts], pa.string()),
            "event_time": pa.array([c.timestamp_us for c in conflicts], _TS),
            "dropped_id_type": pa.array([c.dropped.id_type for c in conflicts], pa.string()),
            "dropped_id_value": pa.array([c.dropped.value for c in conflicts], pa.string()),
            "owner_profile_id": pa.array([c.owner_profile_id for c in conflicts], pa.string()),
            "event_profile_id": pa.array([c.event_profile_id for c in conflicts], pa.string()),
            "rule": pa.array([c.rule for c in conflicts], pa.string()),
        },
    )


def timeline_payload(event: ProfileEvent) -> str:
    """The event's own fields plus its identifiers, as compact JSON."""
    payload = event.payload()
    payload["identifiers"] = {i.id_type: i.value for i in event.identifiers}
    # Decoded at once: orjson's bytes keep an oversized buffer, and holding a batch of them
    # alive until the Arrow column is built costs five times the encoding itself.
    return orjson.dumps(payload, default=str).decode()


def _prepare_timeline(batch: PreparedBatch, fold: ProfileFold, changes: Changes) -> None:
    resolve = fold.resolve_profile_id
    profiles = fold.profiles
    events: list[ProfileEvent] = []
    owners: list[str] = []
    for entry in changes.timeline:
        pid: str | None = entry.profile_id
        if pid not in profiles:
            pid = resolve(entry.profile_id)
            if pid is None:  # erased later in this batch
                continue
        events.append(entry.event)
        owners.append(pid)
    batch.insert(
        "events",
        {
            "event_id": pa.array([e.event_id for e in events], pa.string()),
            "profile_id": pa.array(owners, pa.string()),
            "type": pa.array([e.type for e in events], pa.string()),
            "timestamp": pa.array([e.timestamp_us for e in events], _TS),
            "event_name": pa.array(
                [e.event if e.type == "track" else None for e in events],  # type: ignore[attr-defined]
                pa.string(),
            ),
            "payload": pa.array([timeline_payload(e) for e in events], pa.string()),
        },
    )


def _prepare_dead_letters(batch: PreparedBatch, dead_letters: Sequence[DeadLetter]) -> None:
    d = dead_letters
    batch.insert(
        "dead_letters",
        {
            "source": pa.array([x.source for x in d], pa.string()),
            "partition": pa.array([x.partition for x in d], pa.int32()),
            "offset": pa.array([x.offset for x in d], pa.int64()),
            "line_number": pa.array([x.line_number for x in d], pa.int64()),
            "message_key": pa.array([x.key for x in d], pa.binary()),
            "raw": pa.array([x.raw for x in d], pa.binary()),
            "reason": pa.array([x.reason for x in d], pa.string()),
            "logged_at": pa.array([x.timestamp_us for x in d], _TS),
        },
    )


def _prepare_offsets(batch: PreparedBatch, offsets: Sequence[TopicOffset]) -> None:
    if not offsets:
        return
    rows = pa.table(
        {
            "topic": pa.array([o.topic for o in offsets], pa.string()),
            "partition": pa.array([o.partition for o in offsets], pa.int32()),
            "next_offset": pa.array([o.next_offset for o in offsets], pa.int64()),
        }
    )
    batch.run(
        "DELETE FROM consumer_offsets USING _offsets WHERE consumer_offsets.topic = _offsets.topic"
        ' AND consumer_offsets."partition" = _offsets."partition"',
        _offsets=rows,
    )
    batch.run(
        'INSERT INTO consumer_offsets SELECT topic, "partition", next_offset FROM _offsets',
        _offsets=rows,
    )


# -- state -> Arrow columns ---------------------------------------------------------------


_PROFILE_SCHEMA = (
    ("profile_id", pa.string()),
    ("created_at", _TS),
    ("created_event_id", pa.string()),
    ("first_seen", _TS),
    ("last_seen", _TS),
    ("event_count", pa.int64()),
    ("ccpa_opted_out", pa.bool_()),
    ("ccpa_updated_at", _TS),
    ("ccpa_event_id", pa.string()),
    ("order_count", pa.int64()),
    ("revenue", pa.float64()),
    ("last_purchase_at", _TS),
)


def _columns(
    schema: tuple[tuple[str, pa.DataType], ...], rows: list[tuple[Any, ...]]
) -> dict[str, pa.Array]:
    """Row tuples -> named Arrow columns (one pass to build rows, one C-level transpose)."""
    columns: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    return {name: pa.array(col, kind) for (name, kind), col in zip(schema, columns, strict=True)}


def _profile_row(p: ProfileState) -> tuple[Any, ...]:
    opted_out, ccpa_key = p.ccpa_state()
    orders = p.orders.values()
    return (
        p.profile_id,
        p.created_key[0],
        p.created_key[1],
        p.first_seen,
        p.last_seen,
        p.event_count,
        opted_out,
        ccpa_key[0] if ccpa_key else None,
        ccpa_key[1] if ccpa_key else None,
        len(p.orders),
        sum(revenue for revenue, _ in orders),
        max((key[0] for _, key in orders), default=None),
    )


def _profile_columns(profiles: list[ProfileState]) -> dict[str, pa.Array]:
    return _columns(_PROFILE_SCHEMA, [_profile_row(p) for p in profiles])


_NEVER_US = -(2**63)


def _last_seen_flags(by_value: dict[str, IdentifierState]) -> list[bool]:
    """Per identifier of one profile and type: is it the profile's last seen of the type?"""
    if len(by_value) == 1:
        return [True]
    keys = [((s.last_seen_key or (_NEVER_US, "")), s.value) for s in by_value.values()]
    best = max(keys)
    return [key == best for key in keys]


_IDENTIFIER_SCHEMA = (
    ("profile_id", pa.string()),
    ("id_type", pa.string()),
    ("id_value", pa.string()),
    ("valid", pa.bool_()),
    ("deliverable", pa.bool_()),
    ("consent", pa.string()),
    ("consent_updated_at", _TS),
    ("first_seen", _TS),
    ("last_seen", _TS),
    ("last_seen_event_id", pa.string()),
    ("is_last_seen", pa.bool_()),
    ("hard_bounces", pa.int64()),
    ("complaints", pa.int64()),
    ("soft_bounces", pa.int64()),
    ("consecutive_soft_bounces", pa.int64()),
    ("consent_explicit", pa.string()),
    ("consent_explicit_at", _TS),
    ("consent_explicit_event_id", pa.string()),
    ("consent_unknown_at", _TS),
    ("consent_unknown_event_id", pa.string()),
    ("recent_soft_bounces_us", pa.list_(pa.int64())),
    ("ccpa", pa.string()),
    ("ccpa_updated_at", _TS),
    ("ccpa_event_id", pa.string()),
)
_NO_KEY: tuple[None, None] = (None, None)


def _identifier_row(s: IdentifierState, is_last_seen: bool) -> tuple[Any, ...]:
    consent, consent_key = s.consent_with_key()
    last_seen = s.last_seen_key or _NO_KEY
    explicit = s.explicit_key or _NO_KEY
    unknown = s.unknown_key or _NO_KEY
    ccpa = s.ccpa_key or _NO_KEY
    recent = s.recent_soft_bounces
    return (
        s.profile_id,
        s.id_type,
        s.value,
        s.valid,
        s.deliverable,
        consent,
        consent_key[0] if consent_key else None,
        s.first_seen,
        last_seen[0],
        last_seen[1],
        is_last_seen,
        s.hard_bounces,
        s.complaints,
        s.soft_bounces,
        len(recent),
        s.explicit_consent,
        explicit[0],
        explicit[1],
        unknown[0],
        unknown[1],
        sorted(recent) if recent else [],
        s.ccpa,
        ccpa[0],
        ccpa[1],
    )


def _identifier_columns(groups: list[dict[str, IdentifierState]]) -> dict[str, pa.Array]:
    """Rows of whole (profile, id type) groups: a group's last-seen flags go together."""
    rows = [
        _identifier_row(state, flag)
        for by_value in groups
        for state, flag in zip(by_value.values(), _last_seen_flags(by_value), strict=True)
    ]
    return _columns(_IDENTIFIER_SCHEMA, rows)


_TRAIT_SCHEMA = (
    ("profile_id", pa.string()),
    ("name", pa.string()),
    ("value", pa.string()),
    ("value_type", pa.string()),
    ("updated_at", _TS),
    ("source", pa.string()),
)
_TOMBSTONE_SCHEMA = (
    ("profile_id", pa.string()),
    ("name", pa.string()),
    ("updated_at", _TS),
    ("source", pa.string()),
)


def _trait_columns(
    profiles: list[ProfileState],
) -> tuple[dict[str, pa.Array], dict[str, pa.Array]]:
    kept: list[tuple[Any, ...]] = []
    unset: list[tuple[Any, ...]] = []
    for p in profiles:
        pid = p.profile_id
        for name, (value, (stamp, source)) in p.traits.items():
            if value is None:
                unset.append((pid, name, stamp, source))
            else:
                text, kind = _trait_text(value)
                kept.append((pid, name, text, kind, stamp, source))
    return _columns(_TRAIT_SCHEMA, kept), _columns(_TOMBSTONE_SCHEMA, unset)


def _subscription_columns(profiles: list[ProfileState]) -> dict[str, pa.Array]:
    rows = [
        (p.profile_id, lst, ch, status, ident, key)
        for p in profiles
        for (lst, ch), (status, ident, key) in p.subscriptions.items()
    ]
    return {
        "profile_id": pa.array([r[0] for r in rows], pa.string()),
        "list_id": pa.array([r[1] for r in rows], pa.string()),
        "channel": pa.array([r[2] for r in rows], pa.string()),
        "status": pa.array([r[3] for r in rows], pa.string()),
        "identifier": pa.array([r[4] for r in rows], pa.string()),
        "updated_at": pa.array([r[5][0] for r in rows], _TS),
        "event_id": pa.array([r[5][1] for r in rows], pa.string()),
    }


def _order_columns(profiles: list[ProfileState]) -> dict[str, pa.Array]:
    rows = [(p.profile_id, oid, rev, key) for p in profiles for oid, (rev, key) in p.orders.items()]
    return {
        "profile_id": pa.array([r[0] for r in rows], pa.string()),
        "order_id": pa.array([r[1] for r in rows], pa.string()),
        "revenue": pa.array([r[2] for r in rows], pa.float64()),
        "ordered_at": pa.array([r[3][0] for r in rows], _TS),
        "event_id": pa.array([r[3][1] for r in rows], pa.string()),
    }


def fold_into_db(
    db_path: str | Path,
    events: Iterable[ProfileEvent],
    config: FoldConfig | None = None,
    batch_size: int = 10_000,
) -> None:
    """Fold domain events, in the given order, into the projection at ``db_path``."""
    with ProjectionStore(db_path) as store:
        fold = store.load_fold(config)
        pending = 0
        for event in events:
            fold.apply(event)
            pending += 1
            if pending >= batch_size:
                store.write_batch(fold, fold.drain_changes())
                pending = 0
        store.write_batch(fold, fold.drain_changes())
