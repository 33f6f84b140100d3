"""Batch-at-a-time record parsing gives exactly the records kafka-python gives."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

from consumers.kafka_client import kafka_consumer, topic_partitions
from consumers.records import BlockPartitionRecords, RawRecord, block_consumer

GZIP = 1

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


def _batch(base_offset: int, compression: int, records: list[Any]) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 30,
    )
    for delta, (timestamp, key, value, headers) in enumerate(records):
        builder.append(delta, timestamp=timestamp, key=key, value=value, headers=headers)
    buffer = builder.build()
    buffer[0:8] = base_offset.to_bytes(8, "big", signed=True)  # builders start at offset 0
    return bytes(buffer)


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


@settings(max_examples=60, deadline=None)
@given(
    first=records_strategy,
    second=records_strategy,
    compression=st.sampled_from([0, GZIP]),
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
