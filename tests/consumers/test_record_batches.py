"""Record batches built by hand, read back by kafka-python's own batch reader."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_murmur2
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.memory_records import MemoryRecords
from kafka.record.util import encode_varint

from consumers.record_batches import (
    HEADER_SIZE,
    Batcher,
    KeyPartitioner,
    RecordTooLarge,
    murmur2,
    varint,
)

LIMIT = 1_048_588


@given(st.binary(max_size=200))
def test_murmur2_is_kafkas(key: bytes) -> None:
    assert murmur2(key) == kafka_murmur2(key)


@given(st.binary(min_size=1, max_size=64), st.integers(1, 500))
def test_partition_is_the_default_partitioners_choice(key: bytes, partitions: int) -> None:
    assert KeyPartitioner(partitions)(key) == (kafka_murmur2(key) & 0x7FFFFFFF) % partitions


@given(st.integers(-(2**63), 2**63 - 1))
def test_varint_is_kafkas_zigzag_varint(value: int) -> None:
    expected = bytearray()
    encode_varint(value, expected.append)
    assert varint(value) == bytes(expected)


def read_back(batch_bytes: bytes) -> list[DefaultRecordBatch]:
    batches = []
    records = MemoryRecords(batch_bytes)
    while (batch := records.next_batch()) is not None:
        batches.append(batch)
    return batches


def test_a_built_batch_is_a_valid_v2_batch_with_the_producer_state() -> None:
    batcher = Batcher(KeyPartitioner(1), LIMIT)
    sent = [
        (b"email:ann@example.com", b"first", 1_767_225_600_000),
        (b"email:bob@example.com", b"second" * 300, 1_767_225_500_000),  # earlier: delta < 0
        (b"customer_id:C9", b"", 1_767_225_700_123),
    ]
    for line, (key, value, timestamp) in enumerate(sent, start=10):
        batcher.add(key, value, timestamp, line)
    (built,) = batcher.take()
    assert list(built.lines) == [10, 11, 12]
    assert built.record_count == 3 and built.partition == 0

    (batch,) = read_back(
        bytes(built.to_bytes(producer_id=4711, producer_epoch=3, base_sequence=42))
    )
    assert batch.validate_crc()
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (4711, 3, 42)
    assert batch.magic == 2 and not batch.is_transactional and batch.compression_type == 0
    assert batch.first_timestamp == sent[0][2]
    assert batch.max_timestamp == sent[2][2]
    assert batch.last_offset_delta == 2 and batch.records_count == 3
    assert [(r.offset, r.key, r.value, r.timestamp) for r in batch] == [
        (offset, key, value, timestamp) for offset, (key, value, timestamp) in enumerate(sent)
    ]
    assert [list(r.headers) for r in read_back(bytes(built.to_bytes(1, 0, 0)))[0]] == [[]] * 3


def test_records_go_to_their_keys_partition_in_order_and_batches_stay_under_the_limit() -> None:
    partitioner = KeyPartitioner(4)
    limit = 4_000
    batcher = Batcher(partitioner, limit)
    expected: dict[int, list[int]] = defaultdict(list)
    for line in range(1, 401):
        key = f"anonymous_id:a{line % 13}".encode()
        batcher.add(key, b"v" * 90, 1_767_225_600_000 + line, line)
        expected[partitioner(key)].append(line)
    built = batcher.take()

    seen: dict[int, list[int]] = defaultdict(list)
    for batch in built:
        assert batch.size <= limit
        (parsed,) = read_back(bytes(batch.to_bytes(1, 0, 0)))
        assert parsed.validate_crc() and parsed.records_count == len(batch.lines)
        assert all(partitioner(r.key) == batch.partition for r in parsed)
        seen[batch.partition].extend(batch.lines)
    assert seen == expected
    assert len(built) > 4  # the limit split partitions into several batches


def test_a_record_too_large_for_any_batch_is_refused_and_the_batcher_goes_on() -> None:
    batcher = Batcher(KeyPartitioner(1), 1_000)
    batcher.add(b"k", b"small", 1, 1)
    with pytest.raises(RecordTooLarge) as raised:
        batcher.add(b"k", b"x" * 1_000, 2, 2)
    assert raised.value.limit == 1_000 and raised.value.size > 1_000
    batcher.add(b"k", b"after", 3, 3)
    assert [list(b.lines) for b in batcher.take()] == [[1], [3]]


def test_a_record_that_exactly_fits_alone_is_accepted() -> None:
    probe = Batcher(KeyPartitioner(1), LIMIT)
    probe.add(b"k", b"x" * 500, 1, 1)
    (alone,) = probe.take()
    exact = Batcher(KeyPartitioner(1), alone.size)
    exact.add(b"k", b"x" * 500, 1, 1)
    assert exact.take()[0].size == alone.size == HEADER_SIZE + len(alone.records)
