"""FoldRunner for the pipeline ``consume`` runs (consumers.consumer.consume_into), writing
through the live projection's connection so that readers share its DuckDB instance.

The server sees only ``FoldRunner``. The fold is exactly ``consume``'s (same offsets table,
same dead letters), run in a process of its own (profile_engine.server.fold_process) whose
statements this process runs on the projection's connection, on the fold thread
(projections.remote_connection): the fold's Python does not take the GIL from the readers.
The lookup indexes stay in place (the fold keeps them valid, readers use them while it
writes); after each committed batch ``LiveProjection.changed`` moves the version cached
answers are checked against, and ``LogWatcher.committed`` records the projection's next
offsets (status, consumer group). Once the indexes outgrow the room DuckDB's limit was sized
with, the fold stops after the batch, the projection is reopened with a limit sized again
(``LiveProjection.reopen``), and the fold starts again from the offsets it committed.

A fold process that dies without a word (killed by an operator or the out-of-memory killer, a
crash in a library) is started again the same way, after a pause that doubles each time,
until it has died more than ``max_restarts`` times in a row, with no batch committed and no
minute of running in between: then the same batch would kill it again, and the fold is left
failed for an operator.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

from consumers.group_offsets import DEFAULT_GROUP_ID, GroupOffsets
from consumers.kafka_client import BrokerUnavailable
from consumers.key_store import SealingConfig
from consumers.pipeline import FoldStats
from profile_engine.attributes import AttributeRegistry
from profile_engine.errors import NeedsOperator, ProfileEngineError, Transient, first_line
from profile_engine.fold import FoldConfig
from profile_engine.server.fold_process import FoldEnd, FoldJob, run_fold_process
from profile_engine.server.runner import (
    FoldCounters,
    FoldState,
    FoldStatus,
    PartitionLag,
    RateMeter,
    partition_lags,
)
from projections.live import LiveProjection, committed_offsets
from projections.remote_connection import ConnectionHost

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5.0
# The fold's niceness (0-19 above the server's): its process (and the decode processes it
# starts) and the thread that runs its statements here.
FOLD_NICENESS = 10
# Smaller batches than consume's (consumers.pipeline.DEFAULT_BATCH_SIZE): each commit is what
# readers see next, and what the fold still does in one stretch with the GIL held (a batch's
# young collection, freeing its largest structures) is shorter. Measured in the README's
# bench_serve rows.
SERVE_BATCH_SIZE = 25_000
WATCH_EVERY_S = 1.0
# A dead fold process is started again after RESTART_AFTER_S, doubled after each death in a
# row, up to RESTART_AFTER_MAX_S.
RESTART_AFTER_S = 1.0
RESTART_AFTER_MAX_S = 60.0
DEFAULT_MAX_RESTARTS = 5
# A fold process that ran this long before it died was not in a loop (on a quiet topic no
# batch commits between deaths): its death counts as the first in a row.
STABLE_AFTER_S = 60.0


@dataclass(frozen=True)
class FoldOptions:
    bootstrap_servers: str
    topic: str
    dead_letter_topic: str | None
    group_id: str = DEFAULT_GROUP_ID
    batch_size: int = SERVE_BATCH_SIZE
    config: FoldConfig | None = None
    registry: AttributeRegistry | None = None
    # A master key and the key store, as consume takes them: sealed events are opened, an
    # erasure destroys data keys before its batch commits, the projection's key is checked.
    sealing: SealingConfig | None = None
    # Deaths of the fold process in a row (no batch committed, no STABLE_AFTER_S of running
    # between them) answered by starting it again; 0: the first leaves the fold failed.
    max_restarts: int = DEFAULT_MAX_RESTARTS


class LogWatcher:
    """Knows where the projection and the log are, and mirrors offsets to the consumer group.

    ``committed`` is called on the fold's commit thread; a thread of its own talks to Kafka
    (kafka-python clients are not shared between threads), so a slow or absent broker never
    holds up a commit.
    """

    def __init__(self, options: FoldOptions, start_offsets: dict[int, int]) -> None:
        self._options = options
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.next_offsets = dict(start_offsets)
        self.end_offsets: dict[int, int] = {}
        self.broker_reachable: bool | None = None
        self.broker_error: str | None = None
        self.last_batch_at: datetime | None = None
        self.last_batch_events: int | None = None
        self._group_committed: dict[int, int] = {}
        self._thread = threading.Thread(target=self._run, name="log-watcher", daemon=True)
        self._sample_rate: Callable[[], None] = lambda: None

    def start(self, sample_rate: Callable[[], None]) -> None:
        self._sample_rate = sample_rate
        self._thread.start()

    def committed(self, next_offsets: dict[int, int]) -> None:
        """A batch committed: the projection now stands at ``next_offsets``."""
        with self._lock:
            moved = sum(o - self.next_offsets.get(p, 0) for p, o in next_offsets.items())
            self.next_offsets.update(next_offsets)
            self.last_batch_at = datetime.now(UTC)
            self.last_batch_events = moved
        self._wake.set()

    def partitions(self) -> list[PartitionLag]:
        with self._lock:
            return partition_lags(self.next_offsets, self.end_offsets, bool(self.broker_reachable))

    def stop(self, timeout_s: float) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        client: GroupOffsets | None = None
        while True:
            stopping = self._stopping.is_set()
            self._sample_rate()
            try:
                if client is None:
                    client = GroupOffsets(
                        self._options.bootstrap_servers,
                        self._options.topic,
                        self._options.group_id,
                    )
                self._commit_group(client)
                if not stopping:
                    ends = client.end_offsets()
                    with self._lock:
                        self.end_offsets = ends
                self._broker_answered(None)
            except BrokerUnavailable as error:
                self._broker_answered(str(error))
            except ProfileEngineError:
                # The broker answered (e.g. "no such topic"): the fold reports what is wrong.
                self._broker_answered(None)
            if stopping:
                break
            self._wake.wait(WATCH_EVERY_S)
            self._wake.clear()
        if client is not None:
            client.close()

    def _commit_group(self, client: GroupOffsets) -> None:
        with self._lock:
            offsets = dict(self.next_offsets)
        if offsets and offsets != self._group_committed:
            client.commit(offsets)
            self._group_committed = offsets

    def _broker_answered(self, error: str | None) -> None:
        with self._lock:
            self.broker_reachable = error is None
            self.broker_error = error


class RateSampler:
    """Feeds the fold-rate meter from the running total of consumed messages."""

    def __init__(self, runner: ConsumerFoldRunner) -> None:
        self._runner = runner

    def __call__(self) -> None:
        self._runner.rate.sample(self._runner.counters().consumed)


class ConsumerFoldRunner:
    """Runs FoldConsumer in follow mode on a thread; retries transient failures."""

    def __init__(self, projection: LiveProjection, options: FoldOptions) -> None:
        self._projection = projection
        self._options = options
        with projection.reading() as con:
            start_offsets = committed_offsets(con, options.topic)
        self.watcher = LogWatcher(options, start_offsets)
        self.rate = RateMeter()
        self._stop = threading.Event()
        self._stop_fold = mp.get_context("spawn").Event()  # the fold process's copy
        # Set after a commit once the lookup indexes outgrew the room DuckDB's limit was sized
        # with: the fold stops after that batch, the projection is reopened with a limit sized
        # again, and the fold goes on from the offsets it committed.
        self._make_room = threading.Event()
        self._lock = threading.Lock()
        self._state = FoldState.STARTING
        self._error: str | None = None
        self._finished: FoldCounters = FoldCounters()  # of folds that ended (retries)
        self._restarts = 0  # fold processes started again after a death, since start
        self._restart_policy = RestartPolicy(options.max_restarts)
        self._current: FoldStats | None = None
        self._started_at = datetime.now(UTC)
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="fold", daemon=True)

    # -- FoldRunner ---------------------------------------------------------------------------

    def start(self) -> None:
        self.watcher.start(RateSampler(self))
        self._thread.start()

    def stop(self, timeout_s: float) -> bool:
        self._stop.set()
        self._stop_fold.set()
        self._thread.join(timeout_s)
        stopped = not self._thread.is_alive()
        # A last commit to the consumer group, unless the broker is gone (then not waited for).
        self.watcher.stop(timeout_s=5.0 if self.watcher.broker_reachable else 0.5)
        return stopped

    def status(self) -> FoldStatus:
        partitions = self.watcher.partitions()
        with self._lock:
            state, error = self._state, self._error
        watcher = self.watcher
        if state in (FoldState.FOLLOWING, FoldState.CATCHING_UP) and (
            watcher.broker_reachable is False
        ):
            # The fold process's reader waits for the broker meanwhile: nothing is followed.
            state, error = (
                FoldState.WAITING,
                error or f"waiting for the broker: {watcher.broker_error}",
            )
        elif state == FoldState.FOLLOWING and any(p.lag for p in partitions):
            state = FoldState.CATCHING_UP
        return FoldStatus(
            state=state,
            error=error,
            topic=self._options.topic,
            group_id=self._options.group_id,
            bootstrap_servers=self._options.bootstrap_servers,
            broker_reachable=watcher.broker_reachable,
            broker_error=watcher.broker_error,
            partitions=partitions,
            counters=self.counters(),
            last_batch_at=watcher.last_batch_at,
            last_batch_events=watcher.last_batch_events,
            fold_rate=self.rate.rate(),
            started_at=self._started_at,
            uptime_s=time.monotonic() - self._started,
            memory=asdict(self._projection.memory),
            restarts=self._restarts,
        )

    def counters(self) -> FoldCounters:
        with self._lock:
            current, finished = self._current, self._finished
        return finished if current is None else _add(finished, current)

    # -- the fold thread ----------------------------------------------------------------------

    def _run(self) -> None:
        yield_to_readers()
        while not self._stop.is_set():
            self._set_state(FoldState.STARTING, None)
            if not self._broker_answers():
                break
            try:
                self._fold()
                if self._make_room.is_set() and self._reopened():
                    continue
                self._set_state(FoldState.STOPPED, None)
                return
            except FoldProcessDied as error:
                if not self._restart_after(error):
                    return
            except Transient as error:
                self._set_state(FoldState.WAITING, f"{error}; retrying every {RETRY_AFTER_S:g} s")
                self._stop.wait(RETRY_AFTER_S)
            except ProfileEngineError as error:
                self._set_state(FoldState.FAILED, str(error))
                return
            except Exception as error:  # a bug: keep serving reads, say what happened
                log.exception("the fold stopped")
                self._set_state(FoldState.FAILED, f"{type(error).__name__}: {first_line(error)}")
                return
        self._set_state(FoldState.STOPPED, None)

    def _restart_after(self, death: FoldProcessDied) -> bool:
        """Wait to start the fold process again after its death (the loop ends there if the
        server stops meanwhile); False, and the fold left failed, once it died too often in
        a row."""
        with self._lock:
            pause = self._restart_policy.pause_after(death.lived_s)
            deaths = self._restart_policy.deaths_in_a_row
        limit = self._restart_policy.limit
        if pause is None:
            in_a_row = f"{deaths} times in a row, committing no batch; " if limit else ""
            self._set_state(
                FoldState.FAILED,
                f"{death} ({in_a_row}not started again: restart the server once the cause is "
                "found, see its log)",
            )
            return False
        log.warning("%s; starting it again in %g s (%d of %d)", death, pause, deaths, limit)
        self._set_state(
            FoldState.WAITING,
            f"{death}; starting it again in {pause:g} s ({deaths} of {limit} in a row)",
        )
        if not self._stop.wait(pause):
            with self._lock:
                self._restarts += 1
        return True

    def _reopened(self) -> bool:
        """Reopen the projection (see LiveProjection.reopen), trying again while reads are in
        flight; False when the server stopped first."""
        self._set_state(FoldState.STARTING, None)
        while not self._stop.is_set():
            if self._projection.reopen():
                self._make_room.clear()
                return True
        return False

    def _broker_answers(self) -> bool:
        """Wait, interruptibly, until the watcher has reached the broker; False when stopped.

        The watcher finds out sooner than the fold's reader, and is never waited for.
        """
        while not self._stop.is_set():
            if self.watcher.broker_reachable:
                return True
            if self.watcher.broker_reachable is False:
                self._set_state(FoldState.WAITING, f"{self.watcher.broker_error}; retrying")
            self._stop.wait(0.2)
        return False

    def _fold(self) -> None:
        """One fold process (profile_engine.server.fold_process), its statements run here on
        the projection's connection until it ends; its error, if any, raised here."""
        options = self._options
        projection = self._projection
        job = FoldJob(str(projection.db_path), options, FOLD_NICENESS)
        ended: list[FoldEnd] = []

        def keep(stats: FoldStats) -> None:
            with self._lock:
                self._current = stats

        def committed(batch: tuple[dict[int, int], FoldStats]) -> bool:
            next_offsets, stats = batch
            with self._lock:
                self._restart_policy.committed()
            keep(stats)  # before the offsets: a status never shows offsets its counters lack
            projection.changed()
            self.watcher.committed(next_offsets)
            if projection.outgrown():
                self._make_room.set()
                return True
            return False

        host = ConnectionHost(
            projection.connection,
            calls={"progress": keep, "committed": committed, "finished": ended.append},
            contexts={"commit": projection.committing},
        )
        context = mp.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(
            target=run_fold_process, args=(theirs, job, self._stop_fold), name="fold"
        )
        self._set_state(FoldState.FOLLOWING, None)  # the status says "catching up" while behind
        started = time.monotonic()
        try:
            process.start()
            theirs.close()
            host.serve(ours)
        finally:
            ours.close()
            process.join()
            end = ended[0] if ended else FoldEnd(self._current)
            with self._lock:
                if end.stats is not None:
                    self._finished = _add(self._finished, end.stats)
                self._current = None
        if not ended:
            raise FoldProcessDied(
                f"the fold process ended unexpectedly (exit code {process.exitcode})",
                lived_s=time.monotonic() - started,
            )
        if end.error_kind == "transient":
            raise FoldProcessTransient(end.error or "")
        if end.error_kind is not None:
            raise FoldProcessEnded(end.error or "")

    def _set_state(self, state: FoldState, error: str | None) -> None:
        with self._lock:
            self._state, self._error = state, error


@dataclass
class RestartPolicy:
    """When a fold process that died is started again: after RESTART_AFTER_S, doubled for
    each death in a row up to RESTART_AFTER_MAX_S, until more than ``limit`` deaths in a row.
    A committed batch, or a process that ran STABLE_AFTER_S before it died, ends a row."""

    limit: int
    deaths_in_a_row: int = 0

    def committed(self) -> None:
        self.deaths_in_a_row = 0

    def pause_after(self, lived_s: float) -> float | None:
        """Seconds to wait before starting it again after a death ``lived_s`` after its
        start; None: leave the fold failed."""
        if lived_s >= STABLE_AFTER_S:
            self.deaths_in_a_row = 0
        self.deaths_in_a_row += 1
        if self.deaths_in_a_row > self.limit:
            return None
        return float(min(RESTART_AFTER_S * 2 ** (self.deaths_in_a_row - 1), RESTART_AFTER_MAX_S))


class FoldProcessTransient(Transient):
    """The fold process stopped on a transient error (its text): the fold starts again."""


class FoldProcessEnded(NeedsOperator):
    """The fold process stopped on an error (its text) that needs an operator."""


class FoldProcessDied(Transient):
    """The fold process died without saying why (a signal, a crash), ``lived_s`` after it
    started: started again, up to ``FoldOptions.max_restarts`` times in a row."""

    def __init__(self, message: str, lived_s: float) -> None:
        super().__init__(message)
        self.lived_s = lived_s


def _add(counters: FoldCounters, stats: FoldStats) -> FoldCounters:
    return replace(
        counters,
        consumed=counters.consumed + stats.consumed,
        folded=counters.folded + stats.folded,
        duplicates=counters.duplicates + stats.duplicates,
        dead_lettered=counters.dead_lettered + stats.dead_lettered,
        batches=counters.batches + stats.batches,
    )


def yield_to_readers() -> None:
    """Lower the calling thread's CPU priority (Linux: per thread): the server's answers go
    first and the fold takes what they leave, so a reader does not wait behind a batch."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), FOLD_NICENESS)
