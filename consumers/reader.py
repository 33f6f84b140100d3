"""The Kafka reader: a child process that fetches, merges and decodes records.

Fetching, parsing record batches and Avro decoding cost about as much CPU as folding and
writing. Running them in their own process puts read+decode and fold+write on two cores at
once; the pipe between them gives natural back-pressure. The reader sends typed events
(pickled through their constructors, see ProfileEvent.__reduce__) in the merged order.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import marshal
import multiprocessing as mp
import os
import pickle
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

from kafka import KafkaConsumer, TopicPartition

from consumers.codec import DecodeError
from consumers.event_preparer import EventPreparer
from consumers.kafka_client import (
    BrokerUnavailable,
    BrokerWait,
    check_log_holds,
    kafka_consumer,
    kafka_errors,
    topic_partitions,
)
from consumers.key_store import KeyStoreError, SealingConfig
from consumers.ordering import PartitionMerger
from consumers.records import RawRecord, block_consumer
from profile_engine.batch_fold import Prepared
from profile_engine.crypto import KeyMaterialError
from profile_engine.errors import NeedsOperator, ProfileEngineError, Transient, first_line
from profile_engine.rules import EventTimePolicy

DEFAULT_TIME_POLICY = EventTimePolicy()


class Undecodable(NamedTuple):
    """A message the codec refused: everything a dead letter needs."""

    timestamp_ms: int
    key: bytes | None
    value: bytes
    reason: str


# (partition, offset, the event prepared for the fold or why there is none), in merged order.
DecodedRecord = tuple[int, int, Prepared | Undecodable]

_RECORDS = "records"
_END = "end"
_IDLE = "idle"
_ERROR = "error"
_STARTED = "started"  # payload: (positions, stable offsets) per partition
_STABLE = "stable"  # payload: last stable offsets per partition
_READ_UPTO = "read_upto"  # payload: per partition, offset below which all was released
_WAITING = "waiting"  # payload: epoch seconds of the broker's last answer, None when back
CHUNK = 2_000
POLL_MS = 200
# Without records for this long, ask the broker for its end offsets: the answer is the
# follower's new target (last stable offsets) and the proof that the broker is there.
PROBE_AFTER_S = 1.0
# A follower that keeps receiving records still refreshes its target this often (for lag).
REFRESH_TARGET_S = 5.0
# How long one attempt to reach the broker may take before it counts as unanswered.
ATTEMPT_TIMEOUT_MS = 3_000
MIN_ATTEMPT_S = 1.0
# How often the folding side looks at a stop request while it waits for the reader.
STOP_CHECK_S = 0.2


@dataclass(frozen=True)
class ReadPlan:
    bootstrap_servers: str
    topic: str
    stored_offsets: dict[int, int]  # next offset per partition the projections hold (else 0)
    once: bool  # stop when caught up with the last stable offsets seen at start
    required_topics: tuple[str, ...] = ()  # must exist as well (e.g. the dead-letter topic)
    give_up_after: float | None = None  # seconds without the broker before failing; None: wait
    time_policy: EventTimePolicy = DEFAULT_TIME_POLICY  # the event-time window's bounds
    sealing: SealingConfig | None = None  # a keyed projection: blind indexes, sealed events


def _send(conn: Connection, kind: str, payload: Any = None) -> None:
    conn.send_bytes(pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL))


def _decoded(
    records: Iterator[RawRecord], preparer: EventPreparer, policy: EventTimePolicy
) -> Iterator[DecodedRecord]:
    """Each record decoded and prepared for the fold, or why it cannot be: any failure of one
    message (a contract break, or anything a hostile message makes the decoder raise) is a
    dead letter of that message, never a stop. Only a key store that cannot be read, or key
    material that does not fit the master key, stops the reader: every message would fail."""
    message = preparer.message
    for partition, offset, timestamp, key, value in records:
        if value is None:
            yield partition, offset, Undecodable(timestamp, key, b"", "null value: not an event")
            continue
        try:
            yield partition, offset, message(value, policy.for_record(timestamp))
        except DecodeError as error:
            yield partition, offset, Undecodable(timestamp, key, value, str(error))
        except (KeyMaterialError, KeyStoreError, BrokerUnavailable):
            raise
        except Exception as error:  # a poison message: kept with the reason, never a stop
            reason = f"cannot fold: {type(error).__name__}: {first_line(error)}"
            yield partition, offset, Undecodable(timestamp, key, value, reason)


def _to_wire(chunk: list[DecodedRecord]) -> bytes:
    """Plain tuples in ``marshal`` bytes: several times cheaper than pickling named tuples
    (see consumers/wire.py)."""
    return marshal.dumps(
        [(p, o, tuple(item), isinstance(item, Undecodable)) for p, o, item in chunk]
    )


def _from_wire(data: bytes) -> list[DecodedRecord]:
    return [
        (p, o, Undecodable(*fields) if undecodable else Prepared(*fields))
        for p, o, fields, undecodable in marshal.loads(data)
    ]


class _ParentGone(Exception):
    pass


def _pause_since(attempt_started: float) -> None:
    """Space attempts at least MIN_ATTEMPT_S apart (some failures are instant)."""
    time.sleep(max(0.0, MIN_ATTEMPT_S - (time.monotonic() - attempt_started)))


class _Reading:
    """The reader process's work: plan, fetch, merge, decode, send; wait for the broker."""

    def __init__(self, plan: ReadPlan, conn: Connection) -> None:
        self.plan = plan
        self.conn = conn
        self.preparer: EventPreparer | None = None
        self.broker = BrokerWait(plan.bootstrap_servers, plan.give_up_after)
        self._parent = os.getppid()

    def run(self) -> None:
        self.preparer = EventPreparer(self.plan.sealing)  # a keyed fold reads its keys first
        consumer, tps, merger = self._start()
        try:
            self._follow(consumer, tps, merger)
        finally:
            consumer.close()
            self.preparer.close()

    # -- start: topics, positions and targets, retried while the broker does not answer --
    def _start(self) -> tuple[KafkaConsumer, list[TopicPartition], PartitionMerger]:
        while True:
            self._check_parent()
            attempt_started = time.monotonic()
            try:
                consumer = block_consumer(
                    kafka_consumer(self.plan.bootstrap_servers, ATTEMPT_TIMEOUT_MS)
                )
            except BrokerUnavailable:
                self._unanswered()
                _pause_since(attempt_started)
                continue
            try:
                with kafka_errors(self.plan.bootstrap_servers):
                    tps, positions, stable = self._positions(consumer)
            except BrokerUnavailable:
                consumer.close()
                self._unanswered()
                _pause_since(attempt_started)
                continue
            except BaseException:
                consumer.close()
                raise
            self._answered()
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, positions[tp.partition])
            _send(self.conn, _STARTED, (positions, stable))
            return consumer, tps, PartitionMerger(stable, positions)

    def _positions(
        self, consumer: KafkaConsumer
    ) -> tuple[list[TopicPartition], dict[int, int], dict[int, int]]:
        plan = self.plan
        tps = topic_partitions(consumer, plan.topic)
        for topic in plan.required_topics:
            topic_partitions(consumer, topic)  # fail now, not at the first dead letter
        positions = {tp.partition: plan.stored_offsets.get(tp.partition, 0) for tp in tps}
        earliest = consumer.beginning_offsets(tps, timeout_ms=ATTEMPT_TIMEOUT_MS)
        check_log_holds(plan.topic, positions, {tp.partition: o for tp, o in earliest.items()})
        return tps, positions, self._stable_offsets(consumer, tps)

    @staticmethod
    def _stable_offsets(consumer: KafkaConsumer, tps: list[TopicPartition]) -> dict[int, int]:
        # read_committed: end offsets are last stable offsets (the end of committed data).
        ends = consumer.end_offsets(tps, timeout_ms=ATTEMPT_TIMEOUT_MS)
        return {tp.partition: offset for tp, offset in ends.items()}

    # -- follow: fetch, merge, send ---------------------------------------------------------
    def _follow(
        self, consumer: KafkaConsumer, tps: list[TopicPartition], merger: PartitionMerger
    ) -> None:
        # Decoding allocates millions of short-lived containers; automatic collections rescan
        # every chunk in flight and cost half the decode. Nothing here is long-lived, so young
        # cycles are collected once per poll and everything once in a while.
        gc.disable()
        once = self.plan.once
        polls = 0
        released = merger.released_upto()
        last_answer = last_probe = time.monotonic()
        while True:
            self._check_parent()
            polled = consumer.poll(timeout_ms=POLL_MS)
            for tp, blocks in polled.items():
                for block in blocks:
                    merger.add(tp.partition, block.records, block.next_offset)
            now = time.monotonic()
            if polled:
                last_answer = now
                self._answered()
            quiet = not polled and now - last_answer >= PROBE_AFTER_S
            if quiet or (not once and now - last_probe >= REFRESH_TARGET_S):
                last_probe = now
                stable = self._probe(consumer, tps)
                if stable is not None:
                    last_answer = time.monotonic()
                    if not once:  # --once keeps the target it started with
                        for partition, offset in stable.items():
                            merger.update_end(partition, offset)
                        _send(self.conn, _STABLE, stable)
            self._release(merger)
            now_released = merger.released_upto()
            if now_released != released:
                released = now_released
                _send(self.conn, _READ_UPTO, released)
            polls += 1
            gc.collect(2 if polls % 200 == 0 else 1)
            if merger.caught_up():
                if once:
                    _send(self.conn, _END)
                    return
                _send(self.conn, _IDLE)

    def _probe(self, consumer: KafkaConsumer, tps: list[TopicPartition]) -> dict[int, int] | None:
        """The last stable offsets, or None when the broker did not answer."""
        try:
            with kafka_errors(self.plan.bootstrap_servers):
                stable = self._stable_offsets(consumer, tps)
        except BrokerUnavailable:
            self._unanswered()
            return None
        self._answered()
        return stable

    def _release(self, merger: PartitionMerger) -> None:
        chunk: list[DecodedRecord] = []
        assert self.preparer is not None
        self.preparer.begin_chunk()
        for item in _decoded(merger.drain(), self.preparer, self.plan.time_policy):
            chunk.append(item)
            if len(chunk) >= CHUNK:
                _send(self.conn, _RECORDS, _to_wire(chunk))
                chunk = []
        if chunk:
            _send(self.conn, _RECORDS, _to_wire(chunk))

    # -- the broker's answers ---------------------------------------------------------------
    def _answered(self) -> None:
        if self.broker.answered():
            _send(self.conn, _WAITING, None)

    def _unanswered(self) -> None:
        if self.broker.failed():
            _send(self.conn, _WAITING, self.broker.since)
        self.broker.give_up_if_silent_too_long()

    def _check_parent(self) -> None:
        # Killed outright, the folding process cannot close the pipe; a reader that only
        # waits for the broker would never write to it and learn so.
        if os.getppid() != self._parent:
            raise _ParentGone


def _reader_main(plan: ReadPlan, conn: Connection) -> None:
    # Ctrl-C and SIGTERM may reach the whole process group; the folding process decides when
    # to stop (after committing what it holds) and then ends this one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The reader reports an unreachable broker itself ("waiting for the broker since …");
    # kafka-python's reconnect messages would repeat that on stderr many times a second.
    logging.getLogger("kafka").addHandler(logging.NullHandler())
    try:
        _Reading(plan, conn).run()
    except (BrokenPipeError, EOFError, _ParentGone):
        return  # the folding process is gone; nothing to do
    except ProfileEngineError as error:  # raised again by the folding process
        with contextlib.suppress(BrokenPipeError, OSError):
            _send(conn, _ERROR, error)
    except Exception as error:
        with contextlib.suppress(BrokenPipeError, OSError):
            _send(conn, _ERROR, ReaderError(f"{type(error).__name__}: {first_line(error)}"))
    finally:
        conn.close()


class ReaderError(NeedsOperator):
    pass


class ReaderDied(Transient):
    """The reader process ended without a word (killed, out of memory): reading again may
    well work (``consume`` exits 75, ``serve`` starts its fold again)."""


class KafkaReader:
    """Reads the topic in a child process; the folding process iterates ``chunks()``.

    - ``chunks()`` yields lists of (partition, offset, event | Undecodable) in the merged
      order, and None when there is nothing to read for now: caught up (when following), or
      the broker stopped answering or answers again (see ``waiting_since``). It returns when
      a --once read is caught up with the last stable offsets seen at start, or as soon as
      ``should_stop()`` is true (checked every STOP_CHECK_S while waiting for the reader).
    - ``waiting_since``: epoch seconds of the broker's last answer while it does not answer,
      else None. With ``plan.give_up_after`` the reader fails with BrokerUnavailable instead.
    - ``stable_offsets``: per partition, the last stable offset last seen (the end of
      committed data; the target of a --once read; the follower's target grows with it).
    - ``read_upto``: per partition, every message below this offset has been yielded or was
      not an event to yield (a transaction marker, a record of an aborted transaction).
      Offsets to commit are the greater of this and the last yielded offset + 1.

    A thread in this process drains the pipe into a bounded queue, so the child keeps
    fetching while the fold works instead of stalling on a full pipe.
    """

    def __init__(
        self,
        plan: ReadPlan,
        should_stop: Callable[[], bool] = lambda: False,
        queued_chunks: int = 64,
    ) -> None:
        self.waiting_since: float | None = None
        self.stable_offsets: dict[int, int] = {}
        self.read_upto: dict[int, int] = {}
        self._should_stop = should_stop
        ctx = mp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_reader_main, args=(plan, child_conn), name="kafka-reader", daemon=True
        )
        self._process.start()
        child_conn.close()
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=queued_chunks)
        self._closed = threading.Event()
        self._pump = threading.Thread(target=self._drain_pipe, name="kafka-pipe", daemon=True)
        self._pump.start()

    def _drain_pipe(self) -> None:
        while not self._closed.is_set():
            try:
                message = pickle.loads(self._conn.recv_bytes())
            except (EOFError, OSError, TypeError, ValueError):
                if self._closed.is_set():
                    return  # closed by us: the end of the pipe is expected
                message = (_ERROR, ReaderDied("the Kafka reader process stopped unexpectedly"))
            while not self._closed.is_set():
                try:
                    self._queue.put(message, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if message[0] in (_END, _ERROR):
                return

    def chunks(self) -> Iterator[list[DecodedRecord] | None]:
        while not self._should_stop():
            try:
                kind, payload = self._queue.get(timeout=STOP_CHECK_S)
            except queue.Empty:
                continue
            if kind == _RECORDS:
                yield _from_wire(payload)
            elif kind == _READ_UPTO:
                self.read_upto.update(payload)
            elif kind == _IDLE:
                yield None
            elif kind == _WAITING:
                self.waiting_since = payload
                yield None
            elif kind == _STABLE:
                self.stable_offsets.update(payload)
            elif kind == _STARTED:
                positions, stable = payload
                self.read_upto.update(positions)
                self.stable_offsets.update(stable)
            elif kind == _END:
                return
            else:
                raise payload

    def lag(self, next_offsets: dict[int, int]) -> int:
        """Committed messages not yet folded, given the next offset to fold per partition."""
        return sum(
            max(0, stable - max(next_offsets.get(p, 0), self.read_upto.get(p, 0)))
            for p, stable in self.stable_offsets.items()
        )

    def close(self) -> None:
        self._closed.set()
        # The reader holds nothing worth a clean exit (no commits, no writes), and it ignores
        # SIGTERM (see _reader_main): it is killed unless it already ended.
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=10)
        self._pump.join(timeout=10)  # the child's end of the pipe is closed now: EOF
        self._conn.close()
