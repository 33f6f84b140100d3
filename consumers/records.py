"""Record batches parsed a batch at a time instead of a record at a time.

kafka-python turns every record into a ConsumerRecord through a chain of generators: about
8 µs a record on a small machine, as much as decoding the Avro inside it. The fold needs
only partition, offset, timestamp, key and value, so the reader's consumer hands each
fetched record batch to ``parse_records`` instead: one tight loop over the batch bytes, about
a quarter of the cost. Fetching, leaders, sessions, CRC checks and decompression (gzip,
snappy, lz4, zstd) stay kafka-python's; only the per-record unpacking is replaced, and with it
the read_committed filtering of transactions, which kafka-python does in the class replaced
here. This leans on kafka-python internals, so pyproject pins its minor version; the tests in
tests/consumers/test_records.py and test_transactions.py compare it with kafka-python's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kafka import IsolationLevel, KafkaConsumer
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.record.util import decode_varint

# (partition, offset, timestamp_ms, key, value): plain tuples, cheap to build, merge and pickle.
# A null value (a tombstone) stays None, as kafka-python gives it.
RawRecord = tuple[int, int, int, bytes | None, bytes | None]

_LOG_APPEND_TIME = 0x08


def parse_records(
    partition: int,
    data: bytes,
    count: int,
    base_offset: int,
    base_timestamp: int,
    log_append_time: int | None,
    skip_below: int,
) -> list[RawRecord]:
    """The records of one uncompressed v2 batch body (headers are not needed and skipped)."""
    records: list[RawRecord] = []
    append = records.append
    varint = decode_varint
    pos = 0
    for _ in range(count):
        length, pos = varint(data, pos)
        end = pos + length
        pos += 1  # record attributes: unused in v2
        timestamp_delta, pos = varint(data, pos)
        offset_delta, pos = varint(data, pos)
        key_length, pos = varint(data, pos)
        key: bytes | None = None
        if key_length >= 0:
            key = data[pos : pos + key_length]
            pos += key_length
        value_length, pos = varint(data, pos)
        value = data[pos : pos + value_length] if value_length >= 0 else None
        if end > len(data):
            raise CorruptRecordError(f"record at offset {base_offset + offset_delta} is truncated")
        pos = end
        offset = base_offset + offset_delta
        if offset < skip_below:
            continue
        if log_append_time is None:
            append((partition, offset, base_timestamp + timestamp_delta, key, value))
        else:
            append((partition, offset, log_append_time, key, value))
    return records


class RecordBlock:
    """A run of records of one partition; stands where kafka-python yields one record.

    ``next_offset`` is where reading this partition goes on: every offset below it has been
    read, including the transaction markers and aborted records that were skipped. A block
    may hold no records at all when it only stands for skipped ones, so a partition whose log
    ends with a commit marker still reads as caught up at the marker's next offset.
    """

    __slots__ = ("next_offset", "offset", "records")

    def __init__(self, records: list[RawRecord], next_offset: int, offset: int) -> None:
        self.records = records
        self.next_offset = next_offset
        self.offset = offset  # read by kafka-python to skip records before a seek


class BlockPartitionRecords(Fetcher.PartitionRecords):
    """kafka-python's per-partition fetch result, yielding one RecordBlock per batch.

    With ``isolation_level="read_committed"`` it reads what kafka-python's own class would:
    control batches (transaction markers) are never returned and the batches of aborted
    transactions are skipped, using the aborted-transaction list of the fetch response.
    """

    def _unpack_records(
        self, tp: Any, records: Any, key_deserializer: Any, value_deserializer: Any
    ) -> Iterator[RecordBlock]:
        skipped_since_last_block = False
        batch = records.next_batch()
        while batch is not None:
            if batch.magic != 2:
                raise CorruptRecordError(
                    f"partition {tp.partition}: message format v{batch.magic} is not supported"
                )
            if self.check_crcs and not batch.validate_crc():
                raise CorruptRecordError(
                    f"record batch for {tp} at offset {batch.base_offset} failed its CRC check"
                )
            self.leader_epoch = batch.leader_epoch
            self.next_fetch_offset = batch.next_offset
            if self._skips(batch):
                skipped_since_last_block = True
            else:
                parsed = self._parse(tp.partition, batch)
                if parsed:
                    skipped_since_last_block = False
                    yield RecordBlock(parsed, batch.next_offset, parsed[0][1])
                else:
                    skipped_since_last_block = True
            batch = records.next_batch()
        if skipped_since_last_block:
            # Nothing to fold, but the reader must learn how far this partition was read.
            yield RecordBlock([], self.next_fetch_offset, self.fetch_offset)
        self.drain()

    def _skips(self, batch: Any) -> bool:
        """True for a control batch or a batch of an aborted transaction (read_committed).

        The same bookkeeping as kafka-python's PartitionRecords: a producer id joins the
        aborted set when a batch reaches the first offset of one of its aborted transactions
        and leaves it at that transaction's abort marker.
        """
        if self.isolation_level == IsolationLevel.READ_COMMITTED and batch.has_producer_id():
            self._consume_aborted_transactions_up_to(batch.last_offset)
            if self._contains_abort_marker(batch):
                self.aborted_producer_ids.discard(batch.producer_id)
            elif self._is_batch_aborted(batch):
                return True
        return bool(batch.is_control_batch)

    def _parse(self, partition: int, batch: Any) -> list[RawRecord]:
        batch._maybe_uncompress()  # kafka-python's codecs
        body = bytes(memoryview(batch._buffer)[batch._pos :])
        parsed = parse_records(
            partition,
            body,
            batch.records_count,
            batch.base_offset,
            batch.first_timestamp,
            batch.max_timestamp if batch.attributes & _LOG_APPEND_TIME else None,
            self.fetch_offset,
        )
        self.records_read += len(parsed)
        self.bytes_read += batch.size_in_bytes
        return parsed


def block_consumer(consumer: KafkaConsumer) -> KafkaConsumer:
    """Make ``poll`` return RecordBlocks (one per record batch) instead of records."""
    consumer._fetcher.PartitionRecords = BlockPartitionRecords
    return consumer
