"""The consumer loop: log -> decode -> fold -> batch write (with offsets) in DuckDB.

Offsets live in DuckDB beside the projections they produced (no Kafka consumer group
commits), so a crash at any point neither loses nor double-applies an event: on start the
consumer seeks to the stored offsets and the fold state is restored from the same tables.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from kafka import KafkaProducer

from consumers.kafka_client import kafka_errors
from consumers.reader import DecodedRecord, KafkaReader, ReadPlan, Undecodable
from profile_engine.attributes import AttributeRegistry
from profile_engine.fold import FoldConfig, ProfileFold
from projections.store import DeadLetter, ProjectionStore, TopicOffset, prepare_batch
from projections.typed_traits import refresh_typed_traits_view

# Larger batches write each touched profile once for more events (a profile is often touched
# several times in a batch); 100k measured ~15% faster than 50k at 1M events, same memory.
DEFAULT_BATCH_SIZE = 100_000


@dataclass
class ConsumeStats:
    consumed: int = 0
    folded: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    lag: int = 0
    started: float = field(default_factory=time.monotonic)
    # Epoch seconds of the broker's last answer while it does not answer, else None.
    waiting_since: float | None = None

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def as_dict(self) -> dict[str, float | int]:
        secs = self.seconds
        return {
            "consumed": self.consumed,
            "folded": self.folded,
            "duplicates": self.duplicates,
            "dead_lettered": self.dead_lettered,
            "batches": self.batches,
            "lag": self.lag,
            "seconds": round(secs, 3),
            "events_per_s": round(self.consumed / secs, 1) if secs > 0 else 0.0,
        }


ProgressCallback = Callable[[ConsumeStats], None]


class FoldGc:
    """Garbage collection for a process that holds the fold state.

    The fold state is millions of long-lived, acyclic objects. Automatic collections would
    rescan them again and again (a third of the fold's time at 1M events), and even a young
    collection per batch scans everything the batch created (7 s of 54 at 1M). So automatic
    collection is off and each batch's survivors are frozen (moved out of the collector's
    sight at no cost). Folding makes no reference cycles (measured: a full collection after
    each batch finds none), so refcounting frees what it drops; a full collection every
    ``FULL_EVERY_EVENTS`` is only a safety net (it takes seconds over a large state).
    """

    FULL_EVERY_EVENTS = 5_000_000

    def __init__(self) -> None:
        self._events = 0

    def after_batch(self, events: int) -> None:
        self._events += events
        if self._events >= self.FULL_EVERY_EVENTS:
            self._events = 0
            gc.unfreeze()
            gc.collect()
        gc.freeze()


@contextmanager
def paused_full_gc() -> Iterator[FoldGc]:
    """Automatic garbage collection off while folding; see FoldGc."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield FoldGc()
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


class BackgroundCommitter:
    """Commits one prepared batch at a time on a worker thread.

    DuckDB releases the GIL while it executes, so the next batch folds while the previous
    one is written. At most one batch is in flight; a failure surfaces on the next call.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, work: Callable[[], None]) -> None:
        self.wait()

        def run() -> None:
            try:
                work()
            except BaseException as error:  # handed to the folding thread
                self._error = error

        self._thread = threading.Thread(target=run, name="duckdb-commit", daemon=True)
        self._thread.start()

    def settle(self) -> None:
        """Wait for the batch in flight while another error is already propagating."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._error = None

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


class FoldConsumer:
    """Folds one topic into one projection database."""

    def __init__(
        self,
        store: ProjectionStore,
        fold: ProfileFold,
        bootstrap_servers: str,
        topic: str,
        dead_letter_topic: str | None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        give_up_after: float | None = None,
    ) -> None:
        self.store = store
        self.fold = fold
        self.topic = topic
        self.dead_letter_topic = dead_letter_topic
        self.batch_size = batch_size
        self.give_up_after = give_up_after
        self._bootstrap = bootstrap_servers
        self._dlq_producer: KafkaProducer | None = None
        self._committer = BackgroundCommitter()
        self._gc = FoldGc()
        self.stats = ConsumeStats()

    def close(self) -> None:
        if self._dlq_producer is not None:
            self._dlq_producer.close()

    def plan(self, once: bool) -> ReadPlan:
        """Read from the stored offsets; the reader checks topics, gaps and end offsets."""
        return ReadPlan(
            self._bootstrap,
            self.topic,
            self.store.offsets(self.topic),
            once,
            (self.dead_letter_topic,) if self.dead_letter_topic else (),
            self.give_up_after,
        )

    def run(
        self,
        once: bool,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> ConsumeStats:
        """Fold until caught up with the end offsets seen at start (once) or forever."""
        with paused_full_gc() as self._gc:
            return self._run(once, progress, should_stop)

    def _run(
        self,
        once: bool,
        progress: ProgressCallback | None,
        should_stop: Callable[[], bool],
    ) -> ConsumeStats:
        plan = self.plan(once)
        next_offsets = dict(plan.stored_offsets)
        dead: list[DeadLetter] = []
        in_batch = 0
        reader = KafkaReader(plan, should_stop)
        try:
            for chunk in reader.chunks():
                _skip_unfoldable(next_offsets, reader.read_upto)
                if chunk is None:  # caught up, or the broker went or came back
                    # Dead letters reach their topic before their batch commits: while the
                    # broker is away, a batch that holds some waits for it.
                    if in_batch and (reader.waiting_since is None or not dead):
                        self._flush(next_offsets, dead)
                        dead, in_batch = [], 0
                    self._committer.wait()
                    self.stats.lag = reader.lag(next_offsets)
                    self.stats.waiting_since = reader.waiting_since
                    if progress:
                        progress(self.stats)
                    if should_stop():
                        break
                    continue
                for record in chunk:
                    next_offsets[record[0]] = record[1] + 1
                    self._fold_record(record, dead)
                in_batch += len(chunk)
                if in_batch >= self.batch_size:
                    self._flush(next_offsets, dead)
                    dead, in_batch = [], 0
                    self.stats.lag = reader.lag(next_offsets)
                    if progress:
                        progress(self.stats)
                    if should_stop():
                        break
            _skip_unfoldable(next_offsets, reader.read_upto)
            if in_batch:
                self._flush(next_offsets, dead)
            self._committer.wait()
        finally:
            reader.close()
            self._committer.settle()
        self.stats.lag = reader.lag(next_offsets)
        return self.stats

    def _fold_record(self, record: DecodedRecord, dead: list[DeadLetter]) -> None:
        self.stats.consumed += 1
        partition, offset, event = record
        if isinstance(event, Undecodable):
            dead.append(
                DeadLetter(
                    self.topic,
                    partition,
                    offset,
                    None,
                    event.key,
                    event.value,
                    event.reason,
                    event.timestamp_ms * 1000,
                )
            )
            self.stats.dead_lettered += 1
            return
        if self.fold.apply(event):
            self.stats.folded += 1
        else:
            self.stats.duplicates += 1

    def _flush(self, next_offsets: dict[int, int], dead: list[DeadLetter]) -> None:
        offsets = [TopicOffset(self.topic, p, o) for p, o in sorted(next_offsets.items())]
        # Built now, while the fold stands still; committed in the background.
        changes = self.fold.drain_changes()
        batch = prepare_batch(self.fold, changes, offsets, dead)
        letters = list(dead)

        def commit() -> None:
            # Dead letters reach their topic (acknowledged) before the transaction that
            # advances the offsets commits: a crash in between re-sends them (at-least-once
            # on that topic, keyed by source position), never loses them.
            if letters and self.dead_letter_topic:
                self._send_dead_letters(letters)
            self.store.commit(batch)

        self._committer.submit(commit)
        self.stats.batches += 1
        self._gc.after_batch(len(changes.applied_event_ids))

    def _send_dead_letters(self, dead: list[DeadLetter]) -> None:
        # A broker that went away while the batch was folded is a clear Transient error.
        with kafka_errors(self._bootstrap):
            if self._dlq_producer is None:
                self._dlq_producer = KafkaProducer(
                    bootstrap_servers=self._bootstrap, acks="all", enable_idempotence=True
                )
            futures = []
            for letter in dead:
                headers = [
                    ("source", letter.source.encode()),
                    ("partition", str(letter.partition).encode()),
                    ("offset", str(letter.offset).encode()),
                    ("reason", letter.reason.encode()[:1000]),
                ]
                futures.append(
                    self._dlq_producer.send(
                        self.dead_letter_topic,
                        key=f"{letter.source}/{letter.partition}/{letter.offset}".encode(),
                        value=letter.raw,
                        headers=headers,
                    )
                )
            self._dlq_producer.flush()
            for future in futures:
                future.get(timeout=30)


def _skip_unfoldable(next_offsets: dict[int, int], read_upto: dict[int, int]) -> None:
    """Move offsets past what was read but is no event (transaction markers, aborted)."""
    for partition, offset in read_upto.items():
        if offset > next_offsets.get(partition, 0):
            next_offsets[partition] = offset


def consume(
    db_path: str,
    bootstrap_servers: str,
    topic: str,
    dead_letter_topic: str | None,
    once: bool,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
    config: FoldConfig | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    registry: AttributeRegistry | None = None,
    give_up_after: float | None = None,
) -> ConsumeStats:
    with ProjectionStore(db_path) as store:
        if registry is not None:
            refresh_typed_traits_view(store.con, registry)
        fold = store.load_fold(config)
        consumer = FoldConsumer(
            store, fold, bootstrap_servers, topic, dead_letter_topic, batch_size, give_up_after
        )
        store.drop_indexes()
        try:
            return consumer.run(once=once, progress=progress, should_stop=should_stop)
        finally:
            consumer.close()
            store.create_indexes()
