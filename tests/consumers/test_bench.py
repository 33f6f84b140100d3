"""`bench fold`: the figures it prints add up."""

from __future__ import annotations

import io

import pytest

from consumers.bench import run_fold_benchmark


@pytest.mark.kafka
def test_bench_fold_accounts_for_every_event(kafka_bootstrap: str) -> None:
    result = run_fold_benchmark(400, 7, kafka_bootstrap, 150, io.StringIO())

    assert result["folded"] + result["duplicates"] + result["dead_lettered"] == 400
    assert result["fold_vs_raw"] == round(
        result["fold_events_per_s"] / result["raw_read_events_per_s"], 3
    )
    assert result["fold_cpu_us_per_event"] > 0
    assert result["peak_rss_mb"] > 0
