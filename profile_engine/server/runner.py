"""The seam between the server and whatever folds the log: a FoldRunner and its status.

The server starts a runner, asks it for a status snapshot whenever someone looks, and stops it
on shutdown. ``fold_adapter`` implements it with today's consumer; another pipeline only has
to provide the same three methods.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol


class FoldState(StrEnum):
    STARTING = "starting"  # loading the fold state, planning the read
    CATCHING_UP = "catching_up"  # behind the log end seen at the last look
    FOLLOWING = "following"  # caught up, waiting for new events
    WAITING = "waiting"  # a transient failure (broker down); retrying
    FAILED = "failed"  # needs an operator; the server still answers reads
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class PartitionLag:
    partition: int
    next_offset: int  # committed in the projection (the next event it will fold)
    log_end_offset: int | None  # None while the broker does not answer
    lag: int | None


def partition_lags(
    next_offsets: Mapping[int, int], ends: Mapping[int, int], ends_current: bool = True
) -> list[PartitionLag]:
    """Every partition either side knows, with its lag where the log's end is known;
    ``ends_current`` false: the ends are the last ones seen of a broker that no longer
    answers, shown as they were, and no lag is known."""
    return [
        PartitionLag(
            partition=p,
            next_offset=next_offsets.get(p, 0),
            log_end_offset=ends.get(p),
            lag=max(0, ends[p] - next_offsets.get(p, 0)) if p in ends and ends_current else None,
        )
        for p in sorted(set(next_offsets) | set(ends))
    ]


def total_lag(partitions: list[PartitionLag]) -> int | None:
    """The lag of all partitions; None when one is unknown (or none is known)."""
    lags = [p.lag for p in partitions]
    if not lags or any(lag is None for lag in lags):
        return None
    return sum(lag for lag in lags if lag is not None)


@dataclass(frozen=True, slots=True)
class FoldCounters:
    """Since the server started."""

    consumed: int = 0
    folded: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0


@dataclass(frozen=True, slots=True)
class FoldStatus:
    state: FoldState
    error: str | None
    topic: str
    group_id: str
    bootstrap_servers: str
    broker_reachable: bool | None  # None until the first look
    broker_error: str | None
    partitions: list[PartitionLag]
    counters: FoldCounters
    last_batch_at: datetime | None  # wall clock of the last committed batch
    last_batch_events: int | None  # messages it covered (folded, duplicates, dead letters)
    fold_rate: float  # messages consumed per second, recent window
    started_at: datetime
    uptime_s: float
    # DuckDB's memory as the server sized it: limit_bytes, index_room_bytes,
    # index_reserve_bytes, reopens (see projections.live.ServedMemory)
    memory: Mapping[str, int] | None = None
    restarts: int = 0  # fold processes started again after a death, since the server started

    @property
    def lag(self) -> int | None:
        return total_lag(self.partitions)

    def as_dict(self) -> dict[str, Any]:
        """The JSON document of GET /api/status."""
        return {
            "state": self.state.value,
            "error": self.error,
            "topic": self.topic,
            "group_id": self.group_id,
            "broker": {
                "bootstrap_servers": self.bootstrap_servers,
                "reachable": self.broker_reachable,
                "error": self.broker_error,
            },
            "lag": self.lag,
            "partitions": [asdict(p) for p in self.partitions],
            "since_start": asdict(self.counters),
            "last_batch": {
                "at": _iso(self.last_batch_at),
                "events": self.last_batch_events,
            },
            "fold_rate": round(self.fold_rate, 1),
            "started_at": _iso(self.started_at),
            "uptime_s": round(self.uptime_s, 1),
            "memory": None if self.memory is None else dict(self.memory),
            "fold_restarts": self.restarts,
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class FoldRunner(Protocol):
    """Folds the log into the live projection on threads of its own."""

    def start(self) -> None:
        """Begin folding in the background; returns at once."""

    def stop(self, timeout_s: float) -> bool:
        """Commit what is in hand and stop; False when it did not stop within the timeout."""

    def status(self) -> FoldStatus:
        """A consistent snapshot, cheap enough to call on every request."""


@dataclass
class RateMeter:
    """Events per second over a sliding window of (time, running total) samples."""

    window_s: float = 10.0
    _samples: deque[tuple[float, int]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def sample(self, total: int, now: float | None = None) -> None:
        moment = time.monotonic() if now is None else now
        with self._lock:
            self._samples.append((moment, total))
            while len(self._samples) > 2 and moment - self._samples[0][0] > self.window_s:
                self._samples.popleft()

    def rate(self) -> float:
        with self._lock:
            if len(self._samples) < 2:
                return 0.0
            (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
