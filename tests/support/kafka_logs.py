"""Logs written the way other producers write them, and a broker a test may stop.

Other producers (Kafka Streams, Flink, Debezium, the Java client) write transactions and
compressed batches; a test that needs the broker to go away starts its own on free ports.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from consumers.broker import LocalBroker
from consumers.broker_process import free_port
from consumers.codec import AvroCodec
from profile_engine.events import ProfileEvent


def send_events(
    producer: KafkaProducer,
    topic: str,
    events: Iterable[ProfileEvent],
    partition: int | None = None,
) -> None:
    """Queue events as the project's producer encodes them (key, Avro value, event time);
    to the key's partition unless ``partition`` is given."""
    codec = AvroCodec()
    for event in events:
        producer.send(
            topic,
            key=event.partition_key().encode(),
            value=codec.encode(event),
            partition=partition,
            timestamp_ms=event.timestamp_us // 1000,
        )


@contextmanager
def transactional_producer(bootstrap: str, **config: Any) -> Iterator[KafkaProducer]:
    """A kafka-python producer with a unique transactional id, transactions initialised."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"test-{uuid.uuid4().hex[:12]}", **config
    )
    try:
        producer.init_transactions()
        yield producer
    finally:
        producer.close(timeout=30)


def in_transaction(
    producer: KafkaProducer,
    topic: str,
    events: Iterable[ProfileEvent],
    commit: bool,
    partition: int | None = None,
) -> None:
    """One transaction of ``events``; an aborted one reaches the log before its abort marker."""
    producer.begin_transaction()
    send_events(producer, topic, events, partition)
    producer.flush()
    if commit:
        producer.commit_transaction()
    else:
        producer.abort_transaction()


@contextmanager
def private_broker(data_dir: Path) -> Iterator[LocalBroker]:
    """A broker of this test's own, on free loopback ports, that the test may stop and start."""
    broker = LocalBroker(data_dir=data_dir, port=free_port(), controller_port=free_port())
    broker.start(timeout=180, stop_with_owner=True)
    try:
        yield broker
    finally:
        broker.stop()


def create_topic(bootstrap: str, name: str, partitions: int) -> str:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs={"retention.ms": "-1"})])
        admin.wait_for_topics([name], timeout_ms=30_000)
    finally:
        admin.close()
    return name
