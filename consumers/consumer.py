"""`consume`: follow the topic from the offsets stored in the projection, through the pipeline.

Offsets live in DuckDB beside the rows they produced (consumer_offsets, one transaction per
batch), so a crash at any point neither loses nor double-applies an event: on start the
consumer seeks to the stored offsets. Nothing else is restored: the fold pages in what each
batch needs (see consumers/pipeline.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from kafka import KafkaProducer

from consumers.group_offsets import DEFAULT_GROUP_ID, GroupMirror
from consumers.kafka_client import kafka_errors
from consumers.key_store import KeyStore, SealingConfig
from consumers.pipeline import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_WAIT_S,
    FoldStats,
    Pipeline,
    PipelineOptions,
    ProgressCallback,
)
from consumers.reader import ReadPlan
from consumers.sources import KafkaSource
from profile_engine.attributes import AttributeRegistry
from profile_engine.fold import FoldConfig
from profile_engine.rules import EventTimePolicy
from projections.connection import ProjectionLock
from projections.store import DeadLetter, ProjectionStore, TopicOffset
from projections.typed_traits import refresh_typed_traits_view

ConsumeStats = FoldStats  # the summary `consume` and `rebuild` print


class DeadLetterTopic:
    """Sends dead letters to their topic and waits for the broker's acknowledgement."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.topic = topic
        self._bootstrap = bootstrap_servers
        self._producer: KafkaProducer | None = None

    def __call__(self, letters: Sequence[DeadLetter]) -> None:
        with kafka_errors(self._bootstrap):
            if self._producer is None:
                self._producer = KafkaProducer(
                    bootstrap_servers=self._bootstrap, acks="all", enable_idempotence=True
                )
            futures = [
                self._producer.send(
                    self.topic,
                    key=f"{x.source}/{x.partition}/{x.offset}".encode(),
                    value=x.raw,
                    headers=[
                        ("source", x.source.encode()),
                        ("partition", str(x.partition).encode()),
                        ("offset", str(x.offset).encode()),
                        ("reason", x.reason.encode()[:1000]),
                    ],
                )
                for x in letters
            ]
            self._producer.flush()
            for future in futures:
                future.get(timeout=30)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()


@dataclass(frozen=True)
class ConsumeOptions:
    once: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    max_wait_s: float = DEFAULT_MAX_WAIT_S
    progress: ProgressCallback | None = None
    should_stop: Callable[[], bool] = lambda: False
    # After each commit: the offsets committed and the running counters, which include the batch.
    after_commit: Callable[[list[TopicOffset], FoldStats], None] | None = None
    give_up_after: float | None = None  # seconds without the broker before failing
    # Offsets are mirrored to this consumer group after each batch, for Kafka's own tools.
    group_id: str | None = DEFAULT_GROUP_ID
    # The event-time window's bounds when the projection is created (None: the defaults).
    time_policy: EventTimePolicy | None = None
    # A master key and the key store: the projection is keyed, sealed events are opened and
    # erasures destroy data keys (README "Erasure that reaches the log").
    sealing: SealingConfig | None = None


def consume_into(
    store: ProjectionStore,
    bootstrap_servers: str,
    topic: str,
    dead_letter_topic: str | None,
    config: FoldConfig | None,
    options: ConsumeOptions,
) -> FoldStats:
    """Fold the topic into an open projection (shared with readers when serving)."""
    from projections.sealed import check_keying

    fold_config = store.fold_config(config)
    policy = store.time_policy(options.time_policy)
    store.check_source(topic)
    sealing = options.sealing
    check_keying(store, None if sealing is None else sealing.ring)
    plan = ReadPlan(
        bootstrap_servers,
        topic,
        store.offsets(topic),
        options.once,
        (dead_letter_topic,) if dead_letter_topic else (),
        options.give_up_after,
        policy,
        sealing,
    )
    keys = None if sealing is None else KeyStore(bootstrap_servers, sealing.key_topic).attach()
    sink = DeadLetterTopic(bootstrap_servers, dead_letter_topic) if dead_letter_topic else None
    pipeline = Pipeline(
        store,
        fold_config,
        PipelineOptions(
            batch_size=options.batch_size,
            max_wait_s=None if options.once else options.max_wait_s,
            dead_letter_sink=sink,
            progress=options.progress,
            should_stop=options.should_stop,
            after_commit=options.after_commit,
            key_eraser=keys,
        ),
    )
    pipeline.start_offsets(plan.stored_offsets)
    try:
        return pipeline.run(KafkaSource(plan, options.should_stop))
    finally:
        if sink is not None:
            sink.close()
        if keys is not None:
            keys.close()


def consume(
    db_path: str,
    bootstrap_servers: str,
    topic: str,
    dead_letter_topic: str | None,
    *,
    config: FoldConfig | None = None,
    registry: AttributeRegistry | None = None,
    options: ConsumeOptions | None = None,
) -> FoldStats:
    options = options or ConsumeOptions()
    # The lock says what it folds: `status` reads the consumer group of that topic meanwhile.
    holding = {"topic": topic, "group_id": options.group_id or ""}
    with ProjectionLock(db_path, "consume", holding), ProjectionStore(db_path) as store:
        if registry is not None:
            refresh_typed_traits_view(store.con, registry)
        if not options.group_id:
            return consume_into(store, bootstrap_servers, topic, dead_letter_topic, config, options)
        mirror = GroupMirror(bootstrap_servers, topic, options.group_id)
        # The group starts where the projection stands, not where a batch first moves it.
        mirror.committed(store.offsets(topic))
        chained = options.after_commit

        def after_commit(offsets: list[TopicOffset], stats: FoldStats) -> None:
            mirror.committed({o.partition: o.next_offset for o in offsets})
            if chained is not None:
                chained(offsets, stats)

        try:
            return consume_into(
                store, bootstrap_servers, topic, dead_letter_topic, config,
                replace(options, after_commit=after_commit),
            )  # fmt: skip
        finally:
            mirror.close()
