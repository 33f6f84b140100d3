"""The one place that builds kafka-python clients and turns their failures into our kinds.

Every Kafka client of the project (reader, raw reads, archive, producers, admin) is made here or
wrapped in ``kafka_errors``, so "the broker is not there" is one Transient error with one text
wherever it happens, and nothing above this module looks at kafka-python's classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from profile_engine.errors import NeedsOperator, Transient, first_line


class BrokerUnavailable(Transient):
    """No broker answered in time."""


class LogGapError(NeedsOperator):
    """The log no longer holds offsets the projections need (retention deleted them)."""


class TopicMissingError(NeedsOperator):
    pass


@contextmanager
def kafka_errors(bootstrap_servers: str) -> Iterator[None]:
    """Translate kafka-python's "cannot reach the cluster" failures into BrokerUnavailable."""
    try:
        yield
    except (KafkaConnectionError, KafkaTimeoutError) as error:
        raise BrokerUnavailable(
            f"cannot reach Kafka at {bootstrap_servers} ({first_line(error)}); is the broker "
            "running? try `profile-engine broker start`"
        ) from error


def kafka_consumer(bootstrap_servers: str) -> KafkaConsumer:
    """A bare consumer tuned for throughput; positions are managed by the caller."""
    with kafka_errors(bootstrap_servers):
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


def assign_from_start(consumer: KafkaConsumer, topic: str) -> int:
    """Assign every partition of the topic at its earliest offset; the records there are."""
    tps = topic_partitions(consumer, topic)
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    return sum(consumer.end_offsets(tps).values())


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
