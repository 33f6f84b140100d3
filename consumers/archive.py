"""Copy the event topic to an Avro Object Container File, and read such a file back.

The archive holds envelope records (the writer schema sits in the file header), so a rebuild
can replay the log without a broker. Messages are archived as Avro records *before* the
contract checks: a message the fold would dead-letter is kept and rejected again on replay,
exactly like on the topic. Only messages that are not Avro at all cannot be archived.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, cast

import fastavro
from kafka import KafkaConsumer, TopicPartition

from consumers.codec import AvroCodec, DecodeError, from_record
from consumers.kafka_client import kafka_errors, topic_partitions
from consumers.ordering import PartitionMerger
from consumers.records import RawRecord
from profile_engine.errors import BadInput
from profile_engine.events import ProfileEvent
from profile_engine.rules import FILES_WINDOW, EventTimeWindow
from projections.output_file import output_file

POLL_TIMEOUT_MS = 1_000
PAUSE_AFTER_RECORDS = 20_000  # buffered records of one partition waiting for the others
TOPIC_METADATA_KEY = "profile_engine.topic"


class Skipped(NamedTuple):
    """A message that is no event (not Avro of a known schema): it cannot be archived."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str


SkipCallback = Callable[[Skipped], None]
ProgressCallback = Callable[[int, int], None]  # records read so far, total to read


class ArchiveError(BadInput):
    """The archive cannot be written or read (no such topic, not an Avro container file)."""


def write_archive(
    bootstrap: str,
    topic: str,
    out_path: Path | str,
    *,
    on_skip: SkipCallback | None = None,
    on_progress: ProgressCallback | None = None,
) -> int:
    """Copy every message from the earliest offset to the end offsets seen at start.

    Returns the number of records written. Messages that are not Avro single-object
    messages of a known schema are reported through ``on_skip`` and left out.
    """
    codec = AvroCodec()
    with kafka_errors(bootstrap):
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id="profile-engine-archive",
            max_partition_fetch_bytes=8 * 1024 * 1024,
            isolation_level="read_committed",  # aborted transactions never reach the archive
        )
    try:
        partitions = _assign_from_start(consumer, topic)
        end_offsets: dict[TopicPartition, int] = consumer.end_offsets(partitions)
        total = sum(end - consumer.position(tp) for tp, end in end_offsets.items())
        records = _records(consumer, codec, end_offsets, total, on_skip, on_progress)
        # Complete or not at all: an interrupted archive leaves no partial file that a rebuild
        # would take for the whole log, nor destroys the archive it was replacing.
        with output_file(out_path) as out:
            return _write(out, codec.schema, records, topic)
    finally:
        consumer.close()


def _assign_from_start(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    partitions = topic_partitions(consumer, topic)  # a missing topic: for an operator
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    return partitions


def _records(
    consumer: KafkaConsumer,
    codec: AvroCodec,
    end_offsets: dict[TopicPartition, int],
    total: int,
    on_skip: SkipCallback | None,
    on_progress: ProgressCallback | None,
) -> Iterator[dict[str, Any]]:
    """The topic's records up to ``end_offsets``, in the order a fold from Kafka reads them:
    partitions interleaved by (timestamp, partition, offset) (consumers/ordering.py), so that
    a rebuild from the archive resolves identities exactly as a rebuild from the topic. In
    the order they arrive, partition by partition, an event of one partition could fold
    before an earlier one of another, land on another profile, and an erasure replayed from
    the archive would then erase (and destroy the keys of) someone else."""
    by_partition = {tp.partition: tp for tp in end_offsets}
    ends = {tp.partition: end for tp, end in end_offsets.items()}
    merger = PartitionMerger(ends, {tp.partition: consumer.position(tp) for tp in end_offsets})
    remaining = {tp for tp, end in end_offsets.items() if consumer.position(tp) < end}
    consumer.pause(*[tp for tp in end_offsets if tp not in remaining])
    read = 0
    while remaining:
        batches = consumer.poll(timeout_ms=POLL_TIMEOUT_MS, max_records=10_000)
        for tp, messages in batches.items():
            end = end_offsets[tp]
            wanted = [
                (tp.partition, m.offset, m.timestamp, m.key, m.value)
                for m in messages
                if m.offset < end  # past it: written after the archive started
            ]
            read += len(wanted)
            merger.add(tp.partition, wanted, min(consumer.position(tp), end))
            if consumer.position(tp) >= end:
                remaining.discard(tp)
        yield from _decoded(merger.drain(), codec, on_skip)
        # A partition far ahead of the others waits until they catch up, paused: the
        # archive holds at most a few fetches of each partition in memory.
        for partition, buffered in merger.buffered().items():
            tp = by_partition[partition]
            if tp not in remaining or buffered >= PAUSE_AFTER_RECORDS:
                consumer.pause(tp)
            else:
                consumer.resume(tp)
        if on_progress is not None:
            on_progress(read, total)


def _decoded(
    released: Iterable[RawRecord], codec: AvroCodec, on_skip: SkipCallback | None
) -> Iterator[dict[str, Any]]:
    for partition, offset, _, key, value in released:
        if value is None:  # a tombstone, reported as the consumer reports it
            reason = "null value: not an event"
        else:
            try:
                yield codec.read_record(value)
                continue
            except DecodeError as error:
                reason = error.reason
        if on_skip is not None:
            on_skip(Skipped(partition, offset, key, value, reason))


def _write(
    out: BinaryIO, schema: dict[str, Any], records: Iterator[dict[str, Any]], topic: str
) -> int:
    written = 0

    def counted() -> Iterator[dict[str, Any]]:
        nonlocal written
        for record in records:
            written += 1
            yield record

    fastavro.writer(
        out,
        fastavro.parse_schema(schema),
        counted(),
        codec="deflate",
        metadata={TOPIC_METADATA_KEY: topic},
    )
    return written


def iter_archive(
    path: Path | str, window: EventTimeWindow = FILES_WINDOW
) -> Iterator[tuple[int, ProfileEvent | None, str | None]]:
    """(record number from 1, event or None, reason or None) for every archived record.

    A record that breaks the contract, or a block that cannot be decoded, yields its reason
    and the iteration goes on with the next record or block.
    """
    for number, record, reason in iter_archive_records(path):
        if record is None:
            yield number, None, reason
        else:
            yield number, *_event_or_reason(record, window)


def iter_archive_records(
    path: Path | str,
) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """(record number from 1, envelope record or None, reason or None), before any contract
    check (sealed records stay sealed: see consumers/event_preparer.py)."""
    codec = AvroCodec()
    with Path(path).open("rb") as handle:
        try:
            blocks = fastavro.block_reader(handle, codec.reader_schema, return_record_name=True)
        except (ValueError, EOFError, StopIteration) as error:
            raise ArchiveError(f"{path}: not an Avro container file ({error})") from None
        number = 0
        while (block := _next_block(blocks, path, number)) is not None:
            consumed = 0
            try:
                for record in block:
                    consumed += 1
                    number += 1
                    yield number, cast(dict[str, Any], record), None
            except Exception as error:  # a corrupt block: report its records, go on
                reason = f"corrupt block: {type(error).__name__}: {error}"
                for _ in range(block.num_records - consumed):
                    number += 1
                    yield number, None, reason


def _next_block(blocks: Iterator[Any], path: Path | str, records_read: int) -> Any | None:
    """The next block of an archive, None after the last; ArchiveError when one cannot even be
    framed (a file cut short, as a copy or a write that was interrupted leaves it): what it
    held is unknown, so the replay cannot go on as if the log ended there."""
    try:
        return next(blocks)
    except StopIteration:
        return None
    except (ValueError, EOFError, OSError) as error:
        raise ArchiveError(
            f"{path}: damaged or cut short after record {records_read} ({error}); archive the "
            "topic again"
        ) from None


def _event_or_reason(
    record: Any, window: EventTimeWindow
) -> tuple[ProfileEvent | None, str | None]:
    try:
        return from_record(record, window), None
    except DecodeError as error:
        return None, error.reason
    except (KeyError, TypeError, AttributeError) as error:
        return None, f"record: {type(error).__name__}: {error}"
