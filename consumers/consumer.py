"""The consumer loop: log -> decode -> fold -> batch write (with offsets) in DuckDB.

Offsets live in DuckDB beside the projections they produced (no Kafka consumer group
commits), so a crash at any point neither loses nor double-applies an event: on start the
consumer seeks to the stored offsets and the fold state is restored from the same tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.codec import AvroCodec, DecodeError
from consumers.ordering import PartitionMerger
from profile_engine.fold import ProfileFold
from projections.store import DeadLetter, ProjectionStore, TopicOffset

DEFAULT_BATCH_SIZE = 20_000


class LogGapError(RuntimeError):
    """The log no longer holds offsets the projections need (retention deleted them)."""


class TopicMissingError(RuntimeError):
    pass


@dataclass
class ConsumeStats:
    consumed: int = 0
    folded: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    lag: int = 0
    started: float = field(default_factory=time.monotonic)

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


def kafka_consumer(bootstrap_servers: str) -> KafkaConsumer:
    """A bare consumer tuned for throughput; positions are managed by the caller."""
    return KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_min_bytes=1,
        fetch_max_wait_ms=100,
        max_poll_records=50_000,
        request_timeout_ms=30_000,
    )


def topic_partitions(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise TopicMissingError(
            f"topic {topic!r} does not exist; create it with `profile-engine topics create`"
        )
    return [TopicPartition(topic, p) for p in sorted(partitions)]


def check_log_holds(topic: str, needed: dict[int, int], earliest: dict[int, int]) -> None:
    """Refuse to fold when retention deleted offsets that the projections still need."""
    gaps = [
        f"partition {p} starts at offset {earliest[p]} but offset {needed[p]} is needed"
        for p in sorted(needed)
        if earliest.get(p, 0) > needed[p]
    ]
    if gaps:
        raise LogGapError(
            f"the log of {topic!r} no longer holds what the projections need "
            f"({'; '.join(gaps)}); events were lost to retention"
        )


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
    ) -> None:
        self.store = store
        self.fold = fold
        self.topic = topic
        self.dead_letter_topic = dead_letter_topic
        self.batch_size = batch_size
        self.codec = AvroCodec()
        self.consumer = kafka_consumer(bootstrap_servers)
        self._bootstrap = bootstrap_servers
        self._dlq_producer: KafkaProducer | None = None
        self.stats = ConsumeStats()

    def close(self) -> None:
        self.consumer.close()
        if self._dlq_producer is not None:
            self._dlq_producer.close()

    def run(
        self,
        once: bool,
        progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> ConsumeStats:
        """Fold until caught up with the end offsets seen at start (once) or forever."""
        tps = topic_partitions(self.consumer, self.topic)
        self.consumer.assign(tps)
        stored = self.store.offsets(self.topic)
        needed = {tp.partition: stored.get(tp.partition, 0) for tp in tps}
        earliest = {tp.partition: o for tp, o in self.consumer.beginning_offsets(tps).items()}
        check_log_holds(self.topic, needed, earliest)
        for tp in tps:
            self.consumer.seek(tp, needed[tp.partition])
        ends = {tp.partition: o for tp, o in self.consumer.end_offsets(tps).items()}
        merger = PartitionMerger(ends, needed)
        next_offsets = dict(needed)
        dead: list[DeadLetter] = []
        in_batch = 0
        while not should_stop():
            if merger.caught_up():
                if in_batch:
                    self._flush(next_offsets, dead)
                    dead, in_batch = [], 0
                self.stats.lag = 0
                if progress:
                    progress(self.stats)
                if once:
                    break
            polled = self.consumer.poll(timeout_ms=200, update_offsets=True)
            for tp, records in polled.items():
                merger.add(tp.partition, records)
            if not once:
                for tp in tps:
                    high = self.consumer.highwater(tp)
                    if high is not None:
                        merger.update_end(tp.partition, high)
            for record in merger.drain():
                next_offsets[record.partition] = record.offset + 1
                self._fold_record(record, dead)
                in_batch += 1
                if in_batch >= self.batch_size:
                    self._flush(next_offsets, dead)
                    dead, in_batch = [], 0
                    self.stats.lag = sum(
                        max(0, merger.ends[p] - next_offsets[p]) for p in next_offsets
                    )
                    if progress:
                        progress(self.stats)
        if in_batch:
            self._flush(next_offsets, dead)
        return self.stats

    def _fold_record(self, record: object, dead: list[DeadLetter]) -> None:
        self.stats.consumed += 1
        value: bytes = record.value  # type: ignore[attr-defined]
        try:
            event = self.codec.decode(value)
        except DecodeError as error:
            dead.append(
                DeadLetter(
                    source=self.topic,
                    partition=record.partition,  # type: ignore[attr-defined]
                    offset=record.offset,  # type: ignore[attr-defined]
                    line_number=None,
                    key=record.key,  # type: ignore[attr-defined]
                    raw=value,
                    reason=str(error),
                    timestamp_us=record.timestamp * 1000,  # type: ignore[attr-defined]
                )
            )
            self.stats.dead_lettered += 1
            return
        if self.fold.apply(event):
            self.stats.folded += 1
        else:
            self.stats.duplicates += 1

    def _flush(self, next_offsets: dict[int, int], dead: list[DeadLetter]) -> None:
        # Dead letters reach their topic (acknowledged) before the transaction that advances
        # the offsets commits: a crash in between re-sends them (at-least-once on that
        # topic, keyed by source position), never loses them.
        if dead and self.dead_letter_topic:
            self._send_dead_letters(dead)
        offsets = [TopicOffset(self.topic, p, o) for p, o in sorted(next_offsets.items())]
        self.store.write_batch(self.fold, self.fold.drain_changes(), offsets, dead)
        self.stats.batches += 1

    def _send_dead_letters(self, dead: list[DeadLetter]) -> None:
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
                    self.dead_letter_topic,  # type: ignore[arg-type]
                    key=f"{letter.source}/{letter.partition}/{letter.offset}".encode(),
                    value=letter.raw,
                    headers=headers,
                )
            )
        self._dlq_producer.flush()
        for future in futures:
            future.get(timeout=30)


def consume(
    db_path: str,
    bootstrap_servers: str,
    topic: str,
    dead_letter_topic: str | None,
    once: bool,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
) -> ConsumeStats:
    with ProjectionStore(db_path) as store:
        fold = store.load_fold()
        consumer = FoldConsumer(
            store, fold, bootstrap_servers, topic, dead_letter_topic, batch_size
        )
        try:
            return consumer.run(once=once, progress=progress)
        finally:
            consumer.close()
