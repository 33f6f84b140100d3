"""The projections' offsets, mirrored to a Kafka consumer group so standard tools see the lag.

The truth is the ``consumer_offsets`` table, committed in the same DuckDB transaction as the
rows. Kafka's own tools (``kafka-consumer-groups --describe``, Burrow, lag exporters, Kafka
UIs) read consumer-group offsets instead, so after each committed batch the same offsets are
also committed to a group. The group never has members: offsets are committed the way
``kafka-consumer-groups --reset-offsets`` does (no generation, no member id), so nothing ever
rebalances, and nothing reads them back to decide where to fold from.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata

from consumers.kafka_client import BrokerUnavailable, kafka_errors, topic_partitions
from profile_engine.errors import first_line

DEFAULT_GROUP_ID = "profile-engine"
# A lag probe that waits kafka-python's default 30 s for a dead broker would freeze the status
# it feeds for that long.
REQUEST_TIMEOUT_MS = 10_000
BOOTSTRAP_TIMEOUT_MS = 5_000
RETRY_S = 5.0


class GroupOffsets:
    """Commits next offsets of one topic to one consumer group and reads the log's end offsets.

    Not thread-safe: one thread owns it (kafka-python clients are not shared across threads).
    """

    def __init__(self, bootstrap_servers: str, topic: str, group_id: str = DEFAULT_GROUP_ID):
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.group_id = group_id
        with self._errors():
            self._client = KafkaConsumer(
                bootstrap_servers=bootstrap_servers,
                group_id=group_id,
                enable_auto_commit=False,
                request_timeout_ms=REQUEST_TIMEOUT_MS,
                bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
                client_id=f"{group_id}-offsets",
            )
        self._partitions: list[TopicPartition] | None = None

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """kafka-python's failures here all mean "the cluster cannot do this now"."""
        with kafka_errors(self.bootstrap_servers):
            try:
                yield
            except (KafkaConnectionError, KafkaTimeoutError):
                raise  # kafka_errors says "cannot reach Kafka"
            except KafkaError as error:
                raise BrokerUnavailable(
                    f"Kafka at {self.bootstrap_servers} refused offsets of group "
                    f"{self.group_id!r}: {first_line(error)}"
                ) from error

    def partitions(self) -> list[TopicPartition]:
        if self._partitions is None:
            with self._errors():
                self._partitions = topic_partitions(self._client, self.topic)
        return self._partitions

    def commit(self, next_offsets: dict[int, int]) -> None:
        """Commit ``{partition: next offset to read}`` to the group, as Kafka expects it."""
        if not next_offsets:
            return
        offsets = {
            TopicPartition(self.topic, partition): OffsetAndMetadata(offset, "", -1)
            for partition, offset in next_offsets.items()
        }
        with self._errors():
            self._client.commit(offsets)

    def committed(self) -> dict[int, int]:
        """``{partition: next offset}`` the group holds (partitions it never committed left
        out)."""
        with self._errors():
            found = {tp.partition: self._client.committed(tp) for tp in self.partitions()}
        return {partition: int(offset) for partition, offset in found.items() if offset is not None}

    def end_offsets(self) -> dict[int, int]:
        """The log end offset of every partition of the topic (where the next event goes)."""
        with self._errors():
            ends = self._client.end_offsets(self.partitions())
        return {tp.partition: int(offset) for tp, offset in ends.items()}

    def close(self) -> None:
        self._client.close(autocommit=False)


class GroupMirror:
    """Mirrors each committed batch's offsets to the group from a thread of its own, so a slow
    or absent broker never holds up the fold; only the latest offsets are ever sent."""

    def __init__(self, bootstrap_servers: str, topic: str, group_id: str = DEFAULT_GROUP_ID):
        self._args = (bootstrap_servers, topic, group_id)
        self._latest: dict[int, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="group-offsets", daemon=True)
        self._thread.start()

    def committed(self, next_offsets: dict[int, int]) -> None:
        with self._lock:
            self._latest.update(next_offsets)
        self._wake.set()

    def close(self, timeout_s: float = 5.0) -> None:
        """A last commit of the latest offsets, waited for at most ``timeout_s``."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        client: GroupOffsets | None = None
        sent: dict[int, int] = {}
        while True:
            self._wake.wait(RETRY_S)
            self._wake.clear()
            with self._lock:
                latest = dict(self._latest)
            if latest != sent:
                try:
                    client = client or GroupOffsets(*self._args)
                    client.commit(latest)
                    sent = latest
                except BrokerUnavailable:
                    pass  # tried again on the next batch or after RETRY_S
            if self._stopping.is_set():
                break
        if client is not None:
            client.close()
