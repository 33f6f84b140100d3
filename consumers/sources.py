"""Sources of the one pipeline: Kafka, a JSON Lines or Avro archive file, an in-memory list.

Each yields ``Record``s in a deterministic order (see consumers/pipeline.py), so the same
input always folds to the same projections whatever the source.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from consumers.pipeline import Record
from consumers.reader import KafkaReader, ReadPlan, Undecodable
from profile_engine.contract import ContractError, parse_event
from profile_engine.events import ProfileEvent
from projections.store import DeadLetter

AVRO_CONTAINER_MAGIC = b"Obj\x01"
CHUNK = 2_000


class ListSource:
    """Events from memory, in the given order (tests and benchmarks)."""

    def __init__(self, events: Iterable[ProfileEvent], name: str = "memory") -> None:
        self.name = name
        self._events = events

    def chunks(self) -> Iterator[list[Record] | None]:
        chunk: list[Record] = []
        for number, event in enumerate(self._events, start=1):
            chunk.append(Record(None, None, number, event, None))
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
    """A JSON Lines file (producer format) or an Avro container file written by `archive`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)

    def chunks(self) -> Iterator[list[Record] | None]:
        chunk: list[Record] = []
        for record in self._records():
            chunk.append(record)
            if len(chunk) >= CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _records(self) -> Iterator[Record]:
        with self.path.open("rb") as handle:
            is_avro = handle.read(4) == AVRO_CONTAINER_MAGIC
        if is_avro:
            yield from self._archive_records()
        else:
            yield from self._json_records()

    def _archive_records(self) -> Iterator[Record]:
        from consumers.archive import iter_archive

        for number, event, error in iter_archive(self.path):
            if event is None:
                reason = error or "bad record"
                letter = DeadLetter(self.name, None, None, number, None, None, reason)
                yield Record(None, None, number, None, letter)
            else:
                yield Record(None, None, number, event, None)

    def _json_records(self) -> Iterator[Record]:
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    event = parse_event(json.loads(raw))
                except (ContractError, ValueError, RecursionError) as error:
                    reason = (
                        str(error) if isinstance(error, ContractError) else f"invalid JSON: {error}"
                    )
                    line = raw.rstrip(b"\r\n")
                    letter = DeadLetter(self.name, None, None, number, None, line, reason)
                    yield Record(None, None, number, None, letter)
                else:
                    yield Record(None, None, number, event, None)

    def lag(self, next_offsets: dict[int, int]) -> int:
        return 0

    def close(self) -> None:
        pass


class KafkaSource:
    """The topic from the stored offsets, through the reader process (consumers/reader.py)."""

    def __init__(self, plan: ReadPlan) -> None:
        self.plan = plan
        self.name = plan.topic
        self._reader: KafkaReader | None = None
        self._ends = dict(plan.ends)

    def chunks(self) -> Iterator[list[Record] | None]:
        self._reader = KafkaReader(self.plan)
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
        ends = self._ends
        return sum(max(0, ends.get(p, 0) - next_offsets.get(p, 0)) for p in ends)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
