"""Sends prebuilt record batches through kafka-python and accounts for every line in them.

``BatchProducer.send`` takes a ``BuiltBatch`` (consumers.record_batches) and queues it in
kafka-python's own accumulator, so kafka-python's sender still does what a producer must: it
gives each batch the producer id, epoch and sequence number when it drains it (idempotence),
sends with acks=all, retries with the same sequence, and completes the batch with the broker's
answer. Only the per-record work moves out of its hot path.

Every line of every batch ends in exactly one of two places: confirmed (the broker acknowledged
its batch) or unconfirmed, with the reason. Nothing waits forever: when the broker confirms
nothing for ``delivery_timeout_s`` while batches wait, the producer gives up, counts every
waiting line as unconfirmed and stops. Unconfirmed does not mean lost for sure (the broker may
have written a batch whose answer never came); re-sending is safe because the fold applies an
event_id once.
"""

from __future__ import annotations

import logging
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import kafka
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, KafkaTimeoutError, UnknownTopicOrPartitionError, for_code
from kafka.producer.producer_batch import ProducerBatch
from kafka.record.memory_records import MemoryRecords
from kafka.structs import TopicPartition

from consumers.kafka_client import TopicMissingError, kafka_errors
from consumers.record_batches import BuiltBatch
from profile_engine.errors import NeedsOperator, Transient, first_line

log = logging.getLogger(__name__)

DEFAULT_DELIVERY_TIMEOUT_S = 60.0
# Unconfirmed bytes queued before send() waits for the broker: keeps memory flat when the broker
# is slower than the encoders, and bounds what one stall leaves unconfirmed.
DEFAULT_MAX_UNCONFIRMED_BYTES = 64 * 1024 * 1024
# The broker's default limit (message.max.bytes), used when the topic's cannot be read.
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
# A stall shorter than this is normal backpressure and not worth a message.
WAIT_NOTICE_AFTER_S = 5.0
_POLL_S = 0.2

WaitCallback = Callable[[float], None]  # wall-clock time since when we wait for the broker


class DeliveryError(Transient):
    """Some events were not acknowledged by the broker (it may accept them on a retry)."""


class DeliveryRefused(NeedsOperator):
    """The broker refused some events for a reason a retry will not change."""


@dataclass(frozen=True)
class TopicLimits:
    partitions: int
    max_message_bytes: int


def topic_limits(bootstrap_servers: str, topic: str, timeout_s: float) -> TopicLimits:
    """The topic's partition count and the largest record batch it accepts (max.message.bytes)."""
    timeout_ms = max(1_000, int(timeout_s * 1000))
    with kafka_errors(bootstrap_servers):
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            client_id="profile-engine-publish",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
        try:
            described = admin.describe_topics([topic])[0]
            if for_code(described["error_code"]) is UnknownTopicOrPartitionError:
                raise TopicMissingError(
                    f"topic {topic} does not exist; create it with `profile-engine topics create`"
                )
            partitions = len(described["partitions"])
            try:
                resource = ConfigResource(
                    ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": None}
                )
                configs = admin.describe_configs([resource], config_filter="all")
                max_bytes = int(configs["topic"][topic]["max.message.bytes"]["value"])
            except (KafkaError, KeyError, ValueError) as error:
                # Describing configs may be forbidden; the broker's default is the usual limit.
                log.warning("cannot read max.message.bytes of %s (%s)", topic, first_line(error))
                max_bytes = KAFKA_DEFAULT_MAX_MESSAGE_BYTES
        finally:
            admin.close()
    return TopicLimits(partitions, max_bytes)


class PrebuiltRecords:
    """A ``BuiltBatch`` in the role of the MemoryRecordsBuilder a kafka-python ProducerBatch holds.

    The sender calls ``set_producer_state`` when it drains the batch (not on a retry), then
    ``close``, ``size_in_bytes`` and ``buffer``; ``next_offset`` is the record count it advances
    the partition's sequence by.
    """

    __slots__ = ("_base_sequence", "_buffer", "_built", "_producer_epoch", "_producer_id")

    def __init__(self, built: BuiltBatch) -> None:
        self._built = built
        self._producer_id = -1
        self._producer_epoch = -1
        self._base_sequence = -1
        self._buffer: bytearray | None = None

    def set_producer_state(
        self, producer_id: int, producer_epoch: int, base_sequence: int, is_transactional: bool
    ) -> None:
        if self._buffer is not None:
            raise kafka.errors.IllegalStateError("producer state set on a closed batch")
        if is_transactional:
            raise kafka.errors.IllegalStateError("prebuilt batches are never transactional")
        self._producer_id = producer_id
        self._producer_epoch = producer_epoch
        self._base_sequence = base_sequence

    @property
    def producer_id(self) -> int:
        return self._producer_id

    @property
    def producer_epoch(self) -> int:
        return self._producer_epoch

    @property
    def base_sequence(self) -> int:
        return self._base_sequence

    def next_offset(self) -> int:
        return self._built.record_count

    def is_full(self) -> bool:
        return True  # finished by the batcher: send it now, no linger

    def close(self) -> None:
        if self._buffer is None:
            self._buffer = self._built.to_bytes(
                self._producer_id, self._producer_epoch, self._base_sequence
            )

    def size_in_bytes(self) -> int:
        return self._built.size if self._buffer is None else len(self._buffer)

    def buffer(self) -> bytearray:
        assert self._buffer is not None, "buffer() before close()"
        return self._buffer

    def records(self) -> MemoryRecords:
        return MemoryRecords(bytes(self.buffer()))


@dataclass
class Delivery:
    """The broker's answer for every line sent: confirmed, or unconfirmed with a reason."""

    confirmed: int = 0
    unconfirmed: array[int] = field(default_factory=lambda: array("q"))
    reasons: Counter[str] = field(default_factory=Counter)
    # True while every failure may succeed when sent again (timeouts, an unreachable broker).
    retriable: bool = True
    gave_up: str | None = None

    def fail(self, lines: array[int], reason: str, retriable: bool) -> None:
        self.unconfirmed.extend(lines)
        self.reasons[reason] += len(lines)
        self.retriable = self.retriable and retriable


class KafkaInternalsChanged(NeedsOperator):
    """The installed kafka-python lacks the producer internals the batch sender plugs into."""


def _check_internals(producer: KafkaProducer) -> None:
    accumulator = getattr(producer, "_accumulator", None)
    sender = getattr(producer, "_sender", None)
    if (
        accumulator is None
        or not all(hasattr(accumulator, name) for name in ("_batches", "_tp_lock", "_incomplete"))
        or not all(hasattr(sender, name) for name in ("wakeup", "_can_split", "force_close"))
    ):
        raise KafkaInternalsChanged(
            f"kafka-python {kafka.__version__} is not supported by the batch publisher "
            "(its producer internals changed); install kafka-python 3.0.x"
        )


class BatchProducer:
    """Queues prebuilt batches on one topic and tracks the broker's answer per line.

    ``send`` blocks while ``max_unconfirmed_bytes`` are waiting for the broker and returns
    False once the producer has given up; ``finish`` waits for every answer (or gives up) and
    returns the ``Delivery``. Use as a context manager so the connection is always released.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        delivery_timeout_s: float = DEFAULT_DELIVERY_TIMEOUT_S,
        max_unconfirmed_bytes: int = DEFAULT_MAX_UNCONFIRMED_BYTES,
        on_wait: WaitCallback | None = None,
        **producer_config: Any,
    ) -> None:
        if delivery_timeout_s <= 0:
            raise ValueError("the delivery timeout must be positive")
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.delivery_timeout_s = delivery_timeout_s
        self.max_unconfirmed_bytes = max_unconfirmed_bytes
        self.delivery = Delivery()
        self._on_wait = on_wait
        limits = topic_limits(bootstrap_servers, topic, delivery_timeout_s)
        self.max_batch_bytes = limits.max_message_bytes
        timeout_ms = int(delivery_timeout_s * 1000)
        request_timeout_ms = max(1_000, min(30_000, timeout_ms))
        config: dict[str, Any] = {
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 0,  # batches arrive full
            "max_request_size": max(8 * 1024 * 1024, 2 * self.max_batch_bytes),
            "request_timeout_ms": request_timeout_ms,
            # Our own deadline (no confirmation for delivery_timeout_s) decides; kafka-python's
            # is a backstop, long enough that a broker back within our deadline loses nothing.
            "delivery_timeout_ms": 2 * timeout_ms + request_timeout_ms,
            "max_block_ms": timeout_ms,
            "bootstrap_timeout_ms": timeout_ms,
            # A broker that comes back is found within a second, not after a 30 s back-off.
            "reconnect_backoff_max_ms": 1_000,
            "metrics_enabled": False,
            "client_id": "profile-engine-publish",
        }
        config.update(producer_config)
        with kafka_errors(bootstrap_servers):
            self._producer = KafkaProducer(bootstrap_servers=bootstrap_servers, **config)
        try:
            _check_internals(self._producer)
            # kafka-python would split a batch the broker finds too large into batches of its
            # own, whose answers we would never see. Ours are cut to the topic's limit, so such
            # a refusal is rare; when it happens each line of the batch is reported instead.
            self._producer._sender._can_split = lambda batch, error: False
            with kafka_errors(bootstrap_servers):
                partitions = self._producer.partitions_for(topic)
        except BaseException:
            self._abandon()
            raise
        self.partitions = len(partitions) if partitions else limits.partitions
        self._lock = threading.Condition()
        self._pending: dict[ProducerBatch, BuiltBatch] = {}
        self._unconfirmed_bytes = 0
        self._waiting_since: float | None = None  # monotonic: oldest wait without a confirmation
        self._noticed = False
        self._closed = False

    # --- sending -----------------------------------------------------------------------------

    @property
    def gave_up(self) -> bool:
        return self.delivery.gave_up is not None

    def send(self, built: BuiltBatch) -> bool:
        """Queue one batch; False (and nothing queued) once the producer has given up."""
        with self._lock:
            self._check_silence()
            self._wait_while(lambda: self._unconfirmed_bytes + built.size > self._room())
            if self.gave_up:
                return False
            tp = TopicPartition(self.topic, built.partition)
            batch = ProducerBatch(tp, PrebuiltRecords(built))
            self._pending[batch] = built
            self._unconfirmed_bytes += built.size
            if self._waiting_since is None:
                self._waiting_since = time.monotonic()
        # Registered before the sender can see the batch, so no answer is missed.
        batch.produce_future.add_callback(self._on_answer, batch)
        accumulator = self._producer._accumulator
        with accumulator._tp_lock(tp):
            accumulator._batches[tp].append(batch)
        accumulator._incomplete.add(batch)
        self._producer._sender.wakeup()
        return True

    def _room(self) -> int:
        # One batch larger than the budget must still go, alone.
        return self.max_unconfirmed_bytes if self._pending else 1 << 62

    def finish(self) -> Delivery:
        """Wait for the broker's answer to every batch (or give up); the outcome per line."""
        with self._lock:
            self._wait_while(lambda: bool(self._pending))
        return self.delivery

    def _wait_while(self, condition: Callable[[], bool]) -> None:
        """Wait (lock held) while ``condition`` holds, giving up after a silent broker's timeout."""
        while condition() and not self.gave_up:
            self._check_silence()
            if not self.gave_up:
                self._lock.wait(_POLL_S)

    def _check_silence(self) -> None:
        """Give up (lock held) when batches waited ``delivery_timeout_s`` without a confirmation.

        Checked on every send too: the encoders may go on filling the budget long after the
        broker went away.
        """
        since = self._waiting_since
        if since is None or self.gave_up:
            return
        waited = time.monotonic() - since
        if waited >= self.delivery_timeout_s:
            self._give_up()
        elif waited >= WAIT_NOTICE_AFTER_S and not self._noticed:
            self._noticed = True
            if self._on_wait is not None:
                self._on_wait(time.time() - waited)

    def _on_answer(self, batch: ProducerBatch, result: tuple[Any, Any, Any]) -> None:
        """The broker's (or kafka-python's) final answer for a batch; on the sender thread."""
        _, _, record_errors = result
        with self._lock:
            built = self._pending.pop(batch, None)
            if built is None:  # already counted as unconfirmed when we gave up
                return
            self._unconfirmed_bytes -= built.size
            if record_errors is None:
                self.delivery.confirmed += built.record_count
                self._noticed = False
                self._waiting_since = time.monotonic() if self._pending else None
            else:
                self._record_failure(built, record_errors)
                if not self._pending:
                    self._waiting_since = None
            self._lock.notify_all()

    def _record_failure(self, built: BuiltBatch, record_errors: Callable[[int], Exception]) -> None:
        # The broker refuses a whole batch; a record-level error names the culprit, the others
        # are refused with it. Group the lines by the reason each one gets.
        by_reason: dict[tuple[str, bool], array[int]] = {}
        for index, line in enumerate(built.lines):
            error = record_errors(index)
            reason = f"{type(error).__name__}: {first_line(error)}"
            retriable = bool(getattr(error, "retriable", False))
            by_reason.setdefault((reason, retriable), array("q")).append(line)
        for (reason, retriable), lines in by_reason.items():
            self.delivery.fail(lines, reason, retriable)

    def _give_up(self) -> None:
        """Count every waiting line as unconfirmed and stop (lock held)."""
        reason = (
            f"no confirmation from Kafka at {self.bootstrap_servers} "
            f"for {self.delivery_timeout_s:g} s"
        )
        self.delivery.gave_up = reason
        for built in self._pending.values():
            self.delivery.fail(built.lines, reason, retriable=True)
        self._pending.clear()
        self._unconfirmed_bytes = 0
        self._lock.notify_all()

    # --- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.gave_up or self._pending:
            self._abandon()
            return
        try:
            self._producer.close(timeout=5)
        except KafkaTimeoutError:
            self._abandon()

    def _abandon(self) -> None:
        """Stop kafka-python's sender without waiting for answers that may never come."""
        producer = self._producer
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            sender.force_close()  # it fails every batch still queued or in flight, then exits
            # It may sit in one blocking connect of up to request_timeout_ms first.
            sender.join(producer.config["request_timeout_ms"] / 1000 + 5)
        try:
            producer.close(timeout=0)
        except KafkaError as error:
            # Batches still open: kafka-python's exit hook would wait for them forever.
            log.warning("Kafka producer closed with batches unanswered: %s", first_line(error))
            unregister = getattr(producer, "_unregister_cleanup", None)
            if unregister is not None:
                unregister()

    def __enter__(self) -> BatchProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# --- telling the user --------------------------------------------------------------------------

MAX_LISTED_RANGES = 8


def line_ranges(lines: Iterable[int], bridged: Container[int] = ()) -> list[tuple[int, int]]:
    """Sorted line numbers folded into (first, last) runs; a gap of ``bridged`` lines only
    (rejected ones, reported apart) does not break a run."""
    runs: list[tuple[int, int]] = []
    for line in sorted(set(lines)):
        if runs and all(n in bridged for n in range(runs[-1][1] + 1, line)):
            runs[-1] = (runs[-1][0], line)
        else:
            runs.append((line, line))
    return runs


def _format_runs(runs: list[tuple[int, int | None]]) -> str:
    def run(first: int, last: int | None) -> str:
        if last is None:
            return f"{first} onwards (never read)"
        return f"{first}" if first == last else f"{first}-{last}"

    shown = [run(first, last) for first, last in runs[:MAX_LISTED_RANGES]]
    more = len(runs) - len(shown)
    return ", ".join(shown) + (f" and {more} more range(s)" if more else "")


def unconfirmed_error(
    delivery: Delivery,
    unread: tuple[int, int | None] | None,
    *,
    list_path: Path,
    resume: str,
    rejected: Container[int] = (),
) -> DeliveryError | DeliveryRefused:
    """The one-line error for lines the broker did not confirm; writes every number to a file.

    ``list_path`` gets one line number per line (the lines never read included, when their
    number is known); the ranges in the message run across ``rejected`` lines. Transient when
    every failure may pass on a retry, else NeedsOperator.
    """
    runs: list[tuple[int, int | None]] = list(line_ranges(delivery.unconfirmed, rejected))
    count = len(delivery.unconfirmed)
    if unread is not None:
        first, last = unread
        previous = runs[-1][1] if runs else None
        if previous is not None and all(n in rejected for n in range(previous + 1, first)):
            runs[-1] = (runs[-1][0], last)
        else:
            runs.append((first, last))
        count += (last - first + 1) if last is not None else 0
    with list_path.open("w", encoding="ascii") as out:
        for line in sorted(delivery.unconfirmed):
            out.write(f"{line}\n")
        if unread is not None and unread[1] is not None:
            out.writelines(f"{line}\n" for line in range(unread[0], unread[1] + 1))
    if delivery.gave_up is not None:
        why = delivery.gave_up
    else:
        reason = delivery.reasons.most_common(1)[0][0]
        why = f"the broker refused {sum(delivery.reasons.values()):,} line(s) ({reason})"
    if unread is not None and unread[1] is None:
        not_confirmed = "lines not confirmed"  # how many a pipe still holds is unknown
    else:
        not_confirmed = f"{count:,} line(s) not confirmed"
    aside = " (rejected lines aside)" if rejected else ""
    text = (
        f"{why}; {delivery.confirmed:,} line(s) confirmed, {not_confirmed}{aside}: "
        f"{_format_runs(runs)}; all numbers in {list_path}; {resume}"
    )
    return DeliveryError(text) if delivery.retriable else DeliveryRefused(text)
