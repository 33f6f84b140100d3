"""One batch of fold changes as set-based SQL: the stored world in, the changed rows out.

``load_world`` pages in what identity resolution of a batch needs (three joins on 128-bit
keys). ``write_changes`` runs inside the store's batch transaction: the batch's rows arrive as
Arrow tables, and DuckDB merges them with the stored rows of the profiles the batch touched
(their identifier rows paged in once, for the history writer too): erasures first, then
last-writer-wins traits, subscriptions and orders (moving the rows of merged-away profiles to
their survivor), every identifier of a touched profile (stored state combined with the
batch's per-identifier aggregates, last-seen flags recomputed), the profile rows and the
reachability inputs counts read, then the timeline, merges, conflicts and applied event ids.
Every rule is the one of profile_engine.fold; property tests compare the tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from profile_engine.batch_fold import (
    BatchChanges,
    IdKey,
    Prepared,
    StoredProfile,
    StoredWorld,
)
from profile_engine.crypto import KeyRing, is_token, ref_blind
from profile_engine.fold import FoldConfig
from projections.connection import registered
from projections.history_writer import write_history
from projections.rows import (
    NEVER_US,
    REACHABILITY_INPUT_COLUMNS,
    TIMESTAMP,
    arrow_array,
    without_identifier,
)
from projections.sealed import Revealer
from projections.store import DeadLetter, TopicOffset, arrow

_STR = pa.string()
_I64 = pa.int64()


# -- paging in -----------------------------------------------------------------------------


def load_world(
    con: duckdb.DuckDBPyConnection, batch: Sequence[Prepared], config: FoldConfig
) -> StoredWorld:
    world = StoredWorld()
    keys = list({k: None for p in batch for k in p.id_keys})
    if keys:
        world.owners = _owners(con, keys)
    if world.owners:
        owners = pa.table({"pid": arrow_array(sorted(set(world.owners.values())), _STR)})
        world.profiles = _owner_profiles(con, owners, config)
    world.applied = _applied(con, batch)
    if keys and any(p.key_refs for p in batch):
        world.refs = _stored_refs(con, keys)
    return world


def _stored_refs(con: duckdb.DuckDBPyConnection, keys: list[IdKey]) -> dict[IdKey, set[str]]:
    """The data keys a keyed projection stores for these identifiers (blind indexes)."""
    refs: dict[IdKey, set[str]] = {}
    for blind, ref in _rows_for_keys(con, keys, "blind::VARCHAR, key_ref", "data_keys", "blind"):
        refs.setdefault(blind, set()).add(ref)
    return refs


def _owners(con: duckdb.DuckDBPyConnection, keys: list[IdKey]) -> dict[IdKey, str]:
    columns = "id_key::VARCHAR, profile_id::VARCHAR"
    return dict(_rows_for_keys(con, keys, columns, "identifiers", "id_key"))


def _rows_for_keys(
    con: duckdb.DuckDBPyConnection, keys: list[IdKey], columns: str, table: str, key: str
) -> list[tuple[Any, ...]]:
    """``columns`` of the rows of ``table`` whose ``key`` is one of these identifier keys."""
    wanted = pa.table({"id_key": arrow_array(keys, _STR)})
    with registered(con, _w_keys=wanted):
        return con.execute(
            f"SELECT {columns} FROM {table} WHERE {key} IN (SELECT id_key::UUID FROM _w_keys)"
        ).fetchall()


def _owner_profiles(
    con: duckdb.DuckDBPyConnection, owners: pa.Table, config: FoldConfig
) -> dict[str, StoredProfile]:
    limited_types = sorted(config.id_limits)
    with registered(con, _w_owners=owners):
        created = con.execute(
            "SELECT profile_id::VARCHAR, epoch_us(created_at), created_event_id FROM profiles"
            " WHERE profile_id IN (SELECT pid::UUID FROM _w_owners)"
        ).fetchall()
        limited_rows = (
            con.execute(
                "SELECT profile_id::VARCHAR, id_type, id_key::VARCHAR FROM identifiers"
                " WHERE id_type IN (SELECT unnest(?::VARCHAR[]))"
                " AND profile_id IN (SELECT pid::UUID FROM _w_owners)",
                [limited_types],
            ).fetchall()
            if limited_types
            else []
        )
    limited: dict[str, dict[str, set[str]]] = {}
    for pid, id_type, value in limited_rows:
        limited.setdefault(pid, {}).setdefault(id_type, set()).add(value)
    return {
        pid: StoredProfile(
            (int(ts), str(eid)),
            {t: frozenset(v) for t, v in limited.get(pid, {}).items()},
        )
        for pid, ts, eid in created
    }


def _applied(con: duckdb.DuckDBPyConnection, batch: Sequence[Prepared]) -> dict[str, str]:
    wanted = pa.table(
        {
            "event_id": arrow_array([p.event_id for p in batch], _STR),
            "event_key": arrow_array([p.event_key for p in batch], _STR),
        }
    )
    if not len(batch):
        return {}
    with registered(con, _w_events=wanted):
        rows = con.execute(
            "SELECT b.event_id, a.event_id, a.fingerprint::VARCHAR FROM applied_events AS a"
            " JOIN (SELECT DISTINCT event_id, event_key::UUID AS event_key FROM _w_events) AS b"
            " USING (event_key)"
        ).fetchall()
    # The stored event_id is compared too: the key is a hash.
    return {mine: fingerprint for mine, stored, fingerprint in rows if mine == stored}


# -- writing a batch -----------------------------------------------------------------------


def write_changes(
    con: duckdb.DuckDBPyConnection,
    changes: BatchChanges,
    letters: Sequence[DeadLetter] = (),
    ring: KeyRing | None = None,
) -> None:
    """One batch's changes and its dead letters (``ring``: the master key of a keyed
    projection, which an erasure needs to find the clear values it takes in dead letters)."""
    batch = _BatchTables.build(changes)
    tables = batch.tables()
    tables["_b_dead"] = _dead_letter_rows(letters)
    with registered(con, **tables):
        _page_in_touched(con)
        # Before any write: it reads the stored state from before the batch.
        write_history(con, changes, tables["_b_applied"])
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _tally_delta AS FROM reachability_input_tally LIMIT 0"
        )
        _erase(con, batch, ring)
        _move_merged_rows(con, batch)
        _last_writer_wins(con, batch)
        _identifiers(con, batch)
        _orders_and_profiles(con, batch)
        _reachability_inputs(con, batch)
        _timeline_and_identity(con, batch)
        if batch.erased:
            _scrub_batch_conflicts(con)
        if letters:
            _insert_dead_letters(con, scrub=bool(batch.erased))
        _data_keys(con, batch)
        _apply_tally(con)
    for name in _TEMP_TABLES:
        con.execute(f"DROP TABLE IF EXISTS {name}")


_TEMP_TABLES = ("_erased", "_erased_ids", "_erased_clear", "_b_dead_rows", "_moves", "_scope",
                "_stored_ids", "_ids", "_lww", "_order_rows", "_order_scope", "_tally_delta",
                "_tally_new")  # fmt: skip


class _BatchTables:
    """The batch's rows as Arrow tables (profile ids as text; SQL casts them to UUID)."""

    def __init__(self) -> None:
        self.erased: list[str] = []
        self.moves: list[tuple[str, str]] = []
        self.scope: set[str] = set()  # live profiles whose rows are rewritten
        self.erasure_positions: dict[str, int] = {}
        self.columns: dict[str, dict[str, pa.Array]] = {}

    @classmethod
    def build(cls, changes: BatchChanges) -> _BatchTables:
        batch = cls()
        final = changes.final_profile
        batch.erased = sorted(changes.erased)
        batch.erasure_positions = changes.erasure_positions
        batch.moves = sorted((pid, new) for pid, new in final.items() if new and new != pid)
        batch.scope = changes.touched_profiles
        batch._events(changes)
        batch._identifiers(changes)
        batch._identity(changes)
        batch._keys(changes)
        return batch

    def tables(self) -> dict[str, pa.Table]:
        tables = {name: pa.table(columns) for name, columns in self.columns.items()}
        tables["_b_erased"] = pa.table(
            {
                "pid": arrow_array(self.erased, _STR),
                "seq": arrow_array([self.erasure_positions[p] for p in self.erased], _I64),
            }
        )
        tables["_b_moves"] = pa.table(
            {
                "old": arrow_array([m[0] for m in self.moves], _STR),
                "new": arrow_array([m[1] for m in self.moves], _STR),
            }
        )
        tables["_b_scope"] = pa.table({"pid": arrow_array(sorted(self.scope), _STR)})
        return tables

    def _events(self, changes: BatchChanges) -> None:
        """Every applied event as one row (list comprehensions: C-speed passes), plus the
        rows of the few event types that carry traits, orders or subscriptions."""
        final = changes.final_profile
        applied = changes.applied
        prepared = [a.prepared for a in applied]
        pids = [final[a.profile_id] for a in applied]  # None: erased later in the batch
        self.scope.update(pid for pid in pids if pid is not None)
        created = changes.created
        self.columns["_b_created"] = {
            "pid": arrow_array(list(created), _STR),
            "created_us": arrow_array([k[0] for k in created.values()], _I64),
            "created_event_id": arrow_array([k[1] for k in created.values()], _STR),
        }
        self.columns["_b_applied"] = {
            "event_id": arrow_array([p.event_id for p in prepared], _STR),
            "event_key": arrow_array([p.event_key for p in prepared], _STR),
            "fingerprint": arrow_array([p.fingerprint for p in prepared], _STR),
            "pid": arrow_array(pids, _STR),
            "in_timeline": arrow_array([a.in_timeline for a in applied], pa.bool_()),
            "type": arrow_array([p.type for p in prepared], _STR),
            "ts": arrow_array([p.timestamp_us for p in prepared], TIMESTAMP),
            "event_name": arrow_array(
                [p.detail[0] if p.type == "track" else None for p in prepared], _STR
            ),
            "payload": arrow_array([p.payload for p in prepared], _STR),
        }
        live = [(p, pid) for p, pid in zip(prepared, pids, strict=True) if pid]
        traits = [
            (pid, *row, p.timestamp_us, p.event_id)
            for p, pid in live
            if p.type == "identify"
            for row in p.detail
        ]
        orders = [
            (pid, *p.detail[1], p.timestamp_us, p.event_id)
            for p, pid in live
            if p.type == "track" and p.detail[1] is not None
        ]
        subscriptions = [
            (pid, *p.detail, p.timestamp_us, p.event_id)
            for p, pid in live
            if p.type == "subscription"
        ]
        self.columns["_b_traits"] = _columns(
            ("pid", "name", "value", "value_type", "ts", "source"),
            (_STR, _STR, _STR, _STR, TIMESTAMP, _STR),
            traits,
        )
        self.columns["_b_orders"] = _columns(
            ("pid", "order_id", "revenue", "ts", "event_id"),
            (_STR, _STR, pa.float64(), TIMESTAMP, _STR),
            orders,
        )
        self.columns["_b_subscriptions"] = _columns(
            ("pid", "list_id", "channel", "status", "identifier", "ts", "event_id"),
            (_STR, _STR, _STR, _STR, _STR, TIMESTAMP, _STR),
            subscriptions,
        )

    def _identifiers(self, changes: BatchChanges) -> None:
        rows: list[tuple[Any, ...]] = []
        for id_key, (pid, d) in changes.identifiers.items():
            last = d.last_seen_key
            explicit = d.explicit_key
            unknown = d.unknown_key
            ccpa = d.ccpa_key
            rows.append(
                (
                    id_key, pid, d.id_type, d.value, d.fresh, d.valid,
                    d.first_seen, last[0] if last else None, last[1] if last else None,
                    d.hard_bounces, d.complaints, d.soft_bounce_times,
                    d.explicit_consent, explicit[0] if explicit else None,
                    explicit[1] if explicit else None,
                    unknown[0] if unknown else None, unknown[1] if unknown else None,
                    d.ccpa, ccpa[0] if ccpa else None, ccpa[1] if ccpa else None,
                )
            )  # fmt: skip
        self.scope.update(pid for pid, _ in changes.identifiers.values())
        self.columns["_b_ids"] = _columns(
            ("id_key", "pid", "id_type", "id_value", "fresh", "valid", "first_us", "last_us",
             "last_eid", "hard", "complaints", "soft_times", "explicit", "explicit_us",
             "explicit_eid", "unknown_us", "unknown_eid", "ccpa", "ccpa_us", "ccpa_eid"),
            (_STR, _STR, _STR, _STR, pa.bool_(), pa.bool_(), _I64, _I64, _STR, _I64, _I64,
             pa.list_(_I64), _STR, _I64, _STR, _I64, _STR, _STR, _I64, _STR),
            rows,
        )  # fmt: skip

    def _identity(self, changes: BatchChanges) -> None:
        self.columns["_b_merges"] = _columns(
            ("merged", "survivor", "merged_at", "event_id"),
            (_STR, _STR, TIMESTAMP, _STR),
            changes.merges,
        )
        conflicts = [
            (c.event_id, c.timestamp_us, c.dropped[0], c.dropped[1],
             c.owner_profile_id, c.event_profile_id, c.rule)
            for c in changes.conflicts
        ]  # fmt: skip
        self.columns["_b_conflicts"] = _columns(
            ("event_id", "event_time", "id_type", "id_value", "owner", "event_pid", "rule"),
            (_STR, TIMESTAMP, _STR, _STR, _STR, _STR, _STR),
            conflicts,
        )

    def _keys(self, changes: BatchChanges) -> None:
        """Sealed events: the data keys their tokens need (README "Erasure that reaches the
        log"), and the identifiers the batch's erasures took."""
        keys: dict[str, bytes] = {}
        for applied in changes.applied:
            refs = applied.prepared.key_refs
            if refs:
                for ref, wrapped in zip(refs, applied.prepared.wrapped_keys, strict=True):
                    if wrapped is not None:
                        keys.setdefault(ref, wrapped)
        self.columns["_b_destroyed"] = {
            "key_ref": arrow_array(sorted(changes.destroyed_refs), _STR)
        }
        self.columns["_b_data_keys"] = {
            "key_ref": arrow_array(list(keys), _STR),
            "blind": arrow_array([ref_blind(ref) for ref in keys], _STR),
            "wrapped": arrow_array(list(keys.values()), pa.binary()),
        }
        known = changes.erased_values
        self.columns["_b_erased_keys"] = _columns(
            ("id_key", "id_type", "id_value", "seq"), (_STR, _STR, _STR, _I64),
            [(k, *known.get(k, (None, None, 0))) for k in sorted(changes.erased_keys)],
        )  # fmt: skip


def _columns(
    names: tuple[str, ...], types: tuple[pa.DataType, ...], rows: Sequence[tuple[Any, ...]]
) -> dict[str, pa.Array]:
    """Row tuples -> named Arrow columns (one C-level transpose)."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    return {n: arrow_array(c, t) for n, t, c in zip(names, types, columns, strict=True)}


# -- the statements ------------------------------------------------------------------------


def _page_in_touched(con: duckdb.DuckDBPyConnection) -> None:
    """The profiles the batch rewrites (``_scope``: its live ones, and those merged away),
    the ones it erases (``_erased``, with the profiles merged into them earlier), and their
    stored identifier rows as they were before the batch (``_stored_ids``), which are then
    deleted: the identifiers table is the largest the batch rewrites rows of, and its
    history, erasure and merge steps all read these rows, so it is scanned once, not once
    per step (a join on random keys reads the whole table)."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _moves AS SELECT old::UUID AS old, new::UUID AS new"
        " FROM _b_moves"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _scope AS SELECT pid::UUID AS pid FROM _b_scope"
        " UNION SELECT old FROM _moves"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _erased AS SELECT pid, max(seq) AS seq FROM ("
        " SELECT pid::UUID AS pid, seq FROM _b_erased"
        " UNION ALL SELECT m.merged_profile_id, b.seq FROM profile_merges AS m"
        "  JOIN _b_erased AS b ON m.survivor_profile_id = b.pid::UUID) GROUP BY pid"
    )
    touched = "profile_id IN (SELECT pid FROM _scope UNION ALL SELECT pid FROM _erased)"
    con.execute(f"CREATE OR REPLACE TEMP TABLE _stored_ids AS FROM identifiers WHERE {touched}")
    con.execute(f"DELETE FROM identifiers WHERE {touched}")


def _erase(con: duckdb.DuckDBPyConnection, batch: _BatchTables, ring: KeyRing | None) -> None:
    """Erased profiles leave every table, with the profiles merged into them earlier (their
    identifier rows already went in ``_page_in_touched``)."""
    # The erased identifiers: stored ones of the erased profiles, and those the batch carried,
    # each with the position in the batch of the erasure that took it.
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _erased_ids AS"
        " SELECT s.id_key, s.id_type, s.id_value, e.seq FROM _stored_ids AS s"
        " JOIN _erased AS e ON s.profile_id = e.pid"
        " UNION ALL SELECT id_key::UUID, id_type, id_value, seq FROM _b_erased_keys"
    )
    if not batch.erased:
        return
    _erased_clear_values(con, ring)
    _scrub_other_profiles(con)
    _tally(con, "SELECT pid FROM _erased", -1)  # the inputs rows the loop below deletes
    for table in ("profiles", "traits", "trait_tombstones", "subscriptions",
                  "orders", "events", "profile_reachability_inputs"):  # fmt: skip
        con.execute(f"DELETE FROM {table} WHERE profile_id IN (SELECT pid FROM _erased)")
    con.execute(
        "DELETE FROM profile_merges WHERE survivor_profile_id IN (SELECT pid FROM _erased)"
        " OR merged_profile_id IN (SELECT pid FROM _erased)"
    )
    con.execute(
        "DELETE FROM identity_conflicts WHERE owner_profile_id IN (SELECT pid FROM _erased)"
        " OR event_profile_id IN (SELECT pid FROM _erased)"
    )
    # Crypto-shredding: the erased identifiers' data keys leave the projection, so every
    # sealed copy of their values left in it (in other profiles' rows too) stays unreadable.
    con.execute("DELETE FROM data_keys WHERE blind IN (SELECT id_key FROM _erased_ids)")


# An erased identifier's clear value found in a dead letter's bytes (read as UTF-8, any
# invalid byte as "?"): as a JSON string (JSON lines, the JSON kept for events the fold
# refused), as an Avro string (its length as a one-byte varint, then its bytes), or anywhere
# when long enough not to be found by chance.
_IN_DEAD_LETTER = (
    "contains(lower(decode({column}, 'replace')), '\"' || lower(e.value) || '\"')"
    " OR (length(e.value) < 64 AND contains(lower(decode({column}, 'replace')),"
    "  lower(chr(2 * length(e.value)::INTEGER) || e.value)))"
    " OR (length(e.value) >= 8 AND contains(lower(decode({column}, 'replace')), lower(e.value)))"
)


def _scrub_other_profiles(con: duckdb.DuckDBPyConnection) -> None:
    """What an erasure reaches beyond the erased profile's own rows (README "CCPA"): an
    event that applied to another profile because an identity conflict kept one of its
    identifiers on the erased one loses that identifier from its timeline payload and its
    subscription row, and dead letters that hold an erased value in clear lose their raw
    bytes (the reason and position stay). Sealed values need none of this to be unreadable
    (their data keys are destroyed); it is done to them alike."""
    _scrub_conflict_events(
        con,
        "SELECT event_id, dropped_id_type, dropped_id_value FROM identity_conflicts"
        " WHERE owner_profile_id IN (SELECT pid FROM _erased)"
        " AND event_profile_id NOT IN (SELECT pid FROM _erased)",
    )
    # Every stored dead letter came before the batch's erasures.
    _scrub_dead_letters(con, "dead_letters")


_SCRUBBED = "[raw message removed by a ccpa delete]"


def _scrub_dead_letters(
    con: duckdb.DuckDBPyConnection, table: str, before: str = "", keyed: str = "FALSE"
) -> None:
    """Dead letters of ``table`` that hold an erased value lose their raw bytes (the reason
    and position stay). ``keyed``: a condition on ``e.id_key`` that also marks one (the
    batch's dead letters of decoded events know their identifiers' keys)."""
    con.execute(
        f"UPDATE {table} SET raw = NULL, message_key = NULL, reason = reason || ' {_SCRUBBED}'"
        f" WHERE EXISTS (SELECT 1 FROM _erased_clear AS e WHERE TRUE {before} AND ({keyed}"
        f" OR (e.value <> '' AND ({_IN_DEAD_LETTER.format(column=f'{table}.raw')}"
        f" OR {_IN_DEAD_LETTER.format(column=f'{table}.message_key')}))))"
    )


def _insert_dead_letters(con: duckdb.DuckDBPyConnection, scrub: bool) -> None:
    """The batch's dead letters, those that came before an erasure of a value they hold
    scrubbed first: the same ones whatever the batches (a rebuild folds in larger batches
    than a consumer, and a dead letter after the erasure is news, not the erased past)."""
    con.execute("CREATE OR REPLACE TEMP TABLE _b_dead_rows AS FROM _b_dead")
    if scrub:
        before = "AND coalesce(_b_dead_rows.position, 0) <= e.seq"
        keyed = "list_contains(_b_dead_rows.id_keys, e.id_key)"
        _scrub_dead_letters(con, "_b_dead_rows", before, keyed)
    con.execute("INSERT INTO dead_letters SELECT * EXCLUDE (position, id_keys) FROM _b_dead_rows")


def _erased_clear_values(con: duckdb.DuckDBPyConnection, ring: KeyRing | None) -> None:
    """``_erased_clear`` (id_key, value, seq): the erased identifiers with their values in
    clear ('' when unknown), for finding them in dead letters. In a keyed projection they are
    stored sealed: opened here with the data keys the erasure is about to delete (those of
    the batch included). Where those keys were destroyed before (a rebuild after the
    erasure), only the keys are left to find them by."""
    rows = con.execute("SELECT id_key::VARCHAR, id_value, seq FROM _erased_ids").fetchall()
    tokens = [value for _, value, _ in rows if is_token(value)]
    opened: dict[str, Any] = {}
    if tokens and ring is not None:
        opened = Revealer(con, ring, extra_keys="_b_data_keys").reveal(tokens)
    table = _columns(
        ("id_key", "value", "seq"), (_STR, _STR, _I64),
        [(key, str(opened.get(value) or "") if is_token(value) else value or "", seq)
         for key, value, seq in rows],
    )  # fmt: skip
    with registered(con, _erased_clear_arrow=pa.table(table)):
        con.execute("CREATE OR REPLACE TEMP TABLE _erased_clear AS FROM _erased_clear_arrow")


def _scrub_conflict_events(con: duckdb.DuckDBPyConnection, conflicts_sql: str) -> None:
    """Take each (event_id, id_type, value) of ``conflicts_sql`` out of the event's timeline
    payload and subscription row (a few rows: done in Python, with the writer's own JSON)."""
    scrubbed = con.execute(conflicts_sql).fetchall()
    if not scrubbed:
        return
    by_event: dict[str, list[tuple[str, str]]] = {}
    for event_id, id_type, value in scrubbed:
        by_event.setdefault(event_id, []).append((id_type, value))
    wanted = pa.table({"event_id": arrow_array(sorted(by_event), _STR)})
    with registered(con, _w_scrub=wanted):
        payloads = con.execute(
            "SELECT event_id, payload::VARCHAR FROM events"
            " WHERE event_id IN (SELECT event_id FROM _w_scrub)"
        ).fetchall()
    updated: list[tuple[str, str]] = []
    for event_id, payload in payloads:
        for id_type, _ in by_event[event_id]:
            payload = without_identifier(payload, id_type)
        updated.append((event_id, payload))
    rows = [(eid, value) for eid, taken in by_event.items() for _, value in taken]
    changes = {
        "_w_payloads": pa.table(
            {
                "event_id": arrow_array([u[0] for u in updated], _STR),
                "payload": arrow_array([u[1] for u in updated], _STR),
            }
        ),
        "_w_taken": pa.table(
            {
                "event_id": arrow_array([r[0] for r in rows], _STR),
                "value": arrow_array([r[1] for r in rows], _STR),
            }
        ),
    }
    with registered(con, **changes):
        con.execute(
            "UPDATE events SET payload = p.payload FROM _w_payloads AS p"
            " WHERE events.event_id = p.event_id"
        )
        con.execute(
            "UPDATE subscriptions SET identifier = NULL FROM _w_taken AS t"
            " WHERE subscriptions.event_id = t.event_id AND subscriptions.identifier = t.value"
        )


def _scrub_batch_conflicts(con: duckdb.DuckDBPyConnection) -> None:
    """The batch's own conflicts whose dropped identifier the batch then erased: their
    events were written after the erasure step."""
    _scrub_conflict_events(
        con,
        "SELECT event_id, id_type, id_value FROM _b_conflicts"
        " WHERE owner::UUID IN (SELECT pid FROM _erased)"
        " AND event_pid::UUID NOT IN (SELECT pid FROM _erased)",
    )


def _data_keys(con: duckdb.DuckDBPyConnection, batch: _BatchTables) -> None:
    """The data keys the batch's sealed values need, unless the batch destroyed them (a
    version made for a person who came back after the erasure is kept)."""
    if not len(batch.columns["_b_data_keys"]["key_ref"]):
        return
    con.execute(
        "INSERT INTO data_keys SELECT b.key_ref, b.blind::UUID, b.wrapped FROM _b_data_keys AS b"
        " WHERE b.key_ref NOT IN (SELECT key_ref FROM _b_destroyed)"
        " AND b.key_ref NOT IN (SELECT key_ref FROM data_keys)"
    )


def _move_merged_rows(con: duckdb.DuckDBPyConnection, batch: _BatchTables) -> None:
    """Merged-away profiles: their timeline and merge records point at the survivor; their
    other rows are merged with the survivor's by the statements that follow."""
    if not batch.moves:
        return
    con.execute(
        "UPDATE events SET profile_id = _moves.new FROM _moves WHERE events.profile_id = _moves.old"
    )
    con.execute(
        "UPDATE profile_merges SET survivor_profile_id = _moves.new FROM _moves"
        " WHERE profile_merges.survivor_profile_id = _moves.old"
    )


# Last-writer-wins by (time, event id); stored rows of merged-away profiles join their
# survivor's and compete with them. {stored} selects stored rows, {batch} the batch's.
_LWW = {
    "traits": (
        "name",
        "SELECT coalesce(m.new, t.profile_id) AS profile_id, name, value, value_type,"
        " updated_at, source FROM ({stored}) AS t LEFT JOIN _moves AS m ON t.profile_id = m.old",
        "SELECT pid::UUID, name, value, value_type, ts, source FROM _b_traits",
        "updated_at DESC, source DESC",
    ),
    "subscriptions": (
        "list_id, channel",
        "SELECT coalesce(m.new, t.profile_id) AS profile_id, list_id, channel, status,"
        " identifier, updated_at, event_id FROM ({stored}) AS t"
        " LEFT JOIN _moves AS m ON t.profile_id = m.old",
        "SELECT pid::UUID, list_id, channel, status, identifier, ts, event_id"
        " FROM _b_subscriptions",
        "updated_at DESC, event_id DESC",
    ),
    "orders": (
        "order_id",
        "SELECT coalesce(m.new, t.profile_id) AS profile_id, order_id, revenue, ordered_at,"
        " event_id FROM ({stored}) AS t LEFT JOIN _moves AS m ON t.profile_id = m.old",
        "SELECT pid::UUID, order_id, revenue, ts, event_id FROM _b_orders",
        "ordered_at DESC, event_id DESC",
    ),
}


def _last_writer_wins(con: duckdb.DuckDBPyConnection, batch: _BatchTables) -> None:
    """Traits (with tombstones), subscriptions and orders of the profiles that got rows of
    that kind in the batch or took part in a merge: stored and new rows compete."""
    for table, (key, stored, fresh, order) in _LWW.items():
        scope = (
            "(SELECT old FROM _moves UNION SELECT new FROM _moves"
            f" UNION SELECT pid::UUID FROM _b_{table})"
        )
        if table == "traits":
            # A tombstone is a trait whose value is NULL: both compete in one ranking.
            old = (
                f"DELETE FROM traits WHERE profile_id IN {scope} RETURNING profile_id, name,"
                " value, value_type, updated_at, source"
            )
            tombstones = (
                f"DELETE FROM trait_tombstones WHERE profile_id IN {scope} RETURNING"
                " profile_id, name, NULL::VARCHAR AS value, NULL::VARCHAR AS value_type,"
                " updated_at, source"
            )
            stored_rows = pa.concat_tables([arrow(con, old), arrow(con, tombstones)])
        else:
            stored_rows = arrow(con, f"DELETE FROM {table} WHERE profile_id IN {scope} RETURNING *")
        stored_sql = stored.format(
            stored="SELECT * REPLACE (profile_id::UUID AS profile_id) FROM _stored"
        )
        with registered(con, _stored=stored_rows):
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE _lww AS SELECT * FROM ({stored_sql}"
                f" UNION ALL {fresh})"
                f" QUALIFY row_number() OVER (PARTITION BY profile_id, {key} ORDER BY {order}) = 1"
            )
        if table == "traits":
            con.execute("INSERT INTO traits SELECT * FROM _lww WHERE value IS NOT NULL")
            con.execute(
                "INSERT INTO trait_tombstones SELECT profile_id, name, updated_at, source"
                " FROM _lww WHERE value IS NULL"
            )
        elif table == "orders":
            con.execute("INSERT INTO orders SELECT * FROM _lww")
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE _order_scope AS SELECT * FROM {scope} AS s(pid)"
            )
            con.execute("CREATE OR REPLACE TEMP TABLE _order_rows AS SELECT * FROM _lww")
        else:
            con.execute(f"INSERT INTO {table} SELECT * FROM _lww")


_NEWER = (
    "({a}_us IS NOT NULL AND ({b}_us IS NULL OR {a}_us > {b}_us"
    " OR ({a}_us = {b}_us AND {a}_eid > {b}_eid)))"
)


def _newer(a: str, b: str) -> str:
    return _NEWER.format(a=a, b=b)


def _identifiers(con: duckdb.DuckDBPyConnection, batch: _BatchTables) -> None:
    """Every identifier row of the profiles in scope (none erased) is rewritten: its stored
    state combined with the batch's aggregates, its profile after merges, its type's
    last-seen flag."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _ids AS
        WITH stored AS (
            SELECT id_key, profile_id, id_type, id_value, valid,
                epoch_us(first_seen) AS first_us, epoch_us(last_seen) AS last_us,
                last_seen_event_id AS last_eid, hard_bounces AS hard, complaints,
                soft_bounces AS soft, recent_soft_bounces_us AS recent,
                consent_explicit AS explicit, epoch_us(consent_explicit_at) AS explicit_us,
                consent_explicit_event_id AS explicit_eid,
                epoch_us(consent_unknown_at) AS unknown_us,
                consent_unknown_event_id AS unknown_eid,
                ccpa, epoch_us(ccpa_updated_at) AS ccpa_us, ccpa_event_id AS ccpa_eid
            FROM _stored_ids WHERE profile_id IN (SELECT pid FROM _scope)
                AND profile_id NOT IN (SELECT pid FROM _erased)
        ), joined AS (
            SELECT s, d, m.new AS moved_to
            FROM stored AS s
            FULL OUTER JOIN (SELECT * FROM _b_ids WHERE NOT fresh) AS d
                ON s.id_key = d.id_key::UUID
            LEFT JOIN _moves AS m ON s.profile_id = m.old
            UNION ALL
            SELECT NULL, d, NULL FROM _b_ids AS d WHERE d.fresh
        ), combined AS (
            SELECT
                coalesce(d.id_key::UUID, s.id_key) AS id_key,
                coalesce(d.pid::UUID, moved_to, s.profile_id) AS profile_id,
                coalesce(d.id_type, s.id_type) AS id_type,
                -- The value it began with: sealed, each publishing run carries it as another
                -- token, and the last batch's would make the row depend on the batch sizes.
                coalesce(s.id_value, d.id_value) AS id_value,
                coalesce(s.valid, d.valid) AS valid,
                least(s.first_us, d.first_us) AS first_us,
                CASE WHEN {_newer("d.last", "s.last")} THEN d.last_us ELSE s.last_us END
                    AS last_us,
                CASE WHEN {_newer("d.last", "s.last")} THEN d.last_eid ELSE s.last_eid END
                    AS last_eid,
                coalesce(s.hard, 0) + coalesce(d.hard, 0) AS hard,
                coalesce(s.complaints, 0) + coalesce(d.complaints, 0) AS complaints,
                coalesce(s.soft, 0) + coalesce(len(d.soft_times), 0) AS soft,
                list_concat(coalesce(s.recent, []), coalesce(d.soft_times, [])) AS bounces,
                CASE WHEN {_newer("d.explicit", "s.explicit")} THEN d.explicit
                    ELSE s.explicit END AS explicit,
                CASE WHEN {_newer("d.explicit", "s.explicit")} THEN d.explicit_us
                    ELSE s.explicit_us END AS explicit_us,
                CASE WHEN {_newer("d.explicit", "s.explicit")} THEN d.explicit_eid
                    ELSE s.explicit_eid END AS explicit_eid,
                CASE WHEN {_newer("d.unknown", "s.unknown")} THEN d.unknown_us
                    ELSE s.unknown_us END AS unknown_us,
                CASE WHEN {_newer("d.unknown", "s.unknown")} THEN d.unknown_eid
                    ELSE s.unknown_eid END AS unknown_eid,
                CASE WHEN {_newer("d.ccpa", "s.ccpa")} THEN d.ccpa ELSE s.ccpa END AS ccpa,
                CASE WHEN {_newer("d.ccpa", "s.ccpa")} THEN d.ccpa_us ELSE s.ccpa_us END
                    AS ccpa_us,
                CASE WHEN {_newer("d.ccpa", "s.ccpa")} THEN d.ccpa_eid ELSE s.ccpa_eid END
                    AS ccpa_eid
            FROM joined
        ), judged AS (
            SELECT
                *,
                list_sort(list_filter(bounces, lambda t: last_us IS NULL OR t > last_us))
                    AS recent,
                CASE
                    WHEN explicit IS NULL THEN 'unknown'
                    WHEN explicit IN ('opted_in', 'opted_out') OR unknown_us IS NULL
                        THEN explicit
                    WHEN {_newer("unknown", "explicit")} THEN 'unknown'
                    ELSE explicit
                END AS consent
            FROM combined
        )
        SELECT
            id_key, profile_id, id_type, id_value, valid,
            valid AND hard = 0 AND complaints = 0 AS deliverable,
            consent,
            make_timestamp(CASE WHEN consent = 'unknown' THEN unknown_us ELSE explicit_us END)
                AS consent_updated_at,
            make_timestamp(first_us) AS first_seen,
            make_timestamp(last_us) AS last_seen,
            last_eid AS last_seen_event_id,
            row_number() OVER (
                PARTITION BY profile_id, id_type
                ORDER BY coalesce(last_us, {NEVER_US}) DESC, coalesce(last_eid, '') DESC,
                    id_value DESC
            ) = 1 AS is_last_seen,
            hard AS hard_bounces, complaints, soft AS soft_bounces,
            len(recent) AS consecutive_soft_bounces,
            explicit AS consent_explicit,
            make_timestamp(explicit_us) AS consent_explicit_at,
            explicit_eid AS consent_explicit_event_id,
            make_timestamp(unknown_us) AS consent_unknown_at,
            unknown_eid AS consent_unknown_event_id,
            recent AS recent_soft_bounces_us,
            ccpa, make_timestamp(ccpa_us) AS ccpa_updated_at, ccpa_eid AS ccpa_event_id
        FROM judged
        """
    )
    con.execute("INSERT INTO identifiers BY NAME SELECT * FROM _ids")


def _orders_and_profiles(con: duckdb.DuckDBPyConnection, batch: _BatchTables) -> None:
    """Profile rows: stored aggregates (of the survivor and of what merged into it) plus the
    batch's; CCPA from its identifiers; orders from its order rows when those changed."""
    old = arrow(
        con,
        "DELETE FROM profiles WHERE profile_id IN (SELECT pid FROM _scope) RETURNING"
        " profile_id::VARCHAR AS profile_id, epoch_us(created_at) AS created_us,"
        " created_event_id, epoch_us(first_seen) AS first_us, epoch_us(last_seen) AS last_us,"
        " event_count, order_count, revenue, epoch_us(last_purchase_at) AS last_purchase_us",
    )
    revenue = _revenue_by_profile(con)
    with registered(con, _p=old, _revenue=revenue):
        con.execute(
            """
            INSERT INTO profiles BY NAME
            WITH stored AS (
                SELECT coalesce(m.new, p.profile_id::UUID) AS pid, p.*
                FROM _p AS p LEFT JOIN _moves AS m ON p.profile_id::UUID = m.old
            ), seen AS (
                SELECT pid, min(first_us) AS first_us, max(last_us) AS last_us, sum(n) AS n
                FROM (
                    SELECT pid, first_us, last_us, event_count AS n FROM stored
                    UNION ALL
                    SELECT pid::UUID, min(epoch_us(ts)), max(epoch_us(ts)), count(*)
                    FROM _b_applied WHERE pid IS NOT NULL GROUP BY pid
                )
                GROUP BY pid
            ), created AS (
                SELECT pid, created_us, created_event_id FROM stored WHERE pid = profile_id::UUID
                UNION ALL
                SELECT pid::UUID, created_us, created_event_id FROM _b_created
            ), ccpa AS (
                SELECT
                    profile_id AS pid,
                    bool_or(ccpa = 'opt_out') AS opted_out,
                    arg_max(ccpa_updated_at, (epoch_us(ccpa_updated_at), ccpa_event_id))
                        AS ccpa_at,
                    arg_max(ccpa_event_id, (epoch_us(ccpa_updated_at), ccpa_event_id))
                        AS ccpa_event_id
                FROM _ids WHERE ccpa_updated_at IS NOT NULL
                GROUP BY profile_id
            ), orders_now AS (
                SELECT profile_id AS pid, count(*) AS order_count,
                    max(ordered_at) AS last_purchase_at
                FROM _order_rows GROUP BY profile_id
            ), order_scope AS (
                SELECT pid FROM _order_scope
            )
            SELECT
                s.pid AS profile_id,
                make_timestamp(c.created_us) AS created_at,
                c.created_event_id,
                make_timestamp(s.first_us) AS first_seen,
                make_timestamp(s.last_us) AS last_seen,
                s.n AS event_count,
                coalesce(k.opted_out, false) AS ccpa_opted_out,
                k.ccpa_at AS ccpa_updated_at,
                k.ccpa_event_id,
                CASE WHEN o.pid IS NULL THEN coalesce(kept.order_count, 0)
                    ELSE coalesce(n.order_count, 0) END AS order_count,
                CASE WHEN o.pid IS NULL THEN coalesce(kept.revenue, 0)
                    ELSE coalesce(r.revenue, 0) END AS revenue,
                CASE WHEN o.pid IS NULL THEN make_timestamp(kept.last_purchase_us)
                    ELSE n.last_purchase_at END AS last_purchase_at
            FROM seen AS s
            JOIN created AS c USING (pid)
            LEFT JOIN ccpa AS k USING (pid)
            LEFT JOIN order_scope AS o USING (pid)
            LEFT JOIN orders_now AS n USING (pid)
            LEFT JOIN (SELECT pid::UUID AS pid, revenue FROM _revenue) AS r USING (pid)
            LEFT JOIN stored AS kept ON kept.pid = s.pid AND kept.profile_id::UUID = s.pid
            """
        )


def _revenue_by_profile(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Lifetime value per profile whose orders changed, summed exactly (math.fsum), so the
    result never depends on the order the orders are added in."""
    rows = con.execute("SELECT profile_id::VARCHAR, revenue FROM _order_rows").fetchall()
    by_profile: dict[str, list[float]] = {}
    for pid, revenue in rows:
        by_profile.setdefault(pid, []).append(revenue)
    return pa.table(
        {
            "pid": arrow_array(list(by_profile), _STR),
            "revenue": arrow_array([math.fsum(v) for v in by_profile.values()], pa.float64()),
        }
    )


def _reachability_inputs(con: duckdb.DuckDBPyConnection, batch: _BatchTables) -> None:
    _tally(con, "SELECT pid FROM _scope", -1)
    con.execute(
        "DELETE FROM profile_reachability_inputs WHERE profile_id IN (SELECT pid FROM _scope)"
    )
    con.execute(REACHABILITY_INPUTS.format(identifiers="_ids", profiles="profiles",
                                           scope="SELECT pid FROM _scope"))  # fmt: skip
    _tally(con, "SELECT pid FROM _scope", 1)


def _tally(con: duckdb.DuckDBPyConnection, profiles: str, sign: int) -> None:
    """Record how the inputs rows of ``profiles`` (a SELECT of ids) move the tally: ``-1``
    just before they are deleted, ``1`` once they are written."""
    con.execute(
        f"INSERT INTO _tally_delta SELECT {REACHABILITY_INPUT_COLUMNS}, {sign} * count(*)"
        f" FROM profile_reachability_inputs WHERE profile_id IN ({profiles}) GROUP BY ALL"
    )


def _apply_tally(con: duckdb.DuckDBPyConnection) -> None:
    """reachability_input_tally plus the batch's moves (a few hundred rows: rewritten)."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _tally_new AS"
        f" SELECT {REACHABILITY_INPUT_COLUMNS}, sum(profiles)::BIGINT AS profiles FROM ("
        " SELECT * FROM reachability_input_tally UNION ALL SELECT * FROM _tally_delta)"
        " GROUP BY ALL HAVING sum(profiles) <> 0"
    )
    con.execute("DELETE FROM reachability_input_tally")
    con.execute("INSERT INTO reachability_input_tally SELECT * FROM _tally_new")


# The tally of a whole projection at once (the specification writer's).
REACHABILITY_INPUT_TALLY = (
    f"INSERT INTO reachability_input_tally SELECT {REACHABILITY_INPUT_COLUMNS}, count(*)"
    " FROM profile_reachability_inputs GROUP BY ALL"
)


# Shared with the specification writer the tests compare this one with, and (the SELECT)
# with the history writer, which applies it to each profile's identifiers day by day.
REACHABILITY_INPUTS_SELECT = """
WITH per_profile AS (
    SELECT
        profile_id,
        any_value(CASE WHEN deliverable THEN consent END)
            FILTER (id_type = 'email' AND is_last_seen) AS email_consent,
        any_value(consecutive_soft_bounces)
            FILTER (id_type = 'email' AND is_last_seen) AS email_soft_bounces,
        any_value(CASE WHEN deliverable THEN consent END)
            FILTER (id_type = 'phone' AND is_last_seen) AS sms_consent,
        any_value(consecutive_soft_bounces)
            FILTER (id_type = 'phone' AND is_last_seen) AS sms_soft_bounces,
        min(consecutive_soft_bounces)
            FILTER (id_type = 'push_token' AND deliverable AND consent = 'opted_in')
            AS push_opted_in_soft_bounces,
        min(consecutive_soft_bounces)
            FILTER (id_type = 'push_token' AND deliverable AND consent = 'unknown')
            AS push_unknown_soft_bounces
    FROM {identifiers}
    GROUP BY profile_id
)
SELECT
    p.profile_id, p.ccpa_opted_out,
    r.email_consent, r.email_soft_bounces, r.sms_consent, r.sms_soft_bounces,
    r.push_opted_in_soft_bounces, r.push_unknown_soft_bounces
FROM {profiles} AS p
LEFT JOIN per_profile AS r USING (profile_id)
WHERE p.profile_id IN ({scope})
"""
REACHABILITY_INPUTS = "\nINSERT INTO profile_reachability_inputs" + REACHABILITY_INPUTS_SELECT


def _timeline_and_identity(con: duckdb.DuckDBPyConnection, batch: _BatchTables) -> None:
    con.execute(
        "INSERT INTO events SELECT event_id, pid::UUID, type, ts, event_name, payload"
        " FROM _b_applied WHERE in_timeline AND pid IS NOT NULL"
    )
    con.execute(
        "INSERT INTO profile_merges SELECT merged::UUID, survivor::UUID, merged_at, event_id"
        " FROM _b_merges"
    )
    con.execute(
        "INSERT INTO identity_conflicts SELECT event_id, event_time, id_type, id_value,"
        " owner::UUID, event_pid::UUID, rule FROM _b_conflicts"
        " WHERE coalesce(owner::UUID NOT IN (SELECT pid FROM _erased), true)"
        " AND event_pid::UUID NOT IN (SELECT pid FROM _erased)"
    )
    con.execute(
        "INSERT INTO applied_events SELECT event_id, event_key::UUID, fingerprint::UUID"
        " FROM _b_applied"
    )


def write_dead_letters(con: duckdb.DuckDBPyConnection, letters: Sequence[DeadLetter]) -> None:
    """Dead letters of a commit without changes (no erasure to reach them)."""
    if not letters:
        return
    with registered(con, _b_dead=_dead_letter_rows(letters)):
        con.execute("INSERT INTO dead_letters SELECT * EXCLUDE (position, id_keys) FROM _b_dead")


def _dead_letter_rows(d: Sequence[DeadLetter]) -> pa.Table:
    return pa.table(
        {
            "source": arrow_array([x.source for x in d], _STR),
            "partition": arrow_array([x.partition for x in d], pa.int32()),
            "offset": arrow_array([x.offset for x in d], _I64),
            "line_number": arrow_array([x.line_number for x in d], _I64),
            "message_key": arrow_array([x.key for x in d], pa.binary()),
            "raw": arrow_array([x.raw for x in d], pa.binary()),
            "reason": arrow_array([x.reason for x in d], _STR),
            "logged_at": arrow_array([x.timestamp_us for x in d], TIMESTAMP),
            "position": arrow_array([x.position for x in d], _I64),
            "id_keys": arrow_array([list(x.id_keys) for x in d], pa.list_(_STR)),
        }
    )


def write_offsets(con: duckdb.DuckDBPyConnection, offsets: Sequence[TopicOffset]) -> None:
    if not offsets:
        return
    rows = pa.table(
        {
            "topic": arrow_array([o.topic for o in offsets], _STR),
            "partition": arrow_array([o.partition for o in offsets], pa.int32()),
            "next_offset": arrow_array([o.next_offset for o in offsets], _I64),
        }
    )
    with registered(con, _offsets=rows):
        con.execute(
            "DELETE FROM consumer_offsets USING _offsets"
            " WHERE consumer_offsets.topic = _offsets.topic"
            ' AND consumer_offsets."partition" = _offsets."partition"'
        )
        con.execute(
            'INSERT INTO consumer_offsets SELECT topic, "partition", next_offset FROM _offsets'
        )
