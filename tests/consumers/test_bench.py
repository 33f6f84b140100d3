"""`bench fold` and its CPU floor: the figures add up and the floor measures the real work."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from consumers.bench import run_fold_benchmark
from consumers.bench_floor import final_tables, fold_all, in_fold_order, write_once
from profile_engine.fold import ProfileFold
from projections.store import fold_into_db
from tests.consumers.test_consumer import small_log
from tests.snapshots import dump


def test_the_floor_writes_exactly_the_rows_the_fold_wrote(tmp_path: Path) -> None:
    folded = tmp_path / "folded.duckdb"
    fold_into_db(folded, small_log(), batch_size=3)
    once = tmp_path / "once.duckdb"

    write_once(final_tables(str(folded)), str(once))

    assert dump(once) == dump(folded)
    assert dump(once)["profiles"]  # the comparison is not between two empty files


def test_the_floor_folds_every_event_into_the_same_state_as_one_pass() -> None:
    events = small_log()

    in_batches = fold_all(events, batch_size=2)
    one_pass = ProfileFold().apply_all(events)

    assert in_batches.profiles.keys() == one_pass.profiles.keys()
    assert in_batches.index.keys() == one_pass.index.keys()


def test_the_floor_folds_in_the_consumers_merged_order() -> None:
    # (partition, offset, timestamp_ms, key, value), as the reader parses them
    records = [
        (0, 0, 30, None, b"a"),
        (0, 1, 10, None, b"b"),  # a partition may hold an earlier time after a later one
        (0, 2, 40, None, b"c"),
        (3, 0, 20, None, b"d"),
        (3, 1, 30, None, b"e"),
    ]

    ordered = in_fold_order(records)

    # Each partition keeps its own order; across partitions the earlier head goes first, and
    # a tie goes to the lower partition.
    assert [r[4] for r in ordered] == [b"d", b"a", b"b", b"e", b"c"]


@pytest.mark.kafka
def test_bench_fold_accounts_for_every_event_and_reports_its_floor(kafka_bootstrap: str) -> None:
    result = run_fold_benchmark(400, 7, kafka_bootstrap, 150, io.StringIO())

    assert result["folded"] + result["duplicates"] + result["dead_lettered"] == 400
    assert result["fold_vs_raw"] == round(
        result["fold_events_per_s"] / result["raw_read_events_per_s"], 3
    )
    floor = result["floor_cpu_us_per_event"]
    stages = ("kafka_read", "avro_decode", "fold", "duckdb_write")
    assert all(floor[stage] > 0 for stage in stages)
    assert floor["total"] == pytest.approx(sum(floor[stage] for stage in stages), abs=0.05)
    assert result["floor_events_per_s"] == pytest.approx(
        result["cpu_cores"] * 1e6 / floor["total"], rel=0.01
    )
    assert result["fold_cpu_us_per_event"] > 0
