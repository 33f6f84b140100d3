"""The publish pipeline without a broker: blocks, line encoding, and accounting for every line.

The broker side (real Kafka, killed mid-file) is tested in tests/cli/test_publish.py.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consumers.batch_producer import Delivery
from consumers.codec import AvroCodec
from consumers.publish import BlockReader, LineEncoder, Reject, content_event_id, publish_lines
from consumers.record_batches import BuiltBatch, KeyPartitioner
from profile_engine.events import datetime_to_us

TS = "2026-01-01T10:00:00Z"


def event_line(number: int, **extra: Any) -> bytes:
    event = {
        "event_id": f"e{number}", "type": "track", "timestamp": TS,
        "identifiers": {"anonymous_id": f"a{number % 7}"}, "event": "page_view",
        "properties": {"n": number},
    }  # fmt: skip
    event.update(extra)
    return json.dumps({k: v for k, v in event.items() if v is not None}).encode()


def encoder(max_batch_bytes: int = 1_048_588, partitions: int = 3) -> LineEncoder:
    return LineEncoder(None, "US", partitions, max_batch_bytes)


def records_of(batches: list[BuiltBatch]) -> dict[int, bytes]:
    """line -> Avro value, read back from the batches' bytes."""
    from kafka.record.memory_records import MemoryRecords

    found = {}
    for built in batches:
        records = MemoryRecords(bytes(built.to_bytes(1, 0, 0)))
        batch = records.next_batch()
        for line, record in zip(built.lines, batch, strict=True):
            found[line] = record.value
    return found


# --- reading blocks ------------------------------------------------------------------------


def test_blocks_hold_whole_lines_numbered_from_one() -> None:
    text = b"one\ntwo\n" + b"x" * 50 + b"\nfour\r\n\nsix"
    reader = BlockReader(io.BytesIO(text), block_bytes=8)
    lines = {}
    for first, block in reader:
        assert block.endswith(b"\n") or block.endswith(b"six")
        for offset, line in enumerate(block.split(b"\n")):
            if line:
                lines[first + offset] = line
    assert lines == {1: b"one", 2: b"two", 3: b"x" * 50, 4: b"four\r", 6: b"six"}
    assert reader.unread() is None


def test_a_stopped_reader_tells_which_lines_of_a_file_were_never_handed_out(
    tmp_path: Path,
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(b"line %d\n" % n for n in range(1, 101)) + b"last")
    with path.open("rb") as handle:
        reader = BlockReader(handle, block_bytes=64)
        handed = []
        for first, block in reader:
            handed.append((first, block.count(b"\n")))
            if len(handed) == 3:
                reader.stop()
        next_line = handed[-1][0] + handed[-1][1]
        assert reader.unread() == (next_line, 101)


def test_lines_in_a_pipe_go_out_before_the_pipe_ends_and_its_rest_is_unread() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"".join(b"line %d\n" % n for n in range(1, 50)))  # the pipe stays open
    handed: list[tuple[int, bytes]] = []
    with os.fdopen(read_end, "rb") as pipe:
        reader = BlockReader(pipe)  # a 1 MB block: the pipe holds far less

        def read_one_block() -> None:
            for first, block in reader:
                handed.append((first, block))
                reader.stop()

        thread = threading.Thread(target=read_one_block, daemon=True)
        thread.start()
        thread.join(timeout=30)
        os.close(write_end)
        assert not thread.is_alive(), "the reader waited for the pipe to end"
        assert handed[0][0] == 1 and handed[0][1].count(b"\n") == 49
        assert reader.unread() == (50, None)


# --- encoding lines ------------------------------------------------------------------------


def test_valid_lines_become_batches_and_invalid_ones_rejects_with_the_rule() -> None:
    block = (
        b"\n".join(
            [
                event_line(1),
                b"{not json",
                event_line(3, timestamp="2026-01-01T10:00:00"),
                b"   ",
                b'{"event_id": "n", "type": "track", "timestamp": "2026-01-01T10:00:00Z", '
                b'"identifiers": {"anonymous_id": "a"}, "event": "x", "properties": {"v": NaN}}',
                b"[1, 2]",
                event_line(7),
            ]
        )
        + b"\n"
    )
    encoded = encoder().encode_block(1, block)
    assert [(r.line, r.reason) for r in encoded.rejects] == [
        (
            2,
            "event: not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        ),
        (3, "timestamp: timestamp must carry a UTC offset (e.g. 2026-01-01T10:00:00Z)"),
        (5, "properties.v: must be a finite number (no NaN or Infinity)"),
        (6, "event: must be a JSON object"),
    ]
    assert encoded.rejects[0].raw == b"{not json"
    values = records_of(encoded.batches)
    assert sorted(values) == [1, 7]
    assert AvroCodec().decode(values[7]).event_id == "e7"
    assert encoded.size == len(block)


def test_a_line_without_event_id_gets_one_derived_from_its_content() -> None:
    block = event_line(1, event_id=None) + b"\n" + event_line(2, event_id="") + b"\n"
    codec = AvroCodec()
    first = records_of(encoder().encode_block(1, block).batches)
    again = records_of(encoder().encode_block(1, block).batches)
    ids = {line: codec.decode(value).event_id for line, value in first.items()}
    assert ids == {line: codec.decode(value).event_id for line, value in again.items()}
    assert ids[1] == content_event_id(event_line(1, event_id=None))
    assert ids[1] != ids[2]


def test_sealed_a_line_without_event_id_gets_a_keyed_id_not_a_hash_of_its_values() -> None:
    """The line holds the person's values in clear: a plain hash of it on the log would be a
    dictionary attack away from them after an erasure. Sealed, the id is keyed by the master
    key, stable from run to run (a re-publish is still deduplicated)."""
    from profile_engine.sealing import SealingPlan
    from tests.support.sealed_cli import MASTER, RING

    line = event_line(1, event_id=None)
    codec = AvroCodec()

    def published_id() -> str:
        sealed = LineEncoder(None, "US", 3, 1_048_588, SealingPlan.new(MASTER, {}))
        (value,) = records_of(sealed.encode_block(1, line + b"\n").batches).values()
        return str(codec.read_record(value)["event_id"])

    first = published_id()
    assert first == published_id() == RING.content_id(line)
    assert first != content_event_id(line)


def test_a_line_too_large_for_the_topic_is_rejected_and_the_next_lines_go() -> None:
    big = event_line(2, properties={"blob": "x" * 5_000})
    block = b"\n".join([event_line(1), big, event_line(3)]) + b"\n"
    encoded = encoder(max_batch_bytes=2_000).encode_block(1, block)
    assert [r.line for r in encoded.rejects] == [2]
    assert "more than the topic accepts (max.message.bytes 2,000)" in encoded.rejects[0].reason
    assert sorted(records_of(encoded.batches)) == [1, 3]


def test_the_kafka_timestamp_is_the_event_time_but_never_after_the_clock() -> None:
    from kafka.record.memory_records import MemoryRecords

    # Three hours ahead: inside the event-time window (a day), beyond what Kafka 4 accepts as
    # a record timestamp (an hour ahead of the broker's clock).
    ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
    block = event_line(1) + b"\n" + event_line(2, timestamp=ahead.isoformat()) + b"\n"
    before = time.time_ns() // 1_000_000
    (built,) = encoder(partitions=1).encode_block(1, block).batches
    after = time.time_ns() // 1_000_000
    records = list(MemoryRecords(bytes(built.to_bytes(1, 0, 0))).next_batch())
    assert records[0].timestamp == 1_767_261_600_000  # 2026-01-01T10:00:00Z
    assert before <= records[1].timestamp <= after  # the clock, not three hours ahead
    codec = AvroCodec()  # the event keeps its own time
    assert codec.decode(records[1].value).timestamp_us == datetime_to_us(ahead)


# --- accounting for every line ---------------------------------------------------------------


class GivesUpAfter:
    """A stand-in for BatchProducer that confirms some batches, then gives up (no Kafka)."""

    partitions = 3
    max_batch_bytes = 4_000

    def __init__(self, batches: int) -> None:
        self.delivery = Delivery()
        self.left = batches

    def send(self, built: BuiltBatch) -> bool:
        if self.left == 0:
            if self.delivery.gave_up is None:
                self.delivery.gave_up = "no confirmation from Kafka for 1 s"
            return False
        self.left -= 1
        self.delivery.confirmed += built.record_count
        return True

    def finish(self) -> Delivery:
        return self.delivery


@pytest.mark.parametrize("workers", [0, 1])
def test_every_line_is_confirmed_rejected_unconfirmed_or_unread(
    tmp_path: Path, workers: int
) -> None:
    path = tmp_path / "in.jsonl"
    lines = [event_line(n) if n % 50 else b"{broken" for n in range(1, 20_001)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    rejected: list[Reject] = []
    producer = GivesUpAfter(batches=30)
    with path.open("rb") as handle:
        result = publish_lines(
            handle,
            producer,
            workers=workers,
            on_reject=rejected.append,  # type: ignore[arg-type]
        )
    delivery = result.delivery
    assert delivery.gave_up is not None and not result.complete
    assert result.unread is not None and result.unread[1] == 20_000
    unread = set(range(result.unread[0], 20_001))
    assert unread and len(unread) < 20_000 - 5_000  # reading stopped early
    unconfirmed = set(delivery.unconfirmed)
    rejects = {r.line for r in rejected}
    assert rejects == {n for n in range(50, result.unread[0], 50)}
    assert not (unconfirmed & rejects) and not (unconfirmed & unread)
    confirmed = set(range(1, result.unread[0])) - unconfirmed - rejects
    assert len(confirmed) == delivery.confirmed > 0


def test_partitions_follow_the_key_as_kafka_would() -> None:
    encoded = encoder(partitions=5).encode_block(1, b"\n".join(event_line(n) for n in range(1, 40)))
    partitioner = KeyPartitioner(5)
    for built in encoded.batches:
        for line in built.lines:
            assert partitioner(f"anonymous_id:a{line % 7}".encode()) == built.partition
