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

from profile_engine.events import Identifier, ProfileEvent
from profile_engine.fold import Changes, FoldConfig, ProfileFold
from profile_engine.state import IdentifierState, OrderKey, ProfileState

SCHEMA_VERSION = "2"
_TS = pa.timestamp("us")


def _sql_file(name: str) -> str:
    return resources.files("projections").joinpath(name).read_text(encoding="utf-8")


def open_projection(db_path: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open a projection database; a writable open creates tables and views as needed."""
    if read_only:
        if not Path(db_path).exists():
            raise FileNotFoundError(f"no projection database at {db_path}")
        return duckdb.connect(str(db_path), read_only=True)
    # No progress bar: the consumer runs long batches and keeps its own progress display.
    con = duckdb.connect(str(db_path))
    con.execute("SET enable_progress_bar = false")
    try:
        check_schema_version(con, str(db_path))
    except ProjectionConfigError:
        con.close()
        raise
    con.execute(_sql_file("schema.sql"))
    for optional in ("views.sql", "indexes.sql"):
        with suppress(FileNotFoundError):
            con.execute(_sql_file(optional))
    return con


class ProjectionConfigError(ValueError):
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


def _keycols(key: OrderKey | None) -> tuple[int | None, str | None]:
    return (key[0], key[1]) if key is not None else (None, None)


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
    """Writes fold changes to DuckDB and restores a fold from it."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = str(db_path)
        self.con = open_projection(db_path)
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
        with suppress(FileNotFoundError):
            self.con.execute(_sql_file("indexes.sql"))

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


PROFILE_TABLES = (
    "profiles",
    "identifiers",
    "traits",
    "trait_tombstones",
    "subscriptions",
    "orders",
)


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


def _prepare_profiles(batch: PreparedBatch, fold: ProfileFold, changes: Changes) -> None:
    touched = changes.dirty_profiles | changes.removed_profiles
    if touched:
        ids = _id_table(touched)
        for table in PROFILE_TABLES:
            batch.run(f"DELETE FROM {table} WHERE profile_id IN (SELECT pid FROM _ids)", _ids=ids)
    live = [fold.profiles[pid] for pid in changes.dirty_profiles if pid in fold.profiles]
    batch.insert("profiles", _profile_columns(live))
    batch.insert("identifiers", _identifier_columns(live))
    values, tombstones = _trait_columns(live)
    batch.insert("traits", values)
    batch.insert("trait_tombstones", tombstones)
    batch.insert("subscriptions", _subscription_columns(live))
    batch.insert("orders", _order_columns(live))


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


def timeline_payload(event: ProfileEvent) -> bytes:
    """The event's own fields plus its identifiers, as compact JSON."""
    payload = event.payload()
    payload["identifiers"] = {i.id_type: i.value for i in event.identifiers}
    return orjson.dumps(payload, default=str)


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


def _profile_columns(profiles: list[ProfileState]) -> dict[str, pa.Array]:
    ccpa_keys = [p.ccpa_key for p in profiles]
    order_totals = [sum(r for r, _ in p.orders.values()) for p in profiles]
    last_purchase = [max((k[0] for _, k in p.orders.values()), default=None) for p in profiles]
    return {
        "profile_id": pa.array([p.profile_id for p in profiles], pa.string()),
        "created_at": pa.array([p.created_key[0] for p in profiles], _TS),
        "created_event_id": pa.array([p.created_key[1] for p in profiles], pa.string()),
        "first_seen": pa.array([p.first_seen for p in profiles], _TS),
        "last_seen": pa.array([p.last_seen for p in profiles], _TS),
        "event_count": pa.array([p.event_count for p in profiles], pa.int64()),
        "ccpa_opted_out": pa.array([p.ccpa_opted_out for p in profiles], pa.bool_()),
        "ccpa_updated_at": pa.array([k[0] if k else None for k in ccpa_keys], _TS),
        "ccpa_event_id": pa.array([k[1] if k else None for k in ccpa_keys], pa.string()),
        "order_count": pa.array([len(p.orders) for p in profiles], pa.int64()),
        "revenue": pa.array(order_totals, pa.float64()),
        "last_purchase_at": pa.array(last_purchase, _TS),
    }


_NEVER_US = -(2**63)


def _last_seen_flags(profiles: list[ProfileState]) -> list[bool]:
    """Per identifier (in all_identifiers order): is it its profile's last seen of its type?"""
    flags: list[bool] = []
    for profile in profiles:
        for by_value in profile.identifiers.values():
            if len(by_value) == 1:
                flags.append(True)
                continue
            keys = [((s.last_seen_key or (_NEVER_US, "")), s.value) for s in by_value.values()]
            best = max(keys)
            flags.extend(key == best for key in keys)
    return flags


def _identifier_columns(profiles: list[ProfileState]) -> dict[str, pa.Array]:
    states = [s for p in profiles for s in p.all_identifiers()]
    consent_keys = [s.consent_key for s in states]
    last_seen = [_keycols(s.last_seen_key) for s in states]
    explicit = [_keycols(s.explicit_key) for s in states]
    unknown = [_keycols(s.unknown_key) for s in states]
    ccpa = [_keycols(s.ccpa_key) for s in states]
    return {
        "profile_id": pa.array([s.profile_id for s in states], pa.string()),
        "id_type": pa.array([s.id_type for s in states], pa.string()),
        "id_value": pa.array([s.value for s in states], pa.string()),
        "valid": pa.array([s.valid for s in states], pa.bool_()),
        "deliverable": pa.array([s.deliverable for s in states], pa.bool_()),
        "consent": pa.array([s.consent for s in states], pa.string()),
        "consent_updated_at": pa.array([k[0] if k else None for k in consent_keys], _TS),
        "first_seen": pa.array([s.first_seen for s in states], _TS),
        "last_seen": pa.array([k[0] for k in last_seen], _TS),
        "last_seen_event_id": pa.array([k[1] for k in last_seen], pa.string()),
        "is_last_seen": pa.array(_last_seen_flags(profiles), pa.bool_()),
        "hard_bounces": pa.array([s.hard_bounces for s in states], pa.int64()),
        "complaints": pa.array([s.complaints for s in states], pa.int64()),
        "soft_bounces": pa.array([s.soft_bounces for s in states], pa.int64()),
        "consecutive_soft_bounces": pa.array(
            [s.consecutive_soft_bounces for s in states], pa.int64()
        ),
        "consent_explicit": pa.array([s.explicit_consent for s in states], pa.string()),
        "consent_explicit_at": pa.array([k[0] for k in explicit], _TS),
        "consent_explicit_event_id": pa.array([k[1] for k in explicit], pa.string()),
        "consent_unknown_at": pa.array([k[0] for k in unknown], _TS),
        "consent_unknown_event_id": pa.array([k[1] for k in unknown], pa.string()),
        "recent_soft_bounces_us": pa.array(
            [sorted(s.recent_soft_bounces) if s.recent_soft_bounces else [] for s in states],
            pa.list_(pa.int64()),
        ),
        "ccpa": pa.array([s.ccpa for s in states], pa.string()),
        "ccpa_updated_at": pa.array([k[0] for k in ccpa], _TS),
        "ccpa_event_id": pa.array([k[1] for k in ccpa], pa.string()),
    }


def _trait_columns(
    profiles: list[ProfileState],
) -> tuple[dict[str, pa.Array], dict[str, pa.Array]]:
    rows = [(p.profile_id, name, v, k) for p in profiles for name, (v, k) in p.traits.items()]
    kept = [r for r in rows if r[2] is not None]
    unset = [r for r in rows if r[2] is None]
    texts = [_trait_text(r[2]) for r in kept]
    values = {
        "profile_id": pa.array([r[0] for r in kept], pa.string()),
        "name": pa.array([r[1] for r in kept], pa.string()),
        "value": pa.array([t[0] for t in texts], pa.string()),
        "value_type": pa.array([t[1] for t in texts], pa.string()),
        "updated_at": pa.array([r[3][0] for r in kept], _TS),
        "source": pa.array([r[3][1] for r in kept], pa.string()),
    }
    tombstones = {
        "profile_id": pa.array([r[0] for r in unset], pa.string()),
        "name": pa.array([r[1] for r in unset], pa.string()),
        "updated_at": pa.array([r[3][0] for r in unset], _TS),
        "source": pa.array([r[3][1] for r in unset], pa.string()),
    }
    return values, tombstones


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
