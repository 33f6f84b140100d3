"""The benchmark scripts run end to end at tiny sizes and print figures that add up.

Not timed tests: nothing here asserts a speed, only that every figure is there and that the
figures agree with each other (rates with counts and seconds, percentiles in order, every
lookup found through an index).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
# Tables the profile page reads by key; each has an index in projections/indexes.sql.
LOOKUP_TABLES = {"identifiers", "profiles", "profile_merges", "events", "traits", "subscriptions"}


def run_script(name: str, *args: str, env: dict[str, str] | None = None) -> list[Any]:
    """Run benchmarks/<name> to its end; the JSON it prints (one document or JSON Lines)."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout.strip()
    if text.startswith("{\n"):
        return [json.loads(text)]
    return [json.loads(line) for line in text.splitlines()]


def check_latency(figures: dict[str, Any], runs: int) -> None:
    assert figures["runs"] == runs
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]


def check_read_path(result: dict[str, Any], lookups: int, counts_runs: int) -> None:
    assert result["counts_first_ms"] > 0
    check_latency(result["counts"], counts_runs - 1)
    check_latency(result["profile_lookup"], lookups)
    if "profile_lookup_again" in result:
        check_latency(result["profile_lookup_again"], lookups)
    assert result["lookups"] == lookups
    assert result["lookups_merged_ids"] == round(lookups / 10)
    # Every sampled identifier and merged-away id belongs to a live profile.
    assert result["lookups_found"] == lookups
    scans = result["lookup_scans"]
    assert set(scans["index"]) >= LOOKUP_TABLES
    assert scans["unindexed_reads"] == []


def test_bench_scale_reports_each_size_and_the_targets(
    tmp_path: Path, bench_scale: ModuleType
) -> None:
    output = run_script(
        "bench_scale.py",
        "--events", "1500,3000", "--lookups", "40", "--counts-runs", "6", "--follow", "500",
        "--work-dir", str(tmp_path),
    )  # fmt: skip

    *results, last = output
    assert [r["events"] for r in results] == [1500, 3000]
    for result in results:
        events = result["events"]
        assert result["consumed"] == events
        assert result["folded"] + result["duplicates"] + result["dead_lettered"] == events
        assert result["events_per_s"] == pytest.approx(events / result["rebuild_seconds"], 0.01)
        assert 0 < result["fold_seconds"] < result["rebuild_seconds"]
        assert result["rebuild_cpu_us_per_event"] == pytest.approx(
            result["rebuild_cpu_seconds"] * 1e6 / events, 0.01
        )
        assert result["generate_seconds"] > 0
        assert result["events_file_mb"] > 0
        assert result["db_mb"] > 0
        assert result["rss_samples"] >= 1
        assert result["peak_tree_rss_mb"] > 0
        assert result["peak_process_rss_mb"] > 0
        check_read_path(result, lookups=40, counts_runs=6)
        assert "profile_lookup_again" in result
        followed = result["follow"]  # 500 more events, folded as consume folds them
        assert followed["events"] == 500
        assert followed["events_per_s"] == pytest.approx(500 / followed["seconds"], 0.01)
        assert followed["peak_process_rss_mb"] > 0
    summary = last["summary"]
    assert summary["sizes"] == [1500, 3000]
    small, large = results
    assert summary["peak_rss_growth"] == {
        "3000/1500": round(large["peak_tree_rss_mb"] / small["peak_tree_rss_mb"], 3)
    }
    # None of the sizes ran, so no target is judged.
    assert len(summary["targets"]) == len(bench_scale.TARGETS) + 1  # and the RSS ratio
    assert all(t["value"] is None and t["met"] is None for t in summary["targets"])
    assert list(tmp_path.iterdir()) == []  # the generated files and databases are gone


@pytest.fixture
def bench_scale(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_scale

    return bench_scale


def fake_result(
    events: int,
    peak_mb: float,
    seconds: float,
    p50: float,
    p99: float,
    as_of_p50_ms: float = 0.0,
    daily_p50_s: float = 0.0,
) -> dict:
    return {
        "events": events,
        "peak_tree_rss_mb": peak_mb,
        "rebuild_seconds": seconds,
        "counts": {"p50_ms": p50},
        "profile_lookup": {"p99_ms": p99},
        "history": {"as_of_p50_ms": as_of_p50_ms, "daily_p50_s": daily_p50_s},
    }


def test_bench_scale_judges_each_target_at_its_size(bench_scale: ModuleType) -> None:
    results = [
        fake_result(500_000, 500.0, 9.0, 20.0, 2.0),
        fake_result(2_000_000, 610.0, 51.0, 30.0, 3.0),
        fake_result(10_000_000, 2000.0, 300.0, 101.0, 4.0, as_of_p50_ms=480.0, daily_p50_s=3.2),
    ]

    summary = bench_scale.summarise(results)

    verdicts = {t["target"]: (t["value"], t["met"]) for t in summary["targets"]}
    assert verdicts == {
        "peak RSS at 10M events <= 2048 MB": (2000.0, True),
        "rebuild of 2M events <= 50 s": (51.0, False),
        "counts p50 at 10M events <= 100 ms": (101.0, False),
        "lookup p99 at 10M events <= 5 ms": (4.0, True),
        "counts --as-of p50 at 10M events <= 500 ms": (480.0, True),
        "counts --daily for the year at 10M events <= 3 s": (3.2, False),
        "peak RSS at 2M <= 1.2 x peak RSS at 500k": (1.22, False),
    }
    assert summary["peak_rss_growth"] == {"2000000/500000": 1.22, "10000000/500000": 4.0}


def test_bench_queries_builds_a_consistent_projection_and_looks_up_by_index(
    tmp_path: Path,
) -> None:
    db = tmp_path / "bench.duckdb"

    (result,) = run_script(
        "bench_queries.py", "--profiles", "3000", "--lookups", "60", "--db", str(db)
    )

    assert result["profiles"] == 3000
    assert result["identifiers"] > result["profiles"]
    assert result["merges"] == 3000 // 20
    assert result["build_seconds"] > 0 and result["db_mb"] > 0
    check_read_path(result, lookups=60, counts_runs=21)
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert_reachability_inputs_match_identifiers(con)
    finally:
        con.close()


def assert_reachability_inputs_match_identifiers(con: duckdb.DuckDBPyConnection) -> None:
    """The generated per-profile inputs give the counts the identifiers themselves give."""
    from_inputs = dict(con.execute("SELECT channel, reachable FROM reachability_counts").fetchall())
    from_identifiers = dict(
        con.execute(
            "SELECT channel, count(DISTINCT profile_id) FROM identifier_reachability"
            " WHERE eligible GROUP BY channel"
        ).fetchall()
    )
    assert {c: from_inputs[c] for c in ("email", "sms", "push")} == from_identifiers
    assert all(from_identifiers.values())  # every channel has reachable profiles


@pytest.mark.kafka
def test_bench_fold_compares_the_fold_with_the_raw_read(kafka_bootstrap: str) -> None:
    env = {**os.environ, "PROFILE_ENGINE_BOOTSTRAP_SERVERS": kafka_bootstrap}

    (result,) = run_script("bench_fold.py", "--events", "400", "--batch-size", "150", env=env)

    assert result["events"] == 400
    assert result["folded"] + result["duplicates"] + result["dead_lettered"] == 400
    # The rates are computed from unrounded seconds; the printed seconds are rounded.
    assert result["fold_events_per_s"] == pytest.approx(400 / result["fold_seconds"], 0.02)
    assert result["raw_read_events_per_s"] > 0
    # fold_vs_raw comes from the unrounded rates; the printed rates are rounded.
    assert result["fold_vs_raw"] == pytest.approx(
        result["fold_events_per_s"] / result["raw_read_events_per_s"], rel=0.01, abs=0.002
    )
    assert result["peak_rss_mb"] > 0 and result["db_mb"] > 0


def test_bench_gil_reports_the_probe_and_the_folds_collections() -> None:
    (result,) = run_script(
        "bench_gil.py", "--profiles", "2000", "--events", "3000", "--batch-size", "1000"
    )
    assert result["consumed"] == result["events"] == 3000
    late = result["probe_late"]
    assert late["wakes"] > 0
    assert late["p50_ms"] <= late["p99_ms"] <= late["p999_ms"] <= late["max_ms"]
    # A young collection after each batch but the last, the full one at the end.
    generations = [c["generation"] for c in result["collections"]]
    assert generations[-1] == 2 and generations.count(1) >= 1
    # max_ms is rounded to 0.1 ms: a stall just over the threshold may print as equal to it
    assert all(s["count"] > 0 and s["max_ms"] >= result["stalls_over_ms"] for s in result["stalls"])


def test_bench_commit_reads_runs_both_ways_and_times_each_commit() -> None:
    (result,) = run_script(
        "bench_commit_reads.py", "--events", "8000", "--tail", "4000", "--readers", "2",
        "--batch-size", "2000", "--rounds", "1",
    )  # fmt: skip
    runs = result["runs"]
    assert [r["way"] for r in runs] == ["unprimed", "primed"]
    for run in runs:
        assert run["reads"] > 0
        assert 0 < run["p50_ms"] <= run["p90_ms"] <= run["p99_ms"] <= run["max_ms"]
        assert len(run["commits_ms"]) == 2  # the tail's 4,000 events in batches of 2,000
        assert 0 <= run["slowest_8_overlapping_a_commit"] <= min(8, run["reads"])
        assert run["fold_thread_cpu_s"] > 0
