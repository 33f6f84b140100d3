"""Reading a topic back, and a private broker a test may kill."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition


def consume_all(
    bootstrap: str, topic: str, expected: int = 0, timeout_s: float = 60.0
) -> list[Any]:
    """Every message of the topic from the earliest offset, up to its end when called.

    Waits (up to ``timeout_s``) until at least ``expected`` messages were read and every
    partition is read to its end offset.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        messages: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                messages.extend(batch)
            caught_up = all(consumer.position(tp) >= end[tp] for tp in partitions)
            if caught_up and len(messages) >= expected:
                break
        return messages
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str) -> int:
    """How many messages the topic holds (the sum of its partitions' end offsets)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


@contextmanager
def private_broker(data_dir: Path) -> Iterator[Any]:
    """A LocalBroker of the test's own on free loopback ports (so the test may kill it)."""
    from consumers.broker import LocalBroker
    from consumers.broker_process import free_port

    client_port = free_port()
    controller_port = free_port()
    while controller_port == client_port:
        controller_port = free_port()
    broker = LocalBroker(data_dir=data_dir, port=client_port, controller_port=controller_port)
    broker.start(timeout=180, stop_with_owner=True)
    try:
        yield broker
    finally:
        broker.stop()


def kill_broker(broker: Any) -> None:
    """SIGKILL, as a crash or a pulled plug: no clean shutdown, connections just drop."""
    pid = broker.running_pid()
    assert pid is not None, "the broker is not running"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while broker.running_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.1)


@contextmanager
def topic_with_message_limit(kafka_admin: Any, max_message_bytes: int) -> Iterator[str]:
    from kafka.admin import NewTopic

    name = f"test-small-messages-{uuid.uuid4().hex[:8]}"
    configs = {"retention.ms": "-1", "max.message.bytes": str(max_message_bytes)}
    kafka_admin.create_topics([NewTopic(name, 3, 1, topic_configs=configs)])
    kafka_admin.wait_for_topics([name], timeout_ms=30_000)
    try:
        yield name
    finally:
        kafka_admin.delete_topics([name], raise_errors=False)
