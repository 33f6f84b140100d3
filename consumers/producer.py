"""Validate, encode and publish profile events to Kafka with delivery confirmation.

``EventProducer`` sends one event at a time through kafka-python (tests, tools, small
streams). The idempotent producer uses acks=all, so a retried batch is written once. Every
send's outcome is observed: a failed delivery is recorded by an errback, and ``flush`` raises
a ``DeliveryError`` naming how many events were lost and why, instead of dropping them
silently. Publish and import send whole record batches instead (``consumers.publish``).

**Kafka timestamps.** A record's timestamp (CreateTime) is the event time, but never later than
the producer's clock when the record is queued: ``min(event time, now)``. The event keeps its
own time in the Avro body, which is what the fold uses. So a broker never refuses a valid
event for its timestamp (Kafka 4 refuses CreateTime more than
``message.timestamp.after.max.ms``, one hour by default, ahead of its clock), old events keep
their time order in the log, and a topic with LogAppendTime works alike.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from kafka import KafkaProducer
from kafka.partitioner.abc import Partitioner
from pydantic import BaseModel

from consumers.batch_producer import DeliveryError
from consumers.codec import AvroCodec
from consumers.kafka_client import kafka_errors
from consumers.key_store import KeyStore, SealingConfig
from consumers.record_batches import murmur2
from profile_engine.contract import (
    ContractError,
    IdentifyIn,
    TraitValidator,
    parse_event,
    to_domain,
)
from profile_engine.events import ProfileEvent
from profile_engine.identifiers import DEFAULT_PHONE_REGION
from profile_engine.sealing import Sealer, SealingPlan

EventInput = ProfileEvent | BaseModel | dict[str, Any]

# Throughput settings: big batches and a short linger keep kafka-python's per-request cost low.
DEFAULT_LINGER_MS = 20
DEFAULT_BATCH_SIZE = 512 * 1024
# How long a record may wait for a broker (retries included) before it counts as failed.
DEFAULT_DELIVERY_TIMEOUT_MS = 60_000
MAX_REPORTED_FAILURES = 5


def kafka_timestamp_ms(event_time_us: int, now_ms: int) -> int:
    """The record timestamp: the event time in ms, never later than ``now_ms`` nor before 1970."""
    event_ms = event_time_us // 1000
    return max(0, event_ms if event_ms < now_ms else now_ms)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class EventEncoder:
    """Domain event -> (key, Avro single-object message, Kafka timestamp in ms).

    Key = the event's highest-priority identifier, so one person's events share a partition
    and keep their order. With a ``sealer`` the event is sealed (profile_engine.sealing): the
    key is the hex of that identifier's blind index, and the data keys the sealer makes must
    reach the key store (``sealer.take_new_keys()``) before the message is sent.
    """

    def __init__(self, codec: AvroCodec | None = None, sealer: Sealer | None = None) -> None:
        self.codec = codec or AvroCodec()
        self.sealer = sealer

    def encode(self, event: ProfileEvent, clock_ms: int) -> tuple[bytes, bytes, int]:
        """EncodeError when the envelope cannot carry the event."""
        if self.sealer is not None:
            seal = self.sealer.seal(event)
            return (
                seal.message_key,
                self.codec.encode(event, seal),
                kafka_timestamp_ms(event.timestamp_us, clock_ms),
            )
        return (
            event.partition_key().encode(),
            self.codec.encode(event),
            kafka_timestamp_ms(event.timestamp_us, clock_ms),
        )


class CachedKeyPartitioner(Partitioner):
    """Kafka's default key partitioning (murmur2, as the Java client) with the hash memoised.

    People send many events, so the same key is hashed over and over; murmur2 is pure Python
    and otherwise one of the dearest steps of a send.
    """

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._hashes: dict[bytes, int] = {}
        self._max_entries = max_entries

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: Any,
        cluster: Any,
    ) -> int:
        partitions = cluster.partitions_for_topic(topic)
        if partitions is None:
            raise ValueError(f"topic {topic} not found in the cluster metadata")
        if serialized_key is None:
            raise ValueError("profile events are always keyed")
        hashed = self._hashes.get(serialized_key)
        if hashed is None:
            if len(self._hashes) >= self._max_entries:
                self._hashes.clear()
            hashed = self._hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
        # Kafka numbers partitions 0..n-1, so this equals the default partitioner's choice.
        return hashed % len(partitions)


@dataclass
class DeliveryFailures:
    """Failed sends, recorded from kafka-python's sender thread."""

    count: int = 0
    examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, event_id: str, error: BaseException) -> None:
        with self.lock:
            self.count += 1
            if len(self.examples) < MAX_REPORTED_FAILURES:
                self.examples.append(f"{event_id}: {type(error).__name__}: {error}")

    def take(self) -> tuple[int, list[str]]:
        with self.lock:
            taken = (self.count, self.examples)
            self.count, self.examples = 0, []
            return taken


class EventProducer:
    """Publishes domain events, contract models or raw dicts as Avro single-object messages.

    Key = the event's highest-priority identifier, so one person's events share a partition and
    keep their order; the Kafka timestamp is the event time, capped at the producer's clock.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        trait_validator: TraitValidator | None = None,
        *,
        phone_region: str = DEFAULT_PHONE_REGION,
        codec: AvroCodec | None = None,
        linger_ms: int = DEFAULT_LINGER_MS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        delivery_timeout_ms: int = DEFAULT_DELIVERY_TIMEOUT_MS,
        sealing: SealingConfig | None = None,
        **producer_config: Any,
    ) -> None:
        self.topic = topic
        self.trait_validator = trait_validator
        self.phone_region = phone_region
        self.codec = codec or AvroCodec()
        self.sent = 0
        # Sealed events: data keys go to the key store before the events sealed under them.
        self._keys: KeyStore | None = None
        self._sealer: Sealer | None = None
        if sealing is not None:
            self._keys = KeyStore(sealing.bootstrap_servers, sealing.key_topic).load()
            self._sealer = Sealer(SealingPlan.new(sealing.master, self._keys.live_keys()))
        self._failures = DeliveryFailures()
        config: dict[str, Any] = {
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": linger_ms,
            "batch_size": batch_size,
            "max_request_size": 4 * batch_size,
            "delivery_timeout_ms": delivery_timeout_ms,
            # kafka-python insists on delivery_timeout >= linger + request_timeout.
            "request_timeout_ms": max(1, min(30_000, delivery_timeout_ms - linger_ms)),
            "max_block_ms": delivery_timeout_ms,
            "partitioner": CachedKeyPartitioner(),
            "metrics_enabled": False,
            "client_id": "profile-engine-producer",
        }
        config.update(producer_config)
        with kafka_errors(bootstrap_servers):
            self._producer = KafkaProducer(bootstrap_servers=bootstrap_servers, **config)

    # --- input -> domain event ---------------------------------------------------------------

    def to_event(self, item: EventInput) -> ProfileEvent:
        """A domain event from any accepted input; ContractError when it breaks the contract."""
        if isinstance(item, ProfileEvent):
            return item
        if isinstance(item, BaseModel):
            if self.trait_validator is not None and isinstance(item, IdentifyIn):
                item = item.model_copy(update={"traits": self.trait_validator(item.traits)})
            try:
                return to_domain(item, self.phone_region)  # type: ignore[arg-type]
            except AttributeError:
                raise ContractError(
                    f"event: {type(item).__name__} is not a contract event model"
                ) from None
        return parse_event(item, self.phone_region, self.trait_validator)

    # --- sending -----------------------------------------------------------------------------

    def send(self, item: EventInput) -> Any:
        """Validate, encode and queue one event; returns kafka-python's future."""
        event = self.to_event(item)
        if self._sealer is not None and self._keys is not None:
            seal = self._sealer.seal(event)
            self._keys.publish(self._sealer.take_new_keys())  # acknowledged first
            key, value = seal.message_key, self.codec.encode(event, seal)
        else:
            key, value = event.partition_key().encode(), self.codec.encode(event)
        # The timestamp is capped at the clock by send_encoded.
        return self.send_encoded(key, value, event.timestamp_us // 1000, event.event_id)

    def send_encoded(self, key: bytes, value: bytes, timestamp_ms: int, event_id: str) -> Any:
        """Queue an already encoded message; ``timestamp_ms`` is capped at the clock."""
        timestamp_ms = max(0, min(timestamp_ms, now_ms()))
        future = self._producer.send(self.topic, value=value, key=key, timestamp_ms=timestamp_ms)
        future.add_errback(self._failures.record, event_id)
        self.sent += 1
        return future

    def send_many(self, items: Iterable[EventInput]) -> int:
        """Queue every item (no flush); the number queued."""
        count = 0
        for item in items:
            self.send(item)
            count += 1
        return count

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every queued event; DeliveryError if any was not acknowledged."""
        self._producer.flush(timeout)
        failed, examples = self._failures.take()
        if failed:
            raise DeliveryError(
                f"{failed} event(s) were not delivered to topic {self.topic}; "
                f"first: {'; '.join(examples)}"
            )

    def close(self, timeout: float | None = None) -> None:
        """Flush, then release the connection; still raises if deliveries failed."""
        try:
            self.flush(timeout)
        finally:
            self._producer.close(timeout)
            if self._keys is not None:
                self._keys.close()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:  # already failing: release the connection without masking the first error
            self._producer.close(timeout=5)
            if self._keys is not None:
                self._keys.close()
