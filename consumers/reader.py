"""The Kafka reader: a child process that fetches, merges and decodes records.

Fetching, parsing record batches and Avro decoding cost about as much CPU as folding and
writing. Running them in their own process puts read+decode and fold+write on two cores at
once; the pipe between them gives natural back-pressure. The reader sends typed events
(pickled through their constructors, see ProfileEvent.__reduce__) in the merged order.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import pickle
import queue
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

from kafka import TopicPartition

from consumers.codec import AvroCodec, DecodeError
from consumers.kafka_client import kafka_consumer
from consumers.ordering import PartitionMerger
from consumers.records import RawRecord, block_consumer
from profile_engine.errors import NeedsOperator
from profile_engine.events import ProfileEvent


class Undecodable(NamedTuple):
    """A message the codec refused: everything a dead letter needs."""

    timestamp_ms: int
    key: bytes | None
    value: bytes
    reason: str


# (partition, offset, the event or why there is none), in the merged order.
DecodedRecord = tuple[int, int, ProfileEvent | Undecodable]

_END = "end"
_IDLE = "idle"
_ERROR = "error"
CHUNK = 2_000


@dataclass(frozen=True)
class ReadPlan:
    bootstrap_servers: str
    topic: str
    positions: dict[int, int]  # next offset to read per partition
    ends: dict[int, int]  # end offsets seen at start
    once: bool


def _send(conn: Connection, kind: str, payload: Any = None) -> None:
    conn.send_bytes(pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL))


def _decoded(records: Iterator[RawRecord], codec: AvroCodec) -> Iterator[DecodedRecord]:
    decode = codec.decode
    for partition, offset, timestamp, key, value in records:
        if value is None:
            yield partition, offset, Undecodable(timestamp, key, b"", "null value: not an event")
            continue
        try:
            yield partition, offset, decode(value)
        except DecodeError as error:
            yield partition, offset, Undecodable(timestamp, key, value, str(error))


def _reader_main(plan: ReadPlan, conn: Connection) -> None:
    # Ctrl-C reaches the whole process group; the folding process decides when to stop
    # (after committing what it holds) and then closes the pipe, which ends this one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Decoding allocates millions of short-lived containers; automatic collections rescan
    # every chunk in flight and cost half the decode. Nothing here is long-lived, so young
    # cycles are collected once per poll and everything once in a while.
    gc.disable()
    polls = 0
    try:
        codec = AvroCodec()
        consumer = block_consumer(kafka_consumer(plan.bootstrap_servers))
        tps = [TopicPartition(plan.topic, p) for p in sorted(plan.positions)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, plan.positions[tp.partition])
        merger = PartitionMerger(plan.ends, plan.positions)
        while True:
            for tp, blocks in consumer.poll(timeout_ms=200).items():
                for block in blocks:
                    merger.add(tp.partition, block.records)
            if not plan.once:
                for tp in tps:
                    high = consumer.highwater(tp)
                    if high is not None:
                        merger.update_end(tp.partition, high)
            chunk: list[DecodedRecord] = []
            for item in _decoded(merger.drain(), codec):
                chunk.append(item)
                if len(chunk) >= CHUNK:
                    _send(conn, "records", chunk)
                    chunk = []
            if chunk:
                _send(conn, "records", chunk)
            polls += 1
            gc.collect(2 if polls % 200 == 0 else 1)
            if merger.caught_up():
                if plan.once:
                    _send(conn, _END)
                    break
                _send(conn, _IDLE)
        consumer.close()
    except (BrokenPipeError, EOFError):
        return  # the folding process is gone; nothing to do
    except Exception as error:  # reported to the parent, which raises it
        with contextlib.suppress(BrokenPipeError, OSError):
            _send(conn, _ERROR, f"{type(error).__name__}: {error}")
    finally:
        conn.close()


class ReaderError(NeedsOperator):
    pass


class KafkaReader:
    """Yields chunks of raw records from the child process; ``None`` means caught up.

    A thread in this process drains the pipe into a bounded queue, so the child keeps
    fetching while the fold works instead of stalling on a full pipe.
    """

    def __init__(self, plan: ReadPlan, queued_chunks: int = 64) -> None:
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
            except (EOFError, OSError):
                message = (_ERROR, "the Kafka reader process stopped unexpectedly")
            while not self._closed.is_set():
                try:
                    self._queue.put(message, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if message[0] in (_END, _ERROR):
                return

    def chunks(self) -> Iterator[list[DecodedRecord] | None]:
        while True:
            kind, payload = self._queue.get()
            if kind == "records":
                yield payload
            elif kind == _IDLE:
                yield None
            elif kind == _END:
                return
            else:
                raise ReaderError(payload)

    def close(self) -> None:
        self._closed.set()
        self._conn.close()
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)
        self._pump.join(timeout=5)
