"""Sealed projections fold as plaintext ones do, except for the people erased.

Random small logs (people sharing identifiers, merges, limit conflicts, erasures, events of a
person after their erasure) are folded twice: in clear, and sealed then opened with keys in
memory (erasures destroy keys as they go). Identity resolution decides alike (the same live
profiles, the same events in each); every profile no erased key touched reads the same page
once decrypted; the erased people are gone from both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.key_store import MemoryKeyStore
from profile_engine.crypto import ERASED, KeyRing, ref_blind
from profile_engine.events import ProfileEvent
from profile_engine.fold import FoldConfig
from projections import queries
from tests.profile_engine.builders import ccpa, consent, identify, purchase, track
from tests.support.folding import fold_into_db
from tests.support.properties import examples
from tests.support.sealed_folding import seal_events, sealed_fold_into_db

MASTER = bytes(range(32))
RING = KeyRing.from_master(MASTER)
POOLS = {
    "customer_id": ["C1", "C2"],
    "email": ["a@x.io", "b@x.io", "c@x.io"],
    "phone": ["+14155552671"],
    "anonymous_id": ["anon-1", "anon-2"],
}


@st.composite
def events(draw: Any, number: int) -> ProfileEvent:
    ids = {t: draw(st.sampled_from(pool)) for t, pool in POOLS.items() if draw(st.booleans())}
    ids = ids or {"anonymous_id": draw(st.sampled_from(POOLS["anonymous_id"]))}
    minute, eid = draw(st.integers(0, 5)), f"e{number:03d}"
    kind = draw(st.sampled_from(["identify", "identify", "track", "purchase", "delete"]))
    if kind == "identify":
        traits = {draw(st.sampled_from(["first_name", "city"])): draw(st.sampled_from(
            ["Ann", "Bo", None, 3, True]))}  # fmt: skip
        return identify(minute, traits, eid=eid, **ids)
    if kind == "track":
        return track(minute, "page_viewed", {"n": draw(st.integers(0, 2))}, eid=eid, **ids)
    if kind == "purchase":
        return purchase(minute, draw(st.sampled_from(["o1", "o2"])), 5.0, eid=eid, **ids)
    if "email" in ids and draw(st.booleans()):
        return consent(minute, "email", "opted_in", eid=eid, **ids)
    return ccpa(minute, "delete", eid=eid, **ids)


@st.composite
def logs(draw: Any) -> list[ProfileEvent]:
    return [draw(events(number)) for number in range(draw(st.integers(1, 14)))]


def _members(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    rows = con.execute(
        "SELECT p.profile_id::VARCHAR, list(e.event_id ORDER BY e.event_id)"
        " FROM profiles p LEFT JOIN events e USING (profile_id) GROUP BY ALL"
    ).fetchall()
    return {pid: sorted(e for e in members if e) for pid, members in rows}


@settings(
    max_examples=examples(12),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(log=logs(), batch=st.integers(2, 6))
def test_sealed_projections_equal_plaintext_ones_except_the_erased(
    tmp_path: Path, log: list[ProfileEvent], batch: int
) -> None:
    plain, sealed = tmp_path / "plain.duckdb", tmp_path / "sealed.duckdb"
    for path in (plain, sealed, Path(f"{plain}.wal"), Path(f"{sealed}.wal")):
        path.unlink(missing_ok=True)
    config = FoldConfig(id_limits={"customer_id": 1})
    keys = MemoryKeyStore()
    messages = [value for _, value in seal_events(log, MASTER, keys)]
    fold_into_db(plain, log, config, batch_size=batch)
    stats = sealed_fold_into_db(sealed, messages, MASTER, keys, config, batch_size=batch)
    assert stats.dead_lettered == 0

    plain_con = duckdb.connect(str(plain), read_only=True)
    sealed_con = duckdb.connect(str(sealed), read_only=True)
    try:
        _compare(plain_con, sealed_con, log, keys)
    finally:
        plain_con.close()
        sealed_con.close()


def _compare(
    plain: duckdb.DuckDBPyConnection,
    sealed: duckdb.DuckDBPyConnection,
    log: list[ProfileEvent],
    keys: MemoryKeyStore,
) -> None:
    # Identity resolution by blind index decides as it does by value: the same live profiles
    # (ids derive from event ids), holding the same events.
    assert _members(sealed) == _members(plain)

    # Erased identifiers: those whose keys got an erased marker; the events that carry one.
    erased_blinds = {ref_blind(ref) for ref, value in keys._keys.items() if value == ERASED}
    erased = {
        (t, v) for t, pool in POOLS.items() for v in pool
        if RING.identifier_key(t, v) in erased_blinds
    }  # fmt: skip
    touched = {
        e.event_id for e in log
        if any((i.id_type, i.value) in erased for i in e.identifiers)
    }  # fmt: skip
    for id_type, pool in POOLS.items():
        for value in pool:
            lookup = f"{id_type}:{value}"
            expected = queries.profile_view(plain, lookup, None)
            actual = queries.profile_view(sealed, lookup, RING)
            # A person erased is gone from both; one not erased is found in both.
            assert (expected is None) == (actual is None), lookup
            if expected is not None and untouched(expected, touched):
                assert actual == expected, lookup
            if (id_type, value) in erased and actual is not None:
                # Found again after the erasure (by a later event, sealed before the erasure
                # under the key it destroyed): found by blind index, its value unreadable.
                assert value not in [i["value"] for i in actual["identifiers"]], lookup


def untouched(page: dict[str, Any], touched: set[str]) -> bool:
    """Whether no event of the page carries an identifier whose keys were erased."""
    return not any(item["event_id"] in touched for item in page["timeline"])


def test_a_person_who_comes_back_after_an_erasure_reads_alike_in_a_rebuild(
    tmp_path: Path,
) -> None:
    """Her events after the delete are sealed under a new data key (the old one is erased).
    A rebuild replays the delete: it destroys the keys the fold met up to it, not the new
    one, so she reads in the rebuilt projection as in the consumer's (a rebuild destroyed
    every version the key store held, and she read as erased there, for good)."""
    keys = MemoryKeyStore()
    before = [
        identify(0, {"first_name": "Ann"}, eid="a1", email="a@x.io", customer_id="C1"),
        purchase(1, "o1", 5.0, eid="a2", email="a@x.io"),
        ccpa(2, "delete", eid="a3", email="a@x.io"),
    ]
    first = [value for _, value in seal_events(before, MASTER, keys)]
    consumed, rebuilt = tmp_path / "consumed.duckdb", tmp_path / "rebuilt.duckdb"
    sealed_fold_into_db(consumed, first, MASTER, keys, batch_size=1)
    old_refs = {ref for ref, value in keys._keys.items() if value == ERASED}
    assert old_refs  # the delete destroyed her keys
    after = [
        identify(3, {"first_name": "Ann"}, eid="a4", email="a@x.io"),
        purchase(4, "o2", 7.0, eid="a5", email="a@x.io"),
    ]
    second = [value for _, value in seal_events(after, MASTER, keys)]
    sealed_fold_into_db(consumed, second, MASTER, keys, batch_size=1)
    stats = sealed_fold_into_db(rebuilt, first + second, MASTER, keys, batch_size=1000)
    assert stats.dead_lettered == 0
    assert {ref for ref, value in keys._keys.items() if value == ERASED} == old_refs
    pages = []
    for db in (consumed, rebuilt):
        con = duckdb.connect(str(db), read_only=True)
        try:
            pages.append(queries.profile_view(con, "email:a@x.io", RING))
        finally:
            con.close()
    assert pages[0] is not None and pages[0] == pages[1]
    assert [i["value"] for i in pages[0]["identifiers"]] == ["a@x.io"]
    assert pages[0]["traits"]["first_name"]["value"] == "Ann"
    assert pages[0]["orders"]["count"] == 1  # o2 only: o1 went with the erased profile


def test_a_sealed_projection_is_the_same_whatever_the_batch_sizes(tmp_path: Path) -> None:
    """Each publishing run (each of its worker processes) seals an identifier anew, so her
    events carry her email as different tokens; the row keeps the one it began with, not
    whichever the batch that touched it last carried."""
    keys = MemoryKeyStore()
    runs = [
        [identify(0, {"first_name": "Ann"}, eid="a1", email="a@x.io")],
        [track(1, "page_viewed", eid="a2", email="a@x.io")],
        [identify(2, {"last_name": "Lee"}, eid="a3", email="a@x.io", customer_id="C1")],
    ]
    messages = [value for run in runs for _, value in seal_events(run, MASTER, keys)]
    tables = []
    for size in (1, 2, 1000):
        db = tmp_path / f"batches-of-{size}.duckdb"
        sealed_fold_into_db(db, messages, MASTER, keys, batch_size=size)
        con = duckdb.connect(str(db), read_only=True)
        try:
            tables.append(con.execute("SELECT * FROM identifiers ORDER BY id_key").fetchall())
        finally:
            con.close()
    assert tables[0] == tables[1] == tables[2]
