"""The one place that builds kafka-python clients and turns their failures into our kinds.

Every Kafka client of the project (reader, raw reads, archive, producers, admin) is made here or
wrapped in ``kafka_errors``, so "the broker is not there" is one Transient error with one text
wherever it happens, and nothing above this module looks at kafka-python's classes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

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


# Reconnect attempts back off exponentially; kafka-python's 30 s ceiling kept a consumer
# asleep for up to half a minute after the broker came back. A second is cheap on any cluster.
RECONNECT_BACKOFF_MAX_MS = 1_000


def kafka_consumer(bootstrap_servers: str, bootstrap_timeout_ms: int = 30_000) -> KafkaConsumer:
    """A bare consumer tuned for throughput; positions are managed by the caller.

    It reads committed data only (``read_committed``): records of aborted transactions are
    never returned and end offsets are last stable offsets, so the log as transactional
    producers (Kafka Streams, Flink, Debezium, the Java client) mean it is what gets folded.
    """
    with kafka_errors(bootstrap_servers):
        return KafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_min_bytes=1,
            fetch_max_wait_ms=100,
            max_poll_records=50_000,
            request_timeout_ms=30_000,
            bootstrap_timeout_ms=bootstrap_timeout_ms,
            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
        )


def clock_time(epoch_seconds: float) -> str:
    """HH:MM:SS in local time, as people read a log line."""
    return datetime.fromtimestamp(epoch_seconds).strftime("%H:%M:%S")


class BrokerWait:
    """Whether we are waiting for the broker, since when, and when to stop waiting.

    The wait counts from the broker's last answer (or from the start, if it never answered);
    ``give_up_after`` None waits forever.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        give_up_after: float | None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.give_up_after = give_up_after
        self.waiting = False
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._last_answer = (monotonic(), wall_clock())

    @property
    def since(self) -> float | None:
        """Wall-clock time (epoch seconds) of the last answer while waiting, else None."""
        return self._last_answer[1] if self.waiting else None

    def answered(self) -> bool:
        """Note an answer from the broker; True when it ends a wait."""
        ended = self.waiting
        self.waiting = False
        self._last_answer = (self._monotonic(), self._wall_clock())
        return ended

    def failed(self) -> bool:
        """Note an attempt that got no answer; True when it starts a wait."""
        began = not self.waiting
        self.waiting = True
        return began

    def give_up_if_silent_too_long(self) -> None:
        """BrokerUnavailable once the broker has been silent for ``give_up_after`` seconds."""
        silent_for = self._monotonic() - self._last_answer[0]
        if self.waiting and self.give_up_after is not None and silent_for >= self.give_up_after:
            raise BrokerUnavailable(
                f"gave up waiting for Kafka at {self.bootstrap_servers}: no answer since "
                f"{clock_time(self._last_answer[1])} ({silent_for:.0f}s); is the broker "
                "running? try `profile-engine broker start`"
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
