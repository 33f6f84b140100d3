"""The oracle: the specification fold (profile_engine.fold) written out as projection tables.

Folds a whole log in memory with ``ProfileFold`` and writes its final state in one go. The
production fold (set-based batches over DuckDB) must produce exactly these tables, whatever
its batch size; the property tests compare them table by table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from profile_engine.events import ProfileEvent
from profile_engine.fold import Changes, FoldConfig, ProfileFold
from profile_engine.keys import content_fingerprint, event_key, identifier_key
from profile_engine.state import IdentifierState, ProfileState
from projections.batch_writer import REACHABILITY_INPUT_TALLY, REACHABILITY_INPUTS
from projections.rows import (
    NEVER_US,
    TIMESTAMP,
    timeline_payload,
    trait_text,
    without_identifier,
)
from projections.store import ProjectionStore

_STR = pa.string()


def spec_fold_into_db(
    db_path: str | Path, events: Iterable[ProfileEvent], config: FoldConfig | None = None
) -> None:
    """Fold ``events`` in the given order with the specification fold and write the tables."""
    with ProjectionStore(db_path) as store:
        store.fold_config(config)
        write_spec_fold(store, events, config)


def write_spec_fold(
    store: ProjectionStore,
    events: Iterable[ProfileEvent],
    config: FoldConfig | None = None,
    replace: bool = False,
) -> None:
    """Fold ``events`` with the specification fold into an open projection; ``replace``
    empties the tables first (one projection for many logs: creating one costs more than
    folding a small log)."""
    fold = ProfileFold(config)
    fingerprints: dict[str, str] = {}
    for event in events:
        if fold.apply(event):
            fingerprints[event.event_id] = content_fingerprint(event)
    changes = fold.drain_changes()
    con = store.con
    tables = _tables(fold, changes, fingerprints)
    if replace:
        with store.transaction():
            for name in [*tables, "profile_reachability_inputs", "reachability_input_tally"]:
                con.execute(f"DELETE FROM {name}")
    with store.transaction():
        for name, table in tables.items():
            con.register("_rows", table)
            columns = ", ".join(f'"{c}"' for c in table.column_names)
            con.execute(f"INSERT INTO {name} ({columns}) SELECT {columns} FROM _rows")
            con.unregister("_rows")
        con.execute(
            REACHABILITY_INPUTS.format(
                identifiers="identifiers",
                profiles="profiles",
                scope="SELECT profile_id FROM profiles",
            )
        )
        con.execute(REACHABILITY_INPUT_TALLY)


def _tables(
    fold: ProfileFold, changes: Changes, fingerprints: dict[str, str]
) -> dict[str, pa.Table]:
    merges, conflicts, timeline = changes.merges, changes.conflicts, changes.timeline
    erased, applied = changes.erased_profiles, changes.applied_event_ids
    profiles = list(fold.profiles.values())
    traits, tombstones = _trait_rows(profiles)
    live_merges = [m for m in merges if m.merged_profile_id in fold.merged_into]
    kept_conflicts = [
        c
        for c in conflicts
        if c.owner_profile_id not in erased and c.event_profile_id not in erased
    ]
    # An erasure also takes the erased profile's identifiers out of the events that applied
    # elsewhere because a conflict kept them on it (their payloads and subscription rows).
    scrubbed: dict[str, list[tuple[str, str]]] = {}
    for c in conflicts:
        if c.owner_profile_id in erased and c.event_profile_id not in erased:
            scrubbed.setdefault(c.event_id, []).append((c.dropped.id_type, c.dropped.value))
    entries = []
    for entry in timeline:
        pid = fold.resolve_profile_id(entry.profile_id)
        if pid is not None:
            entries.append((entry.event, pid))
    return {
        "profiles": _rows(
            [
                ("profile_id", _STR), ("created_at", TIMESTAMP), ("created_event_id", _STR),
                ("first_seen", TIMESTAMP), ("last_seen", TIMESTAMP), ("event_count", pa.int64()),
                ("ccpa_opted_out", pa.bool_()), ("ccpa_updated_at", TIMESTAMP),
                ("ccpa_event_id", _STR), ("order_count", pa.int64()), ("revenue", pa.float64()),
                ("last_purchase_at", TIMESTAMP),
            ],
            [_profile_row(p) for p in profiles],
        ),
        "identifiers": _rows(_IDENTIFIER_COLUMNS, [
            _identifier_row(state, flag)
            for p in profiles
            for by_value in p.identifiers.values()
            for state, flag in zip(by_value.values(), _last_seen_flags(by_value), strict=True)
        ]),
        "traits": _rows(
            [("profile_id", _STR), ("name", _STR), ("value", _STR), ("value_type", _STR),
             ("updated_at", TIMESTAMP), ("source", _STR)],
            traits,
        ),
        "trait_tombstones": _rows(
            [("profile_id", _STR), ("name", _STR), ("updated_at", TIMESTAMP), ("source", _STR)],
            tombstones,
        ),
        "subscriptions": _rows(
            [("profile_id", _STR), ("list_id", _STR), ("channel", _STR), ("status", _STR),
             ("identifier", _STR), ("updated_at", TIMESTAMP), ("event_id", _STR)],
            [(p.profile_id, lst, ch, status,
              None if (ident is not None and any(
                  ident == value for _, value in scrubbed.get(key[1], ()))) else ident,
              key[0], key[1])
             for p in profiles for (lst, ch), (status, ident, key) in p.subscriptions.items()],
        ),
        "orders": _rows(
            [("profile_id", _STR), ("order_id", _STR), ("revenue", pa.float64()),
             ("ordered_at", TIMESTAMP), ("event_id", _STR)],
            [(p.profile_id, oid, rev, key[0], key[1])
             for p in profiles for oid, (rev, key) in p.orders.items()],
        ),
        "profile_merges": _rows(
            [("merged_profile_id", _STR), ("survivor_profile_id", _STR),
             ("merged_at", TIMESTAMP), ("event_id", _STR)],
            [(m.merged_profile_id, fold.merged_into[m.merged_profile_id], m.timestamp_us,
              m.event_id) for m in live_merges],
        ),
        "identity_conflicts": _rows(
            [("event_id", _STR), ("event_time", TIMESTAMP), ("dropped_id_type", _STR),
             ("dropped_id_value", _STR), ("owner_profile_id", _STR),
             ("event_profile_id", _STR), ("rule", _STR)],
            [(c.event_id, c.timestamp_us, c.dropped.id_type, c.dropped.value,
              c.owner_profile_id, c.event_profile_id, c.rule) for c in kept_conflicts],
        ),
        "events": _rows(
            [("event_id", _STR), ("profile_id", _STR), ("type", _STR), ("timestamp", TIMESTAMP),
             ("event_name", _STR), ("payload", _STR)],
            [(e.event_id, pid, e.type, e.timestamp_us,
              e.event if e.type == "track" else None,  # type: ignore[attr-defined]
              _scrubbed_payload(timeline_payload(e), scrubbed.get(e.event_id, ())))
             for e, pid in entries],
        ),
        "applied_events": _rows(
            [("event_id", _STR), ("event_key", _STR), ("fingerprint", _STR)],
            [(eid, event_key(eid), fingerprints[eid]) for eid in applied],
        ),
    }  # fmt: skip


def _scrubbed_payload(payload: str, taken: Any) -> str:
    for id_type, _ in taken:
        payload = without_identifier(payload, id_type)
    return payload


def _rows(schema: list[tuple[str, pa.DataType]], rows: list[tuple[Any, ...]]) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    return pa.table(
        {name: pa.array(col, kind) for (name, kind), col in zip(schema, columns, strict=True)}
    )


def _profile_row(p: ProfileState) -> tuple[Any, ...]:
    opted_out, ccpa_key = p.ccpa_state()
    orders = p.orders.values()
    return (
        p.profile_id, p.created_key[0], p.created_key[1], p.first_seen, p.last_seen,
        p.event_count, opted_out, ccpa_key[0] if ccpa_key else None,
        ccpa_key[1] if ccpa_key else None, len(p.orders),
        math.fsum(revenue for revenue, _ in orders),
        max((key[0] for _, key in orders), default=None),
    )  # fmt: skip


def _last_seen_flags(by_value: dict[str, IdentifierState]) -> list[bool]:
    keys = [((s.last_seen_key or (NEVER_US, "")), s.value) for s in by_value.values()]
    best = max(keys)
    return [key == best for key in keys]


_IDENTIFIER_COLUMNS = [
    ("id_key", _STR), ("profile_id", _STR), ("id_type", _STR), ("id_value", _STR),
    ("valid", pa.bool_()), ("deliverable", pa.bool_()), ("consent", _STR),
    ("consent_updated_at", TIMESTAMP), ("first_seen", TIMESTAMP), ("last_seen", TIMESTAMP),
    ("last_seen_event_id", _STR), ("is_last_seen", pa.bool_()), ("hard_bounces", pa.int64()),
    ("complaints", pa.int64()), ("soft_bounces", pa.int64()),
    ("consecutive_soft_bounces", pa.int64()), ("consent_explicit", _STR),
    ("consent_explicit_at", TIMESTAMP), ("consent_explicit_event_id", _STR),
    ("consent_unknown_at", TIMESTAMP), ("consent_unknown_event_id", _STR),
    ("recent_soft_bounces_us", pa.list_(pa.int64())), ("ccpa", _STR),
    ("ccpa_updated_at", TIMESTAMP), ("ccpa_event_id", _STR),
]  # fmt: skip


def _identifier_row(s: IdentifierState, is_last_seen: bool) -> tuple[Any, ...]:
    consent, consent_key = s.consent_with_key()
    none = (None, None)
    last_seen = s.last_seen_key or none
    explicit = s.explicit_key or none
    unknown = s.unknown_key or none
    ccpa = s.ccpa_key or none
    recent = s.recent_soft_bounces
    return (
        identifier_key(s.id_type, s.value), s.profile_id, s.id_type, s.value, s.valid,
        s.deliverable, consent, consent_key[0] if consent_key else None, s.first_seen,
        last_seen[0], last_seen[1], is_last_seen, s.hard_bounces, s.complaints, s.soft_bounces,
        len(recent), s.explicit_consent, explicit[0], explicit[1], unknown[0], unknown[1],
        sorted(recent), s.ccpa, ccpa[0], ccpa[1],
    )  # fmt: skip


def _trait_rows(
    profiles: list[ProfileState],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    kept: list[tuple[Any, ...]] = []
    unset: list[tuple[Any, ...]] = []
    for p in profiles:
        for name, (value, (stamp, source)) in p.traits.items():
            if value is None:
                unset.append((p.profile_id, name, stamp, source))
            else:
                text, kind = trait_text(value)
                kept.append((p.profile_id, name, text, kind, stamp, source))
    return kept, unset
