"""GET /metrics: the status figures in Prometheus text format (prometheus_client writes it)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from profile_engine.server.runner import FoldState, FoldStatus

PREFIX = "profile_engine"


class _StatusCollector:
    """Turns one status snapshot into metric families."""

    def __init__(self, status: FoldStatus) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        s = self.status
        labels = ["topic", "partition"]
        next_offset = GaugeMetricFamily(
            f"{PREFIX}_projection_next_offset",
            "Next offset the projection will fold, committed with its rows",
            labels=labels,
        )
        end_offset = GaugeMetricFamily(
            f"{PREFIX}_log_end_offset", "Log end offset of the partition", labels=labels
        )
        lag = GaugeMetricFamily(
            f"{PREFIX}_consumer_lag", "Messages in the log not yet folded", labels=labels
        )
        for p in s.partitions:
            values = [s.topic, str(p.partition)]
            next_offset.add_metric(values, p.next_offset)
            if p.log_end_offset is not None:
                end_offset.add_metric(values, p.log_end_offset)
            if p.lag is not None:
                lag.add_metric(values, p.lag)
        yield from (next_offset, end_offset, lag)
        counters = s.counters
        for name, value, text in (
            ("events_consumed", counters.consumed, "Messages consumed since start"),
            ("events_folded", counters.folded, "Events folded since start"),
            ("events_duplicate", counters.duplicates, "Duplicate events skipped since start"),
            ("events_dead_lettered", counters.dead_lettered, "Dead letters since start"),
            ("batches", counters.batches, "Batches committed since start"),
        ):
            family = CounterMetricFamily(f"{PREFIX}_{name}", text, labels=["topic"])
            family.add_metric([s.topic], value)
            yield family
        restarts = CounterMetricFamily(
            f"{PREFIX}_fold_restarts", "Fold processes started again after dying, since start"
        )
        restarts.add_metric([], s.restarts)
        yield restarts
        yield _gauge("fold_rate_events_per_second", "Recent fold rate", s.fold_rate)
        if s.last_batch_at is not None:
            yield _gauge(
                "last_batch_timestamp_seconds",
                "When the last batch committed (Unix time)",
                s.last_batch_at.timestamp(),
            )
        if s.last_batch_events is not None:
            yield _gauge(
                "last_batch_events", "Messages the last batch covered", s.last_batch_events
            )
        running = s.state in (FoldState.CATCHING_UP, FoldState.FOLLOWING, FoldState.STARTING)
        yield _gauge("fold_up", "1 while the fold runs", 1.0 if running else 0.0)
        yield _gauge(
            "broker_up", "1 when the broker answered the last look", float(bool(s.broker_reachable))
        )
        yield _gauge("uptime_seconds", "Seconds since the server started", s.uptime_s)
        if s.memory is not None:
            yield from _memory(s.memory)


def _memory(memory: Mapping[str, int]) -> Iterator[Metric]:
    yield _gauge("duckdb_memory_limit_bytes", "DuckDB's memory limit", memory["limit_bytes"])
    yield _gauge(
        "duckdb_index_room_bytes",
        "Room for the lookup indexes in DuckDB's limit",
        memory["index_room_bytes"],
    )
    yield _gauge(
        "duckdb_index_reserve_bytes",
        "Memory the lookup indexes need to change, estimated from their rows",
        memory["index_reserve_bytes"],
    )
    reopens = CounterMetricFamily(
        f"{PREFIX}_projection_reopens", "Reopens of the projection to make room for its indexes"
    )
    reopens.add_metric([], memory["reopens"])
    yield reopens


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", text, value=value)


def render_metrics(status: FoldStatus) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatusCollector(status))
    return generate_latest(registry), CONTENT_TYPE_LATEST
