"""The runner seam's small parts: the fold-rate meter and the status document."""

from __future__ import annotations

from datetime import UTC, datetime

from profile_engine.server.runner import (
    FoldCounters,
    FoldState,
    FoldStatus,
    PartitionLag,
    RateMeter,
)
from profile_engine.server.security import _host_name, is_loopback


def test_the_rate_is_taken_over_a_sliding_window() -> None:
    meter = RateMeter(window_s=10)
    assert meter.rate() == 0.0
    meter.sample(0, now=100.0)
    meter.sample(5_000, now=101.0)
    assert meter.rate() == 5_000.0
    meter.sample(5_000, now=120.0)  # idle: the old samples leave the window
    meter.sample(5_000, now=121.0)
    assert meter.rate() == 0.0


def status(*lags: int | None) -> FoldStatus:
    moment = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    return FoldStatus(
        state=FoldState.FOLLOWING, error=None, topic="t", group_id="g",
        bootstrap_servers="b:1", broker_reachable=True, broker_error=None,
        partitions=[PartitionLag(p, 10, None if lag is None else 10 + lag, lag)
                    for p, lag in enumerate(lags)],
        counters=FoldCounters(consumed=3, folded=2, duplicates=0, dead_lettered=1, batches=1),
        last_batch_at=moment, last_batch_events=3, fold_rate=12.345, started_at=moment,
        uptime_s=5.0,
    )  # fmt: skip


def test_the_status_document_sums_the_lag_unless_a_partition_is_unknown() -> None:
    document = status(1, 2).as_dict()
    assert document["lag"] == 3
    assert document["last_batch"] == {"at": "2026-03-01T10:00:00Z", "events": 3}
    assert document["since_start"]["dead_lettered"] == 1 and document["fold_rate"] == 12.3
    assert status(1, None).as_dict()["lag"] is None


def test_loopback_names_and_host_headers() -> None:
    for host in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "10.0.0.1", "evil.example", "localhost.evil.example", ""):
        assert not is_loopback(host), host
    assert _host_name("[::1]:8321") == "::1"
    assert _host_name("localhost:8321") == "localhost"
    assert _host_name("127.0.0.1") == "127.0.0.1"
