"""The session's Kafka broker is real: it answers metadata, makes topics, stores messages."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

pytestmark = pytest.mark.kafka


def test_broker_answers_metadata_with_one_live_broker(kafka_admin: Any) -> None:
    cluster = kafka_admin.describe_cluster()

    assert len(cluster["brokers"]) >= 1
    assert cluster["cluster_id"]


def test_fresh_topic_has_six_partitions(kafka_admin: Any, fresh_topic: str) -> None:
    [description] = kafka_admin.describe_topics([fresh_topic])

    assert description["error_code"] == 0
    assert len(description["partitions"]) == 6


def test_fresh_topics_are_distinct_and_listed(
    kafka_admin: Any, fresh_topic: str, fresh_dead_letter_topic: str
) -> None:
    assert fresh_topic != fresh_dead_letter_topic
    assert {fresh_topic, fresh_dead_letter_topic} <= set(kafka_admin.list_topics())
    [dead_letters] = kafka_admin.describe_topics([fresh_dead_letter_topic])
    assert len(dead_letters["partitions"]) == 1


def test_raw_message_round_trips(kafka_bootstrap: str, fresh_topic: str) -> None:
    key, value = b"customer-42", uuid.uuid4().bytes + b"\x00\xc3\x01 raw bytes"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        metadata = producer.send(fresh_topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close()

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, consumer_timeout_ms=10_000)
    try:
        partition = TopicPartition(fresh_topic, metadata.partition)
        consumer.assign([partition])
        consumer.seek(partition, metadata.offset)
        record = next(iter(consumer))
    finally:
        consumer.close()

    assert (record.key, record.value) == (key, value)
    assert (record.partition, record.offset) == (metadata.partition, metadata.offset)


def test_a_new_cluster_id_is_never_read_as_an_option_by_kafka_storage() -> None:
    from consumers.broker import new_cluster_id

    # Without the redraw about one id in 64 starts with "-" and `kafka-storage format -t`
    # refuses it ("expected one argument"): 2,000 draws would all but surely hit one.
    drawn = [new_cluster_id() for _ in range(2_000)]
    assert not [cluster_id for cluster_id in drawn if cluster_id.startswith("-")]
    assert len(set(drawn)) == len(drawn) and {len(cluster_id) for cluster_id in drawn} == {22}
