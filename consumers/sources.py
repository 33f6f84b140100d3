"""Sources of the one pipeline: Kafka, a JSON Lines or Avro archive file, an in-memory list.

Each yields ``Record``s in a deterministic order (see consumers/pipeline.py), so the same
input always folds to the same projections whatever the source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from consumers.codec import DecodeError
from consumers.event_preparer import EventPreparer
from consumers.key_store import SealingConfig
from consumers.pipeline import DEFAULT_BATCH_SIZE, Record, prepared_record
from consumers.process_stream import ProcessStream
from consumers.reader import KafkaReader, ReadPlan, Undecodable
from consumers.wire import records_from_wire, records_to_wire
from profile_engine.contract import ContractError, parse_event_line
from profile_engine.events import ProfileEvent
from profile_engine.keys import IdentifierHashes
from profile_engine.rules import EventTimePolicy, EventTimeWindow
from projections.store import DeadLetter

AVRO_CONTAINER_MAGIC = b"Obj\x01"
CHUNK = 2_000
# Chunks the decoding process may have waiting (marshal bytes, about 1 MB each): more than a
# default batch, so that it decodes the next batch while this process writes the last one.
# With fewer, it stops when the queue fills during the batch's SQL, and the fold then waits
# for the rest of its next batch to be decoded (see the README's Benchmarks).
QUEUED_CHUNKS = 2 * DEFAULT_BATCH_SIZE // CHUNK


class ListSource:
    """Events from memory, in the given order (tests and benchmarks)."""

    def __init__(
        self,
        events: Iterable[ProfileEvent],
        name: str = "memory",
        hashes: IdentifierHashes | None = None,
    ) -> None:
        self.name = name
        self._events = events
        self._hashes = hashes

    def chunks(self) -> Iterator[list[Record] | None]:
        chunk: list[Record] = []
        for number, event in enumerate(self._events, start=1):
            chunk.append(prepared_record(self.name, None, None, number, event, None, self._hashes))
            if len(chunk) >= CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def lag(self, next_offsets: dict[int, int]) -> int:
        return 0

    def close(self) -> None:
        pass


class FileSource:
    """A JSON Lines file (producer format) or an Avro container file written by `archive`,
    parsed and prepared in a child process while this one folds."""

    def __init__(
        self,
        path: Path,
        policy: EventTimePolicy | None = None,
        *,
        in_child: bool = True,
        sealing: SealingConfig | None = None,
    ) -> None:
        self.path = path
        self.name = str(path)
        self.policy = policy or EventTimePolicy()
        self._in_child = in_child
        self._sealing = sealing
        self._stream: ProcessStream | None = None

    def chunks(self) -> Iterator[list[Record] | None]:
        window = self.policy.for_files()
        if not self._in_child:
            yield from file_chunks(str(self.path), window, self._sealing)
            return
        self._stream = ProcessStream(
            wire_file_chunks, str(self.path), window, self._sealing, queued_chunks=QUEUED_CHUNKS
        )
        for data in self._stream:
            yield records_from_wire(data)

    def lag(self, next_offsets: dict[int, int]) -> int:
        return 0

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


def wire_file_chunks(
    path_text: str, window: EventTimeWindow, sealing: SealingConfig | None = None
) -> Iterator[bytes]:
    """``file_chunks`` as wire bytes (module level: it runs in the child process)."""
    for chunk in file_chunks(path_text, window, sealing):
        yield records_to_wire(chunk)


def file_chunks(
    path_text: str, window: EventTimeWindow, sealing: SealingConfig | None = None
) -> Iterator[list[Record]]:
    """The records of a file in chunks (module level: it runs in the child process). With
    ``sealing`` the fold is keyed and sealed archive records are opened with the key store."""
    path = Path(path_text)
    with path.open("rb") as handle:
        is_avro = handle.read(4) == AVRO_CONTAINER_MAGIC
    preparer = EventPreparer(sealing) if sealing is not None else None
    if is_avro:
        records = _archive_records(path, window, preparer)
    else:
        hashes = None if preparer is None else preparer.ring
        records = _json_records(path, window, hashes)
    chunk: list[Record] = []
    try:
        for record in records:
            chunk.append(record)
            if len(chunk) >= CHUNK:
                yield chunk
                chunk = []
                if preparer is not None:
                    preparer.begin_chunk()
        if chunk:
            yield chunk
    finally:
        if preparer is not None:
            preparer.close()


def _archive_records(
    path: Path, window: EventTimeWindow, preparer: EventPreparer | None = None
) -> Iterator[Record]:
    from consumers.archive import iter_archive, iter_archive_records

    name = str(path)
    if preparer is None:
        for number, event, error in iter_archive(path, window):
            if event is None:
                letter = DeadLetter(name, None, None, number, None, None, error or "bad record")
                yield Record(None, None, number, None, letter)
            else:
                yield prepared_record(name, None, None, number, event)
        return
    preparer.begin_chunk()
    for number, raw, error in iter_archive_records(path):
        if raw is not None:
            try:
                yield Record(None, None, number, preparer.record(raw, window), None)
                continue
            except DecodeError as refused:
                error = refused.reason
        letter = DeadLetter(name, None, None, number, None, None, error or "bad record")
        yield Record(None, None, number, None, letter)


def _json_records(
    path: Path, window: EventTimeWindow, hashes: IdentifierHashes | None = None
) -> Iterator[Record]:
    name = str(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            line = raw.rstrip(b"\r\n")
            try:
                event = parse_event_line(line, window=window)
            except ContractError as error:
                reason = str(error)
            else:
                yield prepared_record(name, None, None, number, event, line, hashes)
                continue
            yield Record(
                None, None, number, None, DeadLetter(name, None, None, number, None, line, reason)
            )


class KafkaSource:
    """The topic from the stored offsets, through the reader process (consumers/reader.py).

    Only committed data arrives; ``positions`` tells how far each partition was read even
    where nothing was yielded (transaction markers, aborted records), so stored offsets move
    past them; ``waiting_since`` is set while the broker does not answer.
    """

    def __init__(self, plan: ReadPlan, should_stop: Callable[[], bool] = lambda: False) -> None:
        self.plan = plan
        self.name = plan.topic
        self._should_stop = should_stop
        self._reader: KafkaReader | None = None

    @property
    def waiting_since(self) -> float | None:
        return None if self._reader is None else self._reader.waiting_since

    def positions(self) -> dict[int, int]:
        return {} if self._reader is None else dict(self._reader.read_upto)

    def chunks(self) -> Iterator[list[Record] | None]:
        self._reader = KafkaReader(self.plan, self._should_stop)
        topic = self.plan.topic
        for chunk in self._reader.chunks():
            if chunk is None:
                yield None
                continue
            records: list[Record] = []
            for partition, offset, item in chunk:
                if isinstance(item, Undecodable):
                    letter = DeadLetter(
                        topic, partition, offset, None, item.key, item.value, item.reason,
                        item.timestamp_ms * 1000,
                    )  # fmt: skip
                    records.append(Record(partition, offset, None, None, letter))
                else:
                    records.append(Record(partition, offset, None, item, None))
            yield records

    def lag(self, next_offsets: dict[int, int]) -> int:
        return 0 if self._reader is None else self._reader.lag(next_offsets)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
