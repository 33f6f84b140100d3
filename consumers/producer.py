"""Validate, encode and publish profile events to Kafka with delivery confirmation.

The producer is idempotent with acks=all, so a retried batch is written once. Every send's
outcome is observed: a failed delivery is recorded by an errback, and ``flush`` raises a
``DeliveryError`` naming how many events were lost and why, instead of dropping them silently.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from kafka import KafkaProducer
from kafka.partitioner.abc import Partitioner
from kafka.partitioner.default import murmur2
from pydantic import BaseModel

from consumers.codec import AvroCodec, EncodeError
from consumers.kafka_client import kafka_errors
from profile_engine.contract import (
    ContractError,
    IdentifyIn,
    TraitValidator,
    parse_event,
    parse_event_line,
    to_domain,
)
from profile_engine.errors import Transient
from profile_engine.events import ProfileEvent
from profile_engine.identifiers import DEFAULT_PHONE_REGION
from profile_engine.rules import window_at_publish

EventInput = ProfileEvent | BaseModel | dict[str, Any]

# Throughput settings: big batches and a short linger keep kafka-python's per-request cost low.
DEFAULT_LINGER_MS = 20
DEFAULT_BATCH_SIZE = 512 * 1024
# How long a record may wait for a broker (retries included) before it counts as failed.
DEFAULT_DELIVERY_TIMEOUT_MS = 60_000
MAX_REPORTED_FAILURES = 5


class DeliveryError(Transient):
    """Some events were not acknowledged by the broker."""


class CachedKeyPartitioner(Partitioner):
    """Kafka's default key partitioning (murmur2, as the Java client) with the hash memoised.

    People send many events, so the same key is hashed over and over; kafka-python's murmur2
    is pure Python and otherwise one of the dearest steps of a send.
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
    keep their order; the Kafka message timestamp is the event time in ms (the consumer uses it).
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
        **producer_config: Any,
    ) -> None:
        self.topic = topic
        self.trait_validator = trait_validator
        self.phone_region = phone_region
        self.codec = codec or AvroCodec()
        self.sent = 0
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
        return self.send_encoded(
            event.partition_key().encode(),
            self.codec.encode(event),
            event.timestamp_us // 1000,
            event.event_id,
        )

    def send_encoded(self, key: bytes, value: bytes, timestamp_ms: int, event_id: str) -> Any:
        """Queue an already encoded message (the publish command's hot path)."""
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


# --- publishing a JSON Lines stream ------------------------------------------------------------

# Lines per unit of work: big enough to amortise inter-process traffic, small enough to keep
# memory flat and the progress bar moving.
CHUNK_LINES = 2_000
# Below this many bytes a worker pool costs more to start than it saves.
PARALLEL_MIN_BYTES = 4 * 1024 * 1024

Encoded = tuple[bytes, bytes, int, str]  # key, value, timestamp in ms, event_id
ValidatorFactory = Callable[[], TraitValidator | None]


@dataclass(frozen=True)
class Reject:
    """An input line that was not published: its number, why, and its exact bytes."""

    line: int
    reason: str
    raw: bytes


@dataclass
class PublishResult:
    published: int = 0
    rejected: int = 0
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.published / self.seconds if self.seconds > 0 else 0.0


class LineEncoder:
    """JSON line -> (key, Avro message, timestamp ms, event_id), or a Reject naming the rule."""

    def __init__(
        self,
        trait_validator: TraitValidator | None = None,
        phone_region: str = DEFAULT_PHONE_REGION,
    ) -> None:
        self.trait_validator = trait_validator
        self.phone_region = phone_region
        self.codec = AvroCodec()

    def encode_chunk(self, chunk: list[tuple[int, bytes]]) -> list[Encoded | Reject]:
        parse, encode = parse_event_line, self.codec.encode
        validator, region = self.trait_validator, self.phone_region
        # The producer's edge check of event times: this machine's clock plus a day.
        window = window_at_publish(time.time_ns() // 1000)
        results: list[Encoded | Reject] = []
        for number, raw in chunk:
            try:
                event = parse(raw, region, validator, window)
                value = encode(event)
            except (ContractError, EncodeError) as error:
                results.append(Reject(number, str(error), raw))
            except ValueError as error:  # invalid JSON or UTF-8, or an unencodable value
                results.append(Reject(number, f"event: {_first_line(error)}", raw))
            else:
                key = event.partition_key().encode()
                results.append((key, value, event.timestamp_us // 1000, event.event_id))
        return results


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON ({error.msg} at column {error.colno})"
    return text.splitlines()[0] if text else type(error).__name__


def numbered_chunks(
    lines: Iterable[bytes], size: int = CHUNK_LINES
) -> Iterator[tuple[list[tuple[int, bytes]], int]]:
    """Non-blank lines numbered from 1 in chunks, each with the bytes it covered."""
    chunk: list[tuple[int, bytes]] = []
    covered = 0
    for number, raw in enumerate(lines, start=1):
        covered += len(raw)
        if raw.strip():
            chunk.append((number, raw.rstrip(b"\r\n")))
        if len(chunk) >= size:
            yield chunk, covered
            chunk, covered = [], 0
    if chunk or covered:
        yield chunk, covered


# Worker processes build their encoder once (the registry is loaded in the worker).
_WORKER_ENCODER: LineEncoder | None = None


def _init_worker(validator_factory: ValidatorFactory | None, phone_region: str) -> None:
    global _WORKER_ENCODER
    validator = validator_factory() if validator_factory is not None else None
    _WORKER_ENCODER = LineEncoder(validator, phone_region)


def _encode_in_worker(chunk: list[tuple[int, bytes]]) -> list[Encoded | Reject]:
    assert _WORKER_ENCODER is not None, "worker not initialised"
    return _WORKER_ENCODER.encode_chunk(chunk)


def _encoded_chunks(
    chunks: Iterator[tuple[list[tuple[int, bytes]], int]],
    workers: int,
    validator_factory: ValidatorFactory | None,
    phone_region: str,
) -> Iterator[tuple[list[Encoded | Reject], int]]:
    """Encoded chunks in input order (so one person's events keep their order)."""
    if workers <= 0:
        validator = validator_factory() if validator_factory is not None else None
        encoder = LineEncoder(validator, phone_region)
        for chunk, covered in chunks:
            yield encoder.encode_chunk(chunk), covered
        return
    # spawn, not fork: the Kafka producer's sender thread may already be running. An executor
    # (not multiprocessing.Pool) so that a worker that dies breaks the run instead of hanging it.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, context, initializer=_init_worker, initargs=(validator_factory, phone_region)
    ) as pool:
        pending: deque[tuple[Future[list[Encoded | Reject]], int]] = deque()
        window = workers * 4  # bounded read-ahead keeps memory flat on huge files
        for chunk, covered in chunks:
            pending.append((pool.submit(_encode_in_worker, chunk), covered))
            if len(pending) >= window:
                future, done = pending.popleft()
                yield future.result(), done
        while pending:
            future, done = pending.popleft()
            yield future.result(), done


def publish_lines(
    lines: Iterable[bytes],
    producer: EventProducer,
    *,
    validator_factory: ValidatorFactory | None = None,
    phone_region: str = DEFAULT_PHONE_REGION,
    workers: int = 0,
    on_reject: Callable[[Reject], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> PublishResult:
    """Validate every line, send the valid ones, report the invalid ones; then flush.

    ``workers`` > 0 validates and encodes in that many processes while this one only sends.
    ``on_progress`` gets the number of input bytes handled so far. DeliveryError from the
    final flush means some valid events did not reach the broker.
    """
    result = PublishResult()
    started = time.perf_counter()
    send = producer.send_encoded
    chunks = numbered_chunks(lines)
    for encoded, covered in _encoded_chunks(chunks, workers, validator_factory, phone_region):
        for item in encoded:
            if isinstance(item, Reject):
                result.rejected += 1
                if on_reject is not None:
                    on_reject(item)
            else:
                send(*item)
                result.published += 1
        if on_progress is not None:
            on_progress(covered)
    producer.flush()
    result.seconds = time.perf_counter() - started
    return result
