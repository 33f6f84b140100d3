"""Publish a JSON Lines stream: validate each line, send the valid ones in record batches.

The input is read in blocks of whole lines. Each block is validated, encoded and built into
per-partition record batches in one step, in worker processes for large inputs (so the sending
process only reads, hands out blocks and queues finished batches) or in this process for small
ones. Blocks come back in input order, so one person's events keep their order.

Every non-blank line ends as exactly one of: rejected (reported and kept, it breaks the
contract or is too large for the topic), confirmed by the broker, or unconfirmed (listed by
number; see ``consumers.batch_producer``). When the producer gives up, reading stops; the lines
never read are unconfirmed too.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import time
import uuid
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple

from consumers.batch_producer import BatchProducer, Delivery
from consumers.codec import EncodeError
from consumers.producer import EventEncoder, now_ms
from consumers.record_batches import Batcher, BuiltBatch, KeyPartitioner, RecordTooLarge
from profile_engine.contract import ContractError, TraitValidator, parse_event
from profile_engine.errors import ProfileEngineError
from profile_engine.identifiers import DEFAULT_PHONE_REGION
from profile_engine.rules import load_json_text, window_at_publish
from profile_engine.sealing import Sealer, SealingPlan

# Input per unit of work: big enough that a block's batches are worth a request and the
# inter-process traffic is a few large pickles, small enough to keep memory flat.
BLOCK_BYTES = 1 << 20
# Below this many bytes a worker pool costs more to start than it saves.
PARALLEL_MIN_BYTES = 4 * 1024 * 1024
# Lines without an event_id get one derived from their content, so that publishing the same
# file again (to resume after a failure) cannot duplicate them.
CONTENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "profile-engine:publish:line")

ValidatorFactory = Callable[[], TraitValidator | None]
# Writes key records and returns once the key store acknowledged them (KeyStore.publish).
KeySink = Callable[[list[tuple[str, bytes]]], object]


@dataclass(frozen=True)
class Reject:
    """An input line that was not published: its number, why, and its exact bytes."""

    line: int
    reason: str
    raw: bytes


class EncodedBlock(NamedTuple):
    batches: list[BuiltBatch]
    rejects: list[Reject]
    size: int  # input bytes the block covered (for progress)
    # Sealed publishing: (key ref, wrapped key) of the data keys the block's events need
    # that the key store may not hold yet; they are written before the block's batches.
    keys: tuple[tuple[str, bytes], ...] = ()
    next_line: int = 0  # the number of the line after the block's (BlockReader's count)


STOPPED = "publishing was stopped"


@dataclass
class PublishResult:
    rejected: int = 0
    seconds: float = 0.0
    delivery: Delivery = field(default_factory=Delivery)
    # Lines never read because the producer gave up: (first, last); last is None for a pipe.
    unread: tuple[int, int | None] | None = None
    # Ctrl-C or SIGTERM, which stopped it (raised again once every line is accounted for).
    stopped_by: KeyboardInterrupt | None = None

    @property
    def published(self) -> int:
        return self.delivery.confirmed

    @property
    def events_per_s(self) -> float:
        return self.published / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        return not self.delivery.unconfirmed and self.unread is None


def content_event_id(line: bytes) -> str:
    return str(uuid.uuid5(CONTENT_ID_NAMESPACE, line.decode("utf-8", "replace")))


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class LineEncoder:
    """A block of JSON lines -> per-partition record batches, and a Reject per invalid line."""

    def __init__(
        self,
        trait_validator: TraitValidator | None,
        phone_region: str,
        partitions: int,
        max_batch_bytes: int,
        sealing: SealingPlan | None = None,
    ) -> None:
        self.trait_validator = trait_validator
        self.phone_region = phone_region
        self.partitioner = KeyPartitioner(partitions)
        self.max_batch_bytes = max_batch_bytes
        self.sealer = Sealer(sealing) if sealing is not None else None
        self.encoder = EventEncoder(sealer=self.sealer)
        # Sealed, a line's own id must not be a plain hash of it: the line holds the values.
        self.event_id_of = content_event_id if self.sealer is None else self._keyed_event_id

    def _keyed_event_id(self, line: bytes) -> str:
        assert self.sealer is not None
        return self.sealer.ring.content_id(line)

    def encode_block(self, first_line: int, block: bytes) -> EncodedBlock:
        batcher = Batcher(self.partitioner, self.max_batch_bytes)
        parse, encode, add = parse_event, self.encoder.encode, batcher.add
        validator, region = self.trait_validator, self.phone_region
        event_id_of = self.event_id_of
        rejects: list[Reject] = []
        clock = now_ms()  # the block is queued right after it is encoded
        # The producer's edge check of event times: this machine's clock plus a day (the
        # consumer checks again against each record's own timestamp).
        window = window_at_publish(clock * 1000)
        for number, raw in enumerate(block.split(b"\n"), start=first_line):
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if not raw or raw.isspace():
                continue
            try:
                item = load_json_text(raw, "event")
                if type(item) is dict and item.get("event_id") in (None, ""):
                    item["event_id"] = event_id_of(raw)
                key, value, timestamp_ms = encode(parse(item, region, validator, window), clock)
                add(key, value, timestamp_ms, number)
            except (ContractError, EncodeError) as error:
                rejects.append(Reject(number, str(error), raw))
            except RecordTooLarge as error:
                reason = (
                    f"event: the message takes {error.size:,} bytes, more than the topic accepts "
                    f"(max.message.bytes {error.limit:,})"
                )
                rejects.append(Reject(number, reason, raw))
            except ValueError as error:  # invalid JSON or UTF-8, or an unencodable value
                rejects.append(Reject(number, f"event: {_first_line(error)}", raw))
        keys = tuple(self.sealer.take_new_keys()) if self.sealer is not None else ()
        return EncodedBlock(
            batcher.take(), rejects, len(block), keys, first_line + block.count(b"\n")
        )


class BlockReader:
    """Whole-line blocks of a binary stream, each with the number of its first line.

    ``stop()`` ends the iteration before the next block; ``unread()`` then tells which lines
    were never handed out (counting to the end only when the stream is a seekable file).
    """

    def __init__(self, stream: IO[bytes], block_bytes: int = BLOCK_BYTES) -> None:
        self.stream = stream
        self.block_bytes = block_bytes
        self.next_line = 1
        self._carry = b""
        self._stopped = False
        self._exhausted = False

    def stop(self) -> None:
        self._stopped = True

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        pieces: list[bytes] = []
        while not self._stopped:
            data = self._read(self.block_bytes)
            if not data:
                self._exhausted = True
                if pieces:  # the last line has no newline
                    yield self._hand_out(b"".join(pieces))
                    pieces = []
                break
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # no line ends in it: a very long line, keep reading
                pieces.append(data)
                continue
            pieces.append(data[:cut])
            block = b"".join(pieces)
            pieces = [data[cut:]] if cut < len(data) else []
            yield self._hand_out(block)
        self._carry = b"".join(pieces)  # read but never handed out

    def _read(self, size: int) -> bytes:
        # read1 returns what a pipe holds now instead of waiting for a full block, so lines
        # written slowly into stdin go out as they come; from a file it reads a full block.
        read1 = getattr(self.stream, "read1", None)
        return bytes(read1(size)) if read1 is not None else bytes(self.stream.read(size))

    def _hand_out(self, block: bytes) -> tuple[int, bytes]:
        first = self.next_line
        self.next_line += block.count(b"\n")
        return first, block

    def unread(self) -> tuple[int, int | None] | None:
        """(first, last) line never handed out, last None when unknown; None if all were."""
        if self._exhausted:
            return None
        if not self.stream.seekable():
            return (self.next_line, None)
        newlines = self._carry.count(b"\n")
        last_byte = self._carry[-1:]
        while data := self.stream.read(self.block_bytes):
            newlines += data.count(b"\n")
            last_byte = data[-1:]
        lines = newlines + (1 if last_byte not in (b"", b"\n") else 0)
        return (self.next_line, self.next_line + lines - 1) if lines else None


# Worker processes build their encoder once (the registry is loaded in the worker).
_WORKER_ENCODER: LineEncoder | None = None


def _init_worker(
    validator_factory: ValidatorFactory | None,
    phone_region: str,
    partitions: int,
    max_batch_bytes: int,
    sealing: SealingPlan | None = None,
    parent: int | None = None,
) -> None:
    global _WORKER_ENCODER
    if parent is not None:
        _end_with_parent(parent)
    validator = validator_factory() if validator_factory is not None else None
    _WORKER_ENCODER = LineEncoder(validator, phone_region, partitions, max_batch_bytes, sealing)


_PR_SET_PDEATHSIG = 1


def _end_with_parent(parent: int) -> None:
    """A worker does not outlive the publishing process, however that ends (a SIGKILL gives
    it no chance to shut the pool down; its workers would wait for work forever): on Linux
    the kernel sends the worker SIGTERM when its parent ends."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it ended before that took hold
        os._exit(1)


def _encode_in_worker(first_line: int, block: bytes) -> EncodedBlock:
    assert _WORKER_ENCODER is not None, "worker not initialised"
    return _WORKER_ENCODER.encode_block(first_line, block)


def _encoded_blocks(
    blocks: BlockReader, workers: int, init_args: tuple[Any, ...]
) -> Iterator[EncodedBlock]:
    """Encoded blocks in input order (so one person's events keep their order)."""
    if workers <= 0:
        _init_worker(*init_args)
        for first_line, block in blocks:
            yield _encode_in_worker(first_line, block)
        return
    # spawn, not fork: the Kafka producer's sender thread is already running. An executor (not
    # multiprocessing.Pool) so that a worker that dies breaks the run instead of hanging it.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        workers, context, initializer=_init_worker, initargs=(*init_args, os.getpid())
    )
    with pool:
        pending: deque[Future[EncodedBlock]] = deque()
        window = workers * 3  # bounded read-ahead keeps memory flat on huge files
        for first_line, block in blocks:
            pending.append(pool.submit(_encode_in_worker, first_line, block))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def publish_lines(
    stream: IO[bytes],
    producer: BatchProducer,
    *,
    validator_factory: ValidatorFactory | None = None,
    phone_region: str = DEFAULT_PHONE_REGION,
    workers: int = 0,
    on_reject: Callable[[Reject], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    sealing: SealingPlan | None = None,
    key_sink: KeySink | None = None,
) -> PublishResult:
    """Validate every line, send the valid ones, report the invalid ones; wait for the broker.

    ``workers`` > 0 validates and encodes in that many processes while this one only sends.
    ``on_progress`` gets the number of input bytes handled so far. The result accounts for
    every line (``PublishResult.complete`` is False when some were not confirmed).
    ``sealing`` seals every event (README "Erasure that reaches the log"); ``key_sink``
    writes the data keys the sealed events need, acknowledged before their batches are sent.
    """
    result = PublishResult(delivery=producer.delivery)
    started = time.perf_counter()
    reader = BlockReader(stream)
    init_args = (
        validator_factory, phone_region, producer.partitions, producer.max_batch_bytes, sealing
    )  # fmt: skip
    written: set[str] = set()
    done = 1  # the first line of the blocks not yet handled whole
    current: EncodedBlock | None = None
    sent = 0  # of the current block's batches
    try:
        for encoded in _encoded_blocks(reader, workers, init_args):
            current, sent = encoded, 0
            for reject in encoded.rejects:
                result.rejected += 1
                if on_reject is not None:
                    on_reject(reject)
            if not _keys_written(encoded, key_sink, written, result):
                reader.stop()
                sent = len(encoded.batches)
            for batch in encoded.batches[sent:]:
                if not producer.send(batch):  # gave up: what is already encoded stays unsent
                    reader.stop()
                    result.delivery.fail(batch.lines, "not sent: publishing stopped", True)
                sent += 1
            done, current = encoded.next_line, None
            if on_progress is not None:
                on_progress(encoded.size)
    except KeyboardInterrupt as stop:
        # Every line still ends confirmed, rejected or listed: what was read but not sent is
        # listed with the lines never read, and what was sent is waited for below.
        result.stopped_by = stop
        reader.stop()
        if current is not None:
            for batch in current.batches[sent:]:
                result.delivery.fail(batch.lines, f"not sent: {STOPPED}", True)
            done = current.next_line
        result.delivery.fail(
            array("q", range(done, reader.next_line)), f"not sent: {STOPPED}", True
        )
        result.delivery.gave_up = STOPPED
    producer.finish()
    result.unread = reader.unread()
    result.seconds = time.perf_counter() - started
    return result


def _keys_written(
    encoded: EncodedBlock, key_sink: KeySink | None, written: set[str], result: PublishResult
) -> bool:
    """Write the block's new data keys first; when the key store refuses them, the block's
    lines are not sent (they are listed as unconfirmed) and publishing stops."""
    fresh = [(ref, wrapped) for ref, wrapped in encoded.keys if ref not in written]
    if not fresh or key_sink is None:
        return True
    try:
        key_sink(fresh)
    except ProfileEngineError as error:
        for batch in encoded.batches:
            result.delivery.fail(batch.lines, f"not sent: the key store refused: {error}", True)
        return False
    written.update(ref for ref, _ in fresh)
    return True
