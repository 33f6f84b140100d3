"""Logs written by transactional producers: committed records folded, aborted ones never.

The producer is kafka-python's transactional producer against the real broker, writing
what Kafka Streams, Flink, Debezium or the Java client with transactions write: records,
then a commit or abort marker on every partition the transaction touched.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import duckdb
import pytest
from kafka import KafkaConsumer, TopicPartition

from consumers.consumer import ConsumeOptions, ConsumeStats, consume
from consumers.kafka_client import kafka_consumer, topic_partitions
from consumers.records import RawRecord, block_consumer
from profile_engine.events import ProfileEvent
from tests.profile_engine.builders import identify
from tests.support.kafka_logs import in_transaction, send_events, transactional_producer
from tests.support.processes import RunningCli

pytestmark = pytest.mark.kafka

ONCE = ConsumeOptions(once=True)


def people(prefix: str, count: int, minute: int = 0) -> list[ProfileEvent]:
    """One identify per person, each person keyed (so spread) over the partitions."""
    return [
        identify(minute + n, {"city": "Oslo"}, eid=f"{prefix}-{n}", email=f"{prefix}{n}@x.org")
        for n in range(count)
    ]


def applied_event_ids(db_path: Path) -> set[str]:
    with duckdb.connect(str(db_path), read_only=True) as con:
        return {row[0] for row in con.execute("SELECT event_id FROM applied_events").fetchall()}


def stored_offsets(db_path: Path) -> dict[int, int]:
    with duckdb.connect(str(db_path), read_only=True) as con:
        rows = con.execute('SELECT "partition", next_offset FROM consumer_offsets').fetchall()
    return dict(rows)


def stable_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def test_committed_records_are_folded_and_aborted_ones_are_not(
    kafka_bootstrap: str, fresh_topic: str, db_path: Path
) -> None:
    committed = people("kept", 12) + people("later", 5, minute=100)
    with transactional_producer(kafka_bootstrap) as producer:
        in_transaction(producer, fresh_topic, committed[:12], commit=True)
        in_transaction(producer, fresh_topic, people("aborted", 9, minute=50), commit=False)
        in_transaction(producer, fresh_topic, committed[12:], commit=True)
    stats = consume(str(db_path), kafka_bootstrap, fresh_topic, None, options=ONCE)
    assert (stats.consumed, stats.folded, stats.dead_lettered) == (17, 17, 0)
    assert applied_event_ids(db_path) == {event.event_id for event in committed}
    # Offsets move past the markers and the aborted records: nothing is left to read.
    ends = stable_offsets(kafka_bootstrap, fresh_topic)
    assert sum(ends.values()) > 17  # markers and aborted records take offsets too
    assert stored_offsets(db_path) == ends
    assert stats.lag == 0


def test_the_block_consumer_reads_what_kafka_pythons_read_committed_consumer_reads(
    kafka_bootstrap: str, fresh_topic: str
) -> None:
    with transactional_producer(kafka_bootstrap, compression_type="gzip") as producer:
        for n in range(6):
            batch = people(f"t{n}-", 20, minute=n * 30)
            in_transaction(producer, fresh_topic, batch, commit=n % 3 != 1)

    def read_all(consumer: KafkaConsumer, as_blocks: bool) -> list[RawRecord]:
        tps = topic_partitions(consumer, fresh_topic)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[RawRecord] = []
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, "never reached the last stable offsets"
            for items in consumer.poll(timeout_ms=500).values():
                if as_blocks:
                    out.extend(r for block in items for r in block.records)
                else:
                    out.extend((r.partition, r.offset, r.timestamp, r.key, r.value) for r in items)
        consumer.close()
        return sorted(out, key=lambda r: (r[0], r[1]))

    plain = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, isolation_level="read_committed", group_id=None
    )
    expected = read_all(plain, as_blocks=False)
    assert len(expected) == 80  # 4 committed transactions of 20
    assert read_all(block_consumer(kafka_consumer(kafka_bootstrap)), as_blocks=True) == expected


def test_consume_once_ends_when_partitions_end_with_transaction_markers(
    kafka_bootstrap: str, fresh_topic: str, db_path: Path
) -> None:
    with transactional_producer(kafka_bootstrap) as producer:
        in_transaction(producer, fresh_topic, people("a", 10), commit=True)
        in_transaction(producer, fresh_topic, people("b", 4, minute=20), commit=False)
    cli = RunningCli(
        "consume", "--db", str(db_path), "--topic", fresh_topic, "--once",
        "--bootstrap-servers", kafka_bootstrap, "--dead-letter-topic", fresh_topic,
        "--format", "json",
    )  # fmt: skip
    code, out, err = cli.finish(timeout=180)
    assert code == 0, err
    summary = json.loads(out)
    assert (summary["consumed"], summary["folded"], summary["lag"]) == (10, 10, 0)


def test_consume_once_stops_at_the_last_stable_offset_while_a_transaction_is_open(
    kafka_bootstrap: str, fresh_topic: str, db_path: Path
) -> None:
    with transactional_producer(kafka_bootstrap) as open_producer:
        with transactional_producer(kafka_bootstrap) as producer:
            in_transaction(producer, fresh_topic, people("done", 8), commit=True)
        open_producer.begin_transaction()
        send_events(open_producer, fresh_topic, people("pending", 6, minute=30))
        open_producer.flush()  # on the log, neither committed nor aborted yet
        stats = consume(str(db_path), kafka_bootstrap, fresh_topic, None, options=ONCE)
        assert (stats.consumed, stats.folded) == (8, 8)
        open_producer.commit_transaction()
    stats = consume(str(db_path), kafka_bootstrap, fresh_topic, None, options=ONCE)
    assert (stats.consumed, stats.folded) == (6, 6)
    assert len(applied_event_ids(db_path)) == 14


def test_a_follower_is_not_held_back_by_an_open_transaction(
    kafka_bootstrap: str, fresh_topic: str, db_path: Path
) -> None:
    # An open transaction on partition 0, committed data on partition 1. The follower must
    # fold and commit the committed data and count as caught up at the last stable offsets,
    # not wait for the open transaction's end as if its records were unread data.
    idle_reports: list[tuple[int, int]] = []
    stop = threading.Event()
    result: list[ConsumeStats | BaseException] = []

    def on_progress(stats: ConsumeStats) -> None:
        idle_reports.append((stats.folded, stats.lag))

    def follow() -> None:
        try:
            options = ConsumeOptions(progress=on_progress, should_stop=stop.is_set)
            stats = consume(str(db_path), kafka_bootstrap, fresh_topic, None, options=options)
            result.append(stats)
        except BaseException as error:  # handed to the test thread
            result.append(error)

    def wait_for_folded(count: int) -> None:
        deadline = time.monotonic() + 120
        while not any(folded == count and lag == 0 for folded, lag in idle_reports):
            assert not result, result
            assert time.monotonic() < deadline, f"never idle with {count} folded: {idle_reports}"
            time.sleep(0.2)

    with transactional_producer(kafka_bootstrap) as open_producer:
        open_producer.begin_transaction()
        send_events(open_producer, fresh_topic, people("pending", 5, minute=1), partition=0)
        open_producer.flush()
        follower = threading.Thread(target=follow)
        follower.start()
        try:
            with transactional_producer(kafka_bootstrap) as producer:
                done = people("done", 12, minute=10)
                in_transaction(producer, fresh_topic, done, commit=True, partition=1)
            wait_for_folded(12)
            open_producer.commit_transaction()
            wait_for_folded(17)
        finally:
            stop.set()
            follower.join(timeout=120)
    assert not follower.is_alive()
    assert isinstance(result[0], ConsumeStats), result
    assert len(applied_event_ids(db_path)) == 17
