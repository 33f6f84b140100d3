"""Fold sealed events without a broker: seal as `publish` does, open as the reader does, with
the key store in memory (consumers.key_store.MemoryKeyStore)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from consumers.codec import AvroCodec, DecodeError
from consumers.event_preparer import EventPreparer
from consumers.key_store import MemoryKeyStore, SealingConfig
from consumers.pipeline import FoldStats, Pipeline, PipelineOptions, Record
from consumers.producer import EventEncoder
from consumers.sources import CHUNK
from profile_engine.events import ProfileEvent
from profile_engine.fold import FoldConfig
from profile_engine.sealing import Sealer, SealingPlan
from projections.sealed import check_keying
from projections.store import DeadLetter, ProjectionStore


def seal_events(
    events: list[ProfileEvent], master: bytes, keys: MemoryKeyStore
) -> list[tuple[bytes, bytes]]:
    """(message key, message) of each event sealed; its new data keys go to ``keys`` first."""
    sealer = Sealer(SealingPlan.new(master, keys.live_keys()))
    encoder = EventEncoder(AvroCodec(), sealer)
    messages = []
    for event in events:
        key, value, _ = encoder.encode(event, 0)
        keys.publish(sealer.take_new_keys())
        messages.append((key, value))
    return messages


class SealedMessages:
    """A pipeline source of sealed messages, opened with the in-memory key store."""

    def __init__(self, messages: list[bytes], preparer: EventPreparer) -> None:
        self.name = "sealed"
        self._messages = messages
        self._preparer = preparer

    def chunks(self) -> Iterator[list[Record] | None]:
        chunk: list[Record] = []
        for line, value in enumerate(self._messages, start=1):
            if not chunk:
                self._preparer.begin_chunk()
            try:
                chunk.append(Record(None, None, line, self._preparer.message(value), None))
            except DecodeError as error:
                letter = DeadLetter(self.name, None, None, line, None, value, str(error), None)
                chunk.append(Record(None, None, line, None, letter))
            if len(chunk) >= CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def lag(self, next_offsets: dict[int, int]) -> int:
        return 0

    def close(self) -> None:
        pass


def sealed_fold_into_db(
    db_path: str | Path,
    messages: list[bytes],
    master: bytes,
    keys: MemoryKeyStore,
    config: FoldConfig | None = None,
    batch_size: int = 10_000,
) -> FoldStats:
    """Fold sealed messages in order into a keyed projection; erasures write erased markers
    into ``keys`` before their batch commits, as `consume` does on the key topic."""
    sealing = SealingConfig(master, "", "memory")
    preparer = EventPreparer(sealing, key_store=keys)
    with ProjectionStore(db_path) as store:
        check_keying(store, sealing.ring)
        fold_config = store.fold_config(config)
        options = PipelineOptions(batch_size=batch_size, max_wait_s=None, key_eraser=keys)
        return Pipeline(store, fold_config, options).run(SealedMessages(messages, preparer))
