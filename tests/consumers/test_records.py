"""Batch-at-a-time record parsing gives exactly the records kafka-python gives.

These tests guard the kafka-python version pin in pyproject.toml: the parser replaces
kafka-python's own per-partition class, so any new kafka-python minor must pass them first.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import IsolationLevel, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import Fetcher
from kafka.record.default_records import DefaultRecordBase, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.record.util import calc_crc32c

from consumers.kafka_client import kafka_consumer, topic_partitions
from consumers.records import BlockPartitionRecords, RawRecord, block_consumer

NONE, GZIP, SNAPPY, LZ4, ZSTD = 0, 1, 2, 3, 4
CONTROL = 0x20

records_strategy = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2**41),  # timestamp ms
        st.one_of(st.none(), st.binary(max_size=40)),  # key
        st.one_of(st.none(), st.binary(max_size=300)),  # value (None: a tombstone)
        st.lists(st.tuples(st.text(max_size=5), st.binary(max_size=5)), max_size=2),  # headers
    ),
    min_size=1,
    max_size=40,
)


def _batch(base_offset: int, compression: int, records: list[Any], producer_id: int = -1) -> bytes:
    """A v2 batch; with a producer id it belongs to that producer's open transaction."""
    transactional = producer_id >= 0
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=transactional,
        producer_id=producer_id,
        producer_epoch=0 if transactional else -1,
        base_sequence=0 if transactional else -1,
        batch_size=1 << 30,
    )
    for delta, (timestamp, key, value, headers) in enumerate(records):
        builder.append(delta, timestamp=timestamp, key=key, value=value, headers=headers)
    buffer = builder.build()
    buffer[0:8] = base_offset.to_bytes(8, "big", signed=True)  # builders start at offset 0
    return bytes(buffer)


def _marker(base_offset: int, producer_id: int, commit: bool) -> bytes:
    """The control batch a broker writes when a transaction commits or aborts."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=NONE,
        is_transactional=True,
        producer_id=producer_id,
        producer_epoch=0,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    key = struct.pack(">hh", 0, 1 if commit else 0)  # version, type (0 abort, 1 commit)
    builder.append(0, timestamp=1, key=key, value=struct.pack(">hi", 0, 0), headers=[])
    buffer = builder.build()
    buffer[0:8] = base_offset.to_bytes(8, "big", signed=True)
    attributes_at = DefaultRecordBase.ATTRIBUTES_OFFSET
    attributes = struct.unpack_from(">h", buffer, attributes_at)[0] | CONTROL
    struct.pack_into(">h", buffer, attributes_at, attributes)
    crc = calc_crc32c(memoryview(buffer)[attributes_at:])
    struct.pack_into(">I", buffer, DefaultRecordBase.CRC_OFFSET, crc)
    return bytes(buffer)


class AbortedTransaction(NamedTuple):
    """What a fetch response lists for each aborted transaction in the fetched range."""

    producer_id: int
    first_offset: int


def _kafka_python_records(partition: int, data: bytes, fetch_offset: int) -> list[RawRecord]:
    out: list[RawRecord] = []
    records = MemoryRecords(data)
    while (batch := records.next_batch()) is not None:
        out.extend(
            (partition, r.offset, r.timestamp, r.key, r.value)
            for r in batch
            if r.offset >= fetch_offset
        )
    return out


def _blocks(partition: int, data: bytes, fetch_offset: int) -> list[RawRecord]:
    tp = TopicPartition("t", partition)
    parsed = BlockPartitionRecords(fetch_offset, tp, MemoryRecords(data))
    return [record for block in parsed.take() for record in block.records]


def _read_committed(
    cls: type[Any], data: bytes, fetch_offset: int, aborted: list[AbortedTransaction]
) -> Any:
    return cls(
        fetch_offset,
        TopicPartition("t", 0),
        MemoryRecords(data),
        isolation_level=IsolationLevel.READ_COMMITTED,
        aborted_transactions=aborted,
    )


@settings(max_examples=60, deadline=None)
@given(
    first=records_strategy,
    second=records_strategy,
    compression=st.sampled_from([NONE, GZIP, SNAPPY, LZ4, ZSTD]),
    base=st.integers(min_value=0, max_value=2**40),
    skip=st.integers(min_value=0, max_value=50),
)
def test_parsed_batches_match_kafka_python_records(
    first: list[Any], second: list[Any], compression: int, base: int, skip: int
) -> None:
    # Two batches back to back, fetched from an offset that may fall inside the first one
    # (a seek into the middle of a batch returns the whole batch).
    data = _batch(base, compression, first) + _batch(base + len(first), compression, second)
    fetch_offset = base + skip
    expected = _kafka_python_records(3, data, fetch_offset)
    assert _blocks(3, data, fetch_offset) == expected


# A transactional log: each step is a batch of records of one producer (opening its
# transaction), a plain batch (producer -1), or a producer's commit or abort marker.
steps_strategy = st.lists(
    st.tuples(
        st.sampled_from(["data", "data", "commit", "abort"]),
        st.integers(min_value=-1, max_value=2),  # producer id; -1: not transactional
        st.integers(min_value=1, max_value=4),  # records in a data batch
        st.sampled_from([NONE, GZIP, ZSTD]),
    ),
    min_size=1,
    max_size=25,
)


def _transactional_log(
    steps: list[tuple[str, int, int, int]],
) -> tuple[bytes, list[AbortedTransaction], set[int], int]:
    """(log bytes, aborted transactions, offsets of aborted records, offset after the log)."""
    data, aborted, aborted_offsets = b"", [], set()
    open_since: dict[int, list[int]] = {}  # producer -> offsets of its open transaction
    offset = 0
    for kind, producer, count, compression in steps:
        if kind == "data":
            numbers = range(offset, offset + count)
            records = [(1000 + n, b"k", f"v{n}".encode(), []) for n in numbers]
            data += _batch(offset, compression, records, producer)
            if producer >= 0:
                open_since.setdefault(producer, []).extend(range(offset, offset + count))
            offset += count
        elif producer in open_since:
            data += _marker(offset, producer, commit=kind == "commit")
            written = open_since.pop(producer)
            if kind == "abort":
                aborted.append(AbortedTransaction(producer, written[0]))
                aborted_offsets.update(written)
            offset += 1
    return data, aborted, aborted_offsets, offset


@settings(max_examples=80, deadline=None)
@given(steps=steps_strategy, skip=st.integers(min_value=0, max_value=10))
def test_read_committed_skips_markers_and_aborted_records_as_kafka_python_does(
    steps: list[tuple[str, int, int, int]], skip: int
) -> None:
    data, aborted, aborted_offsets, end = _transactional_log(steps)
    plain = _read_committed(Fetcher.PartitionRecords, data, skip, aborted)
    expected = [(0, r.offset, r.timestamp, r.key, r.value) for r in plain.take()]
    blocks = _read_committed(BlockPartitionRecords, data, skip, aborted).take()
    assert [record for block in blocks for record in block.records] == expected
    assert not {record[1] for record in expected} & aborted_offsets
    # However the log ends (a marker, an aborted batch), the reader learns it was read to
    # the end: this is what lets a partition count as caught up at its last stable offset.
    if end > 0 and data:
        assert blocks and blocks[-1].next_offset == end


def test_a_partition_that_ends_with_a_commit_marker_is_read_to_the_markers_next_offset() -> None:
    data = _batch(0, NONE, [(1, b"k", b"a", []), (2, b"k", b"b", [])], producer_id=7)
    data += _marker(2, 7, commit=True)
    blocks = _read_committed(BlockPartitionRecords, data, 0, []).take()
    assert [r[4] for block in blocks for r in block.records] == [b"a", b"b"]
    assert blocks[-1].next_offset == 3


def test_an_aborted_transaction_alone_yields_no_records_but_its_next_offset() -> None:
    data = _batch(0, NONE, [(1, b"k", b"gone", [])], producer_id=7) + _marker(1, 7, commit=False)
    blocks = _read_committed(BlockPartitionRecords, data, 0, [AbortedTransaction(7, 0)]).take()
    assert [(block.records, block.next_offset) for block in blocks] == [([], 2)]


def test_a_corrupt_batch_is_refused_not_misread() -> None:
    data = bytearray(_batch(0, 0, [(1, b"k", b"value", [])]))
    data[-3] ^= 0xFF  # flip bits inside the record; the CRC no longer matches
    with pytest.raises(Exception, match="CRC"):
        _blocks(0, bytes(data), 0)


@pytest.mark.kafka
def test_block_consumer_reads_what_a_plain_consumer_reads(
    kafka_bootstrap: str, fresh_topic: str
) -> None:
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, compression_type="gzip", linger_ms=5
    )
    for n in range(3000):
        key = None if n % 7 == 0 else f"key-{n % 50}".encode()
        headers = [("h", b"x")] if n % 11 == 0 else []
        producer.send(fresh_topic, key=key, value=f"value {n}".encode() * (n % 5), headers=headers)
    producer.flush()
    producer.close()

    def read_all(consumer: KafkaConsumer, as_blocks: bool) -> list[RawRecord]:
        tps = topic_partitions(consumer, fresh_topic)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        total = sum(consumer.end_offsets(tps).values())
        out: list[RawRecord] = []
        while len(out) < total:
            for items in consumer.poll(timeout_ms=1000).values():
                if as_blocks:
                    out.extend(r for block in items for r in block.records)
                else:
                    out.extend((r.partition, r.offset, r.timestamp, r.key, r.value) for r in items)
        consumer.close()
        return sorted(out, key=lambda r: (r[0], r[1]))

    plain = read_all(kafka_consumer(kafka_bootstrap), as_blocks=False)
    blocks = read_all(block_consumer(kafka_consumer(kafka_bootstrap)), as_blocks=True)
    assert len(plain) == 3000
    assert blocks == plain
