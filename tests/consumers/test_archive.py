"""Archive: the topic copied to an Avro container file, and read back record by record."""

from __future__ import annotations

import contextlib
import heapq
from pathlib import Path

import fastavro
import pytest
from kafka import KafkaProducer

from consumers.archive import (
    ArchiveError,
    Skipped,
    iter_archive,
    iter_archive_records,
    write_archive,
)
from consumers.codec import AvroCodec, DecodeError, load_standalone, to_record
from consumers.kafka_client import TopicMissingError
from consumers.producer import EventProducer
from consumers.rebuild import rebuild_from_file, rebuild_from_kafka
from profile_engine.synthetic import generate_events
from tests.consumers.test_codec import foreign_message, sample_events
from tests.snapshots import dump
from tests.support.serving import publish_generated


def write_container(path: Path, records: list[dict], blocks: list[int]) -> None:
    """An uncompressed container file with the given number of records per block."""
    schema = fastavro.parse_schema(load_standalone())
    with path.open("wb") as handle:
        writer = fastavro.write.Writer(handle, schema, codec="null")
        position = 0
        for size in blocks:
            for record in records[position : position + size]:
                writer.write(record)
            writer.dump()  # ends the block
            position += size
        writer.flush()


def test_records_read_back_with_numbers_and_contract_checks(tmp_path: Path) -> None:
    events = sample_events()
    broken = to_record(events[3])
    broken["identifiers"] = []  # valid Avro, but no usable identifier
    path = tmp_path / "log.avro"
    write_container(path, [to_record(events[0]), broken, to_record(events[1])], [3])

    assert list(iter_archive(path)) == [
        (1, events[0], None),
        (2, None, "identifiers: at least one usable identifier is required"),
        (3, events[1], None),
    ]


def test_a_corrupt_block_does_not_stop_the_next_one(tmp_path: Path) -> None:
    events = sample_events()
    path = tmp_path / "log.avro"
    write_container(path, [to_record(e) for e in events[:4]], [2, 2])
    data = bytearray(path.read_bytes())
    # The enum index after the first event_id: 0 (identify) becomes 63, past every symbol.
    where = data.index(b"e-identify") + len(b"e-identify")
    assert data[where] == 0
    data[where] = 0x7E
    path.write_bytes(bytes(data))

    results = list(iter_archive(path))
    assert [number for number, _, _ in results] == [1, 2, 3, 4]
    assert results[0][1] is None and results[0][2] is not None
    assert results[0][2].startswith("corrupt block")
    assert results[1][1] is None  # the rest of the bad block cannot be trusted
    assert [event for _, event, _ in results[2:]] == events[2:4]


def test_an_archive_cut_short_is_an_error_naming_it_not_a_shorter_log(tmp_path: Path) -> None:
    events = sample_events()
    path = tmp_path / "log.avro"
    write_container(path, [to_record(e) for e in events[:4]], [2, 2])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])  # the second block's end and sync marker gone

    read: list[int] = []
    with pytest.raises(ArchiveError, match=r"log\.avro: damaged or cut short after record 2"):
        read.extend(number for number, _, _ in iter_archive(path))
    assert read == [1, 2]


def test_not_a_container_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"type": "identify"}\n')
    with pytest.raises(ArchiveError, match="not an Avro container file"):
        list(iter_archive(path))


@pytest.mark.kafka
def test_an_interrupted_archive_leaves_the_one_before_it_whole(
    kafka_bootstrap: str, fresh_topic: str, tmp_path: Path
) -> None:
    with EventProducer(kafka_bootstrap, fresh_topic) as producer:
        for event in sample_events():
            producer.send(event)
    out = tmp_path / "topic.avro"
    write_archive(kafka_bootstrap, fresh_topic, out)
    whole = out.read_bytes()

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_archive(kafka_bootstrap, fresh_topic, out, on_progress=interrupt)
    assert out.read_bytes() == whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["topic.avro"]  # no partial file left


@pytest.mark.kafka
def test_archive_copies_the_topic_and_replays_it(
    kafka_bootstrap: str, fresh_topic: str, tmp_path: Path
) -> None:
    events = sample_events()
    codec = AvroCodec()
    contract_break = to_record(events[4])
    contract_break["identifiers"] = []
    with EventProducer(kafka_bootstrap, fresh_topic) as producer:
        for event in events:
            producer.send(event)
    raw = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    raw.send(fresh_topic, key=b"k", value=b"not avro at all")
    raw.send(fresh_topic, key=b"t", value=None)  # a tombstone
    raw.send(fresh_topic, key=b"k", value=foreign_message(codec, contract_break))
    raw.flush()

    skipped: list[Skipped] = []
    late_sent = False

    def produce_late(done: int, total: int) -> None:
        # Sent after the end offsets were taken: must not be archived, must not block.
        nonlocal late_sent
        if not late_sent:
            late_sent = True
            raw.send(fresh_topic, key=b"late", value=codec.encode(events[0])).get(timeout=30)

    out = tmp_path / "topic.avro"
    count = write_archive(
        kafka_bootstrap,
        fresh_topic,
        out,
        on_skip=skipped.append,
        on_progress=produce_late,
    )
    raw.close()

    assert late_sent
    assert count == len(events) + 1  # the contract break is kept, the garbage is not
    # Left out, whole, for the caller to keep (the CLI writes them beside the archive).
    assert sorted((m.key, m.value) for m in skipped) == [(b"k", b"not avro at all"), (b"t", None)]
    reasons = {m.key: m.reason for m in skipped}
    assert reasons[b"k"].startswith("bad magic")
    assert reasons[b"t"] == "null value: not an event"  # as the consumer words it
    replayed = list(iter_archive(out))
    assert [number for number, _, _ in replayed] == list(range(1, count + 1))
    good = sorted((e for _, e, _ in replayed if e is not None), key=lambda e: e.event_id)
    assert good == sorted(events, key=lambda e: e.event_id)
    assert [reason for _, e, reason in replayed if e is None] == [
        "identifiers: at least one usable identifier is required"
    ]
    with out.open("rb") as handle:
        assert fastavro.reader(handle).metadata["profile_engine.topic"] == fresh_topic


def read_order(bootstrap: str, topic: str) -> list[str]:
    """The topic's event ids in the order a fold from Kafka reads them (consumers/ordering.py:
    each partition in offset order, the partitions interleaved by the (timestamp, partition,
    offset) of their next message), read here with a plain consumer and merged."""
    from kafka import KafkaConsumer, TopicPartition

    codec = AvroCodec()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, consumer_timeout_ms=3000)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        found: dict[int, list[tuple[tuple[int, int, int], str]]] = {}
        for m in consumer:
            with contextlib.suppress(DecodeError):  # raw garbage: never archived
                event_id = codec.read_record(m.value)["event_id"]
                found.setdefault(m.partition, []).append(((m.timestamp, m.partition, m.offset),
                                                          event_id))  # fmt: skip
    finally:
        consumer.close()
    per_partition = [sorted(rows, key=lambda row: row[0][2]) for rows in found.values()]
    return [event_id for _, event_id in heapq.merge(*per_partition, key=lambda row: row[0])]


@pytest.mark.kafka
def test_the_archive_holds_the_topic_in_the_folds_order_and_rebuilds_the_same(
    kafka_bootstrap: str, fresh_topic: str, tmp_path: Path
) -> None:
    """Written in the order it arrives (one partition's fetches after another's), an archive
    replayed by `rebuild --from-file` folded an event before an earlier one of another
    partition: identities resolved otherwise, and an erasure took another person."""
    publish_generated(kafka_bootstrap, fresh_topic, generate_events(3_000, seed=5))
    out = tmp_path / "topic.avro"
    write_archive(kafka_bootstrap, fresh_topic, out)
    archived = [record["event_id"] for _, record, _ in iter_archive_records(out) if record]
    assert archived == read_order(kafka_bootstrap, fresh_topic)
    from_kafka, from_file = tmp_path / "kafka.duckdb", tmp_path / "file.duckdb"
    rebuild_from_kafka(str(from_kafka), kafka_bootstrap, fresh_topic, batch_size=700)
    rebuild_from_file(str(from_file), str(out), batch_size=700)
    tables = dump(from_kafka)
    assert tables["profiles"] and tables["profile_merges"] and tables["identity_conflicts"]
    # A file has no offsets, and its dead letters name the file, not partitions and offsets.
    apart = ("consumer_offsets", "dead_letters")
    assert {k: v for k, v in dump(from_file).items() if k not in apart} == {
        k: v for k, v in tables.items() if k not in apart
    }


@pytest.mark.kafka
def test_archive_of_a_missing_topic_is_a_clear_error(kafka_bootstrap: str, tmp_path: Path) -> None:
    with pytest.raises(TopicMissingError, match="does not exist; create it with"):
        write_archive(kafka_bootstrap, "no-such-topic-for-archive", tmp_path / "x.avro")
    assert list(tmp_path.iterdir()) == []
