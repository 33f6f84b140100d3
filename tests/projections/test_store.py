"""The DuckDB writer: batches, restore after restart, erasure, merges, offsets."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from profile_engine.batch_fold import BatchFold, prepare
from profile_engine.errors import BadInput
from profile_engine.events import ProfileEvent
from profile_engine.fold import FoldConfig, profile_id_for
from projections.store import (
    DeadLetter,
    ProjectionConfigError,
    ProjectionStore,
    TopicOffset,
)
from tests.profile_engine.builders import (
    bounce,
    ccpa,
    consent,
    identify,
    purchase,
    subscription,
    track,
)
from tests.snapshots import dump
from tests.support.folding import fold_into_db


def sample_log() -> list[ProfileEvent]:
    return [
        track(0, eid="t0", anonymous_id="anon-1"),
        identify(1, {"city": "Paris", "vip": True, "age": 41}, eid="i1", email="Ann@Example.com"),
        identify(2, {"city": None}, eid="i2", email="ann@example.com", anonymous_id="anon-1"),
        identify(3, eid="i3", customer_id="C1", email="ann@example.com"),
        identify(4, eid="i4", customer_id="C2", email="ann@example.com"),  # conflict
        consent(5, "email", "opted_in", eid="c5", email="ann@example.com"),
        bounce(6, "email", "soft", eid="b6", email="ann@example.com"),
        purchase(7, "o-1", 12.5, eid="p7", customer_id="C1"),
        subscription(8, "news", "email", "subscribed", eid="s8", email="ann@example.com"),
        ccpa(9, "opt_out", eid="x9", customer_id="C1"),
        track(10, eid="t10", phone="+14155552671"),
        ccpa(11, "delete", eid="d11", phone="+14155552671"),
    ]


def test_folding_in_batches_with_restarts_equals_one_pass(tmp_path: Path) -> None:
    log = sample_log()
    one_pass, restarted = tmp_path / "one.duckdb", tmp_path / "restarted.duckdb"
    fold_into_db(one_pass, log)
    for start in range(0, len(log), 3):  # a new process (store + restored fold) every 3
        fold_into_db(restarted, log[start : start + 3], batch_size=2)
    assert dump(restarted) == dump(one_pass)


def test_redelivered_events_apply_once_across_restarts(tmp_path: Path) -> None:
    db = tmp_path / "p.duckdb"
    fold_into_db(db, sample_log())
    before = dump(db)
    fold_into_db(db, sample_log())
    assert dump(db) == before


def test_tables_hold_the_folded_state(tmp_path: Path) -> None:
    db = tmp_path / "p.duckdb"
    fold_into_db(db, sample_log())
    with duckdb.connect(str(db), read_only=True) as con:
        (pid, opted_out, orders, revenue) = con.execute(
            "SELECT profile_id::VARCHAR, ccpa_opted_out, order_count, revenue FROM profiles"
            " WHERE profile_id IN (SELECT profile_id FROM identifiers WHERE id_value = 'C1')"
        ).fetchone()  # type: ignore[misc]
        assert pid == profile_id_for("t0")
        assert (opted_out, orders, revenue) == (True, 1, 12.5)
        traits = con.execute("SELECT name, value, value_type FROM traits ORDER BY name").fetchall()
        assert traits == [("age", "41", "long"), ("vip", "true", "boolean")]
        assert con.execute("SELECT name FROM trait_tombstones").fetchall() == [("city",)]
        assert con.execute(
            "SELECT consent, deliverable, soft_bounces FROM identifiers WHERE id_type = 'email'"
        ).fetchall() == [("opted_in", True, 1)]
        assert con.execute(
            "SELECT merged_profile_id::VARCHAR, survivor_profile_id::VARCHAR FROM profile_merges"
        ).fetchall() == [(profile_id_for("i1"), profile_id_for("t0"))]
        assert con.execute(
            "SELECT dropped_id_type, dropped_id_value FROM identity_conflicts"
        ).fetchall() == [("email", "ann@example.com")]


def test_the_timeline_follows_merges(tmp_path: Path) -> None:
    db = tmp_path / "p.duckdb"
    fold_into_db(db, [track(0, eid="a", anonymous_id="x"), identify(1, eid="b", email="e@x.io")])
    fold_into_db(db, [identify(2, eid="c", email="e@x.io", anonymous_id="x")])
    with duckdb.connect(str(db), read_only=True) as con:
        owners = con.execute("SELECT DISTINCT profile_id::VARCHAR FROM events").fetchall()
    assert owners == [(profile_id_for("a"),)]


def test_erasure_leaves_no_row_behind_and_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "p.duckdb"
    fold_into_db(db, sample_log()[:9])
    erased_ids = (profile_id_for("t0"), profile_id_for("i1"))  # survivor and merged-away id
    per_table = {
        "profiles": "profile_id",
        "identifiers": "profile_id",
        "traits": "profile_id",
        "trait_tombstones": "profile_id",
        "subscriptions": "profile_id",
        "orders": "profile_id",
        "events": "profile_id",
        "profile_merges": "survivor_profile_id",
        "identity_conflicts": "owner_profile_id",
    }

    def rows_of_erased() -> dict[str, int]:
        with duckdb.connect(str(db), read_only=True) as con:
            return {
                table: con.execute(
                    f"SELECT count(*) FROM {table} WHERE {column} IN (?, ?)", erased_ids
                ).fetchone()[0]  # type: ignore[index]
                for table, column in per_table.items()
            }

    assert all(rows_of_erased().values()), "the sample must fill every table before erasure"
    fold_into_db(db, [ccpa(20, "delete", eid="del", email="ann@example.com")])
    fold_into_db(db, [ccpa(20, "delete", eid="del", email="ann@example.com")])  # restart
    assert rows_of_erased() == dict.fromkeys(per_table, 0)
    with duckdb.connect(str(db), read_only=True) as con:
        values = {r[0] for r in con.execute("SELECT id_value FROM identifiers").fetchall()}
    assert values == {"C2"}  # only the other customer is left
    fold_into_db(db, [track(30, eid="new", email="ann@example.com")])
    with duckdb.connect(str(db), read_only=True) as con:
        owner = con.execute(
            "SELECT profile_id::VARCHAR FROM identifiers WHERE id_value = 'ann@example.com'"
        ).fetchone()
    assert owner == (profile_id_for("new"),)


def _fold_batch(store: ProjectionStore, events: list[ProfileEvent]) -> BatchFold:
    config = store.fold_config(None)
    batch = [prepare(event) for event in events]
    fold = BatchFold(config, store.stored_world(batch, config))
    for prepared in batch:
        fold.fold(prepared)
    return fold


def test_offsets_and_dead_letters_commit_with_the_rows(tmp_path: Path) -> None:
    db = tmp_path / "p.duckdb"
    with ProjectionStore(db) as store:
        fold = _fold_batch(store, [track(0, email="a@example.com")])
        letter = DeadLetter("profile-events", 2, 7, None, b"k", b"\x00junk", "bad magic byte")
        store.commit_batch(fold.finish(), [TopicOffset("profile-events", 2, 8)], [letter])
        assert store.offsets("profile-events") == {2: 8}
        store.commit_batch(None, [TopicOffset("profile-events", 2, 9)])
        assert store.offsets("profile-events") == {2: 9}
        assert store.counts()["dead_letters"] == 1


def test_a_failed_batch_leaves_rows_and_offsets_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "p.duckdb"
    with ProjectionStore(db) as store:
        store.commit_batch(
            _fold_batch(store, [track(0, email="a@example.com")]).finish(),
            [TopicOffset("t", 0, 1)],
        )
        changes = _fold_batch(store, [track(1, email="b@example.com")]).finish()
        changes.merges.append(("not a uuid", "x", 0, "e-x"))  # the merge table refuses it
        with pytest.raises(BadInput):
            store.commit_batch(changes, [TopicOffset("t", 0, 2)])
        assert store.offsets("t") == {0: 1}
        assert store.counts()["profiles"] == 1


def test_identity_limits_are_fixed_per_projection(tmp_path: Path) -> None:
    db = tmp_path / "p.duckdb"
    fold_into_db(db, [track(0, email="a@example.com")], config=FoldConfig({"customer_id": 2}))
    with pytest.raises(ProjectionConfigError, match="rebuild to change"):
        fold_into_db(db, [], config=FoldConfig({"customer_id": 1}))


def test_a_projection_of_another_table_version_is_refused_with_a_rebuild_hint(
    tmp_path: Path,
) -> None:
    db = tmp_path / "p.duckdb"
    fold_into_db(db, [track(0, email="a@example.com")])
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE projection_meta SET value = '0' WHERE key = 'schema_version'")
    with pytest.raises(ProjectionConfigError, match="run `profile-engine rebuild"):
        fold_into_db(db, [track(1, email="b@example.com")])


@pytest.mark.parametrize("batch_size", [3, 40])
def test_incremental_batches_of_a_realistic_log_equal_one_pass(
    tmp_path: Path, batch_size: int
) -> None:
    # The writer rewrites only the rows each batch touched; on a log with merges, identity
    # conflicts, erasures, consents and bounces, the result must match writing everything once.
    from profile_engine.contract import ContractError, parse_event
    from profile_engine.synthetic import generate_events

    log = []
    for raw in generate_events(800, seed=11):
        try:
            log.append(parse_event(raw))
        except ContractError:
            continue
    hand_made = sample_log()  # adds a conflict, an erasure, consent, bounce, CCPA opt-out
    for position, event in zip(range(100, 800, 60), hand_made, strict=False):
        log.insert(position, event)
    one_pass, batched = tmp_path / "one.duckdb", tmp_path / "batched.duckdb"
    fold_into_db(one_pass, log, batch_size=len(log))
    fold_into_db(batched, log, batch_size=batch_size)
    snapshot = dump(one_pass)
    assert snapshot["profile_merges"] and snapshot["identity_conflicts"]  # exercised
    assert dump(batched) == snapshot


def test_each_event_in_its_own_batch_equals_one_pass_through_merges_and_conflicts(
    tmp_path: Path,
) -> None:
    log = [
        # B (created first) and A, each with rows the later merge event does not mention
        identify(0, {"city": "Oslo"}, eid="b0", anonymous_id="anon-9", push_token="tok-9"),
        subscription(1, "news", "push", "subscribed", eid="b1", push_token="tok-9"),
        identify(2, {"plan": "pro"}, eid="a2", email="a@x.io", phone="+14155552671"),
        purchase(3, "o-1", 20.0, eid="a3", email="a@x.io"),
        consent(4, "sms", "opted_in", eid="a4", phone="+14155552671"),
        track(5, eid="m5", email="a@x.io", anonymous_id="anon-9"),  # A merges into B
        identify(6, eid="c6", customer_id="C1", email="a@x.io"),
        # C2 cannot take the email (one customer_id per profile): the email is dropped from
        # these events, yet consent and bounces belong to the address, on C1's profile.
        consent(7, "email", "opted_out", eid="c7", customer_id="C2", email="a@x.io"),
        bounce(8, "email", "hard", eid="c8", customer_id="C2", email="a@x.io"),
        ccpa(9, "opt_out", eid="c9", customer_id="C1"),
    ]
    batched = tmp_path / "batched.duckdb"
    for n, event in enumerate(log, start=1):
        fold_into_db(batched, [event], batch_size=1)  # each event: its own batch and restart
        one_pass = tmp_path / f"one-{n}.duckdb"
        fold_into_db(one_pass, log[:n])
        assert dump(batched) == dump(one_pass), f"after event {n} ({event.event_id})"
    assert dump(batched)["identity_conflicts"]
