"""Batches other producers compress (gzip, snappy, lz4, zstd) are read and folded.

Each codec is produced by kafka-python's producer with ``compression_type`` against the real
broker, then read through the record parser (checking the batches really are compressed
with that codec) and folded by the consume command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition

from consumers.kafka_client import kafka_consumer
from consumers.producer import EventProducer
from consumers.records import BlockPartitionRecords, RawRecord, block_consumer
from profile_engine.events import ProfileEvent
from tests.profile_engine.builders import identify, track
from tests.support.processes import RunningCli

pytestmark = pytest.mark.kafka

# Kafka's codec ids, as record batch attributes carry them.
CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
EVENTS = 300


def similar_events() -> list[ProfileEvent]:
    """Events of one person (one key, so one partition): alike enough to compress well."""
    events: list[ProfileEvent] = [identify(0, {"city": "Bergen"}, email="ann@example.com")]
    for n in range(1, EVENTS):
        events.append(track(n, "page_viewed", {"path": f"/shop/{n % 7}"}, email="ann@example.com"))
    return events


class CodecSpy(BlockPartitionRecords):
    """The reader's parser, noting the codec of every batch it parses."""

    codecs: list[int] = []  # every instance appends here

    def _parse(self, partition: int, batch: Any) -> list[RawRecord]:
        CodecSpy.codecs.append(batch.compression_type)
        return super()._parse(partition, batch)


def read_through_parser(bootstrap: str, topic: str, partitions: int) -> list[RawRecord]:
    consumer = block_consumer(kafka_consumer(bootstrap))
    consumer._fetcher.PartitionRecords = CodecSpy
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    records: list[RawRecord] = []
    try:
        for _ in range(100):
            for blocks in consumer.poll(timeout_ms=500).values():
                records.extend(r for block in blocks for r in block.records)
            if len(records) >= EVENTS:
                break
    finally:
        consumer.close()
    return records


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_each_codec_is_read_and_folded(
    codec: str, kafka_bootstrap: str, fresh_topic: str, db_path: Path
) -> None:
    events = similar_events()
    with EventProducer(kafka_bootstrap, fresh_topic, compression_type=codec, linger_ms=200) as p:
        for event in events:
            p.send(event)
        p.flush()

    CodecSpy.codecs = []
    records = read_through_parser(kafka_bootstrap, fresh_topic, partitions=6)
    assert len(records) == EVENTS
    assert CodecSpy.codecs and set(CodecSpy.codecs) == {CODECS[codec]}

    cli = RunningCli(
        "consume", "--db", str(db_path), "--topic", fresh_topic, "--once",
        "--bootstrap-servers", kafka_bootstrap, "--dead-letter-topic", fresh_topic,
        "--format", "json",
    )  # fmt: skip
    code, out, err = cli.finish(timeout=180)
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["consumed"], summary["folded"], summary["dead_lettered"]) == (EVENTS, EVENTS, 0)
