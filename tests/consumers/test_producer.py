"""EventProducer against a real broker: every event type, keys, order, delivery errors."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kafka import KafkaConsumer

from consumers.codec import AvroCodec
from consumers.kafka_client import BrokerUnavailable
from consumers.producer import DeliveryError, EventProducer
from consumers.topics import create_topics
from profile_engine.contract import ContractError, validate_event
from profile_engine.events import Identifier, Track, datetime_to_us
from tests.consumers.test_codec import sample_events
from tests.support.kafka import consume_all


@pytest.mark.kafka
def test_every_event_type_is_published_and_decodes_back_equal(
    kafka_bootstrap: str, fresh_topic: str
) -> None:
    events = sample_events()
    with EventProducer(kafka_bootstrap, fresh_topic) as producer:
        futures = [producer.send(event) for event in events]
        producer.flush()
    assert all(f.succeeded() for f in futures)

    messages = consume_all(kafka_bootstrap, fresh_topic, len(events))
    codec = AvroCodec()
    by_id = {codec.decode(m.value).event_id: (m, codec.decode(m.value)) for m in messages}
    assert len(messages) == len(events)
    for event in events:
        message, decoded = by_id[event.event_id]
        assert decoded == event
        assert message.key == event.partition_key().encode()
        # The event time, but a Kafka timestamp is never negative (e-ccpa is dated 1969).
        assert message.timestamp == max(0, event.timestamp_us // 1000)


@pytest.mark.kafka
def test_one_persons_events_share_a_partition_and_keep_their_order(
    kafka_bootstrap: str, fresh_topic: str
) -> None:
    people = [Identifier("email", f"p{n}@example.com") for n in range(12)]
    sent: dict[str, list[str]] = defaultdict(list)
    with EventProducer(kafka_bootstrap, fresh_topic) as producer:
        for step in range(25):
            for person in people:
                event = Track(
                    event_id=f"{person.value}-{step}",
                    timestamp_us=1_767_261_600_000_000 + step,
                    identifiers=(Identifier("anonymous_id", f"anon-{step}"), person),
                    event="page_view",
                    properties={"step": step},
                )
                producer.send(event)
                sent[event.partition_key()].append(event.event_id)

    codec = AvroCodec()
    received: dict[str, list[str]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    messages = consume_all(kafka_bootstrap, fresh_topic, 12 * 25)
    for message in sorted(messages, key=lambda m: (m.partition, m.offset)):
        key = message.key.decode()
        received[key].append(codec.decode(message.value).event_id)
        partitions[key].add(message.partition)
    assert received == sent
    assert all(len(found) == 1 for found in partitions.values())
    assert len({next(iter(found)) for found in partitions.values()}) > 1  # keys spread out


@pytest.mark.kafka
def test_dicts_and_contract_models_are_validated_before_sending(
    kafka_bootstrap: str, fresh_topic: str
) -> None:
    raw = {
        "type": "identify",
        "timestamp": "2026-01-01T10:00:00+01:00",
        "identifiers": {"email": " Ann@Example.COM ", "phone": "(415) 555-2671"},
        "traits": {"first_name": "Ann"},
    }
    with EventProducer(kafka_bootstrap, fresh_topic) as producer:
        producer.send(dict(raw, event_id="from-dict"))
        producer.send(validate_event(dict(raw, event_id="from-model")))
        with pytest.raises(ContractError, match="timestamp"):
            producer.send(dict(raw, timestamp="2026-01-01T10:00:00"))
    codec = AvroCodec()
    decoded = [codec.decode(m.value) for m in consume_all(kafka_bootstrap, fresh_topic, 2)]
    assert sorted(e.event_id for e in decoded) == ["from-dict", "from-model"]
    for event in decoded:
        assert event.identifiers == (
            Identifier("email", "ann@example.com"),
            Identifier("phone", "+14155552671"),
        )
        assert event.timestamp_us == 1_767_258_000_000_000  # 09:00Z


@pytest.mark.kafka
def test_trait_validator_applies_to_dicts_and_models(
    kafka_bootstrap: str, fresh_topic: str
) -> None:
    def only_known(traits: dict[str, Any]) -> dict[str, Any]:
        for name in traits:
            if name != "first_name":
                raise ContractError(f"traits.{name}: not a registered attribute")
        return traits

    raw = {
        "type": "identify",
        "timestamp": "2026-01-01T10:00:00Z",
        "identifiers": {"customer_id": "C1"},
        "traits": {"shoe_size": 9},
    }
    with EventProducer(kafka_bootstrap, fresh_topic, trait_validator=only_known) as producer:
        with pytest.raises(ContractError, match=r"traits\.shoe_size"):
            producer.send(raw)
        with pytest.raises(ContractError, match=r"traits\.shoe_size"):
            producer.send(validate_event(raw))
        assert producer.sent == 0


@pytest.mark.kafka
def test_a_rejected_delivery_makes_flush_raise(kafka_bootstrap: str, fresh_topic: str) -> None:
    # The broker refuses a record over its message.max.bytes (1 MB by default); the client is
    # told to allow it, so the failure is the broker's answer, seen through the future.
    huge = Track(
        event_id="too-big",
        timestamp_us=1_767_261_600_000_000,
        identifiers=(Identifier("anonymous_id", "a1"),),
        event="blob",
        properties={"data": "x" * 3_000_000},
    )
    producer = EventProducer(
        kafka_bootstrap, fresh_topic, max_request_size=16 * 1024 * 1024, delivery_timeout_ms=20_000
    )
    try:
        producer.send(sample_events()[0])
        producer.send(huge)
        with pytest.raises(DeliveryError, match=r"1 event\(s\) were not delivered.*too-big"):
            producer.flush(timeout=30)
        producer.flush(timeout=30)  # failures are reported once, then cleared
    finally:
        producer.close(timeout=5)
    delivered = consume_all(kafka_bootstrap, fresh_topic, 1)
    assert [AvroCodec().decode(m.value).event_id for m in delivered] == ["e-identify"]


@pytest.mark.kafka
def test_a_future_event_gets_the_clock_as_its_kafka_timestamp_and_keeps_its_time(
    kafka_bootstrap: str, fresh_topic: str
) -> None:
    # Three hours ahead: inside the event-time window (a day), beyond what Kafka 4 accepts.
    ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
    future = Track(
        event_id="from-the-future",
        timestamp_us=datetime_to_us(ahead),  # the broker would refuse it as a record timestamp
        identifiers=(Identifier("anonymous_id", "a1"),),
        event="page_view",
        properties={},
    )
    before = time.time() * 1000
    with EventProducer(kafka_bootstrap, fresh_topic) as producer:
        producer.send(future)
    (message,) = consume_all(kafka_bootstrap, fresh_topic, 1)
    assert before <= message.timestamp <= time.time() * 1000
    assert AvroCodec().decode(message.value) == future


def test_no_broker_is_a_clear_error_not_a_hang() -> None:
    with pytest.raises(BrokerUnavailable, match="cannot reach Kafka"):
        EventProducer("127.0.0.1:1", "any-topic", bootstrap_timeout_ms=2_000)


@pytest.mark.kafka
def test_topics_create_is_safe_to_run_twice(kafka_bootstrap: str) -> None:
    import uuid

    topic = f"test-topics-{uuid.uuid4().hex[:8]}"
    first = create_topics(kafka_bootstrap, topic, f"{topic}-dl", partitions=3)
    second = create_topics(kafka_bootstrap, topic, f"{topic}-dl", partitions=3)
    assert sorted(first.created) == sorted([topic, f"{topic}-dl"]) and first.existed == []
    assert second.created == [] and sorted(second.existed) == sorted([topic, f"{topic}-dl"])
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        assert consumer.partitions_for_topic(topic) == {0, 1, 2}
        assert consumer.partitions_for_topic(f"{topic}-dl") == {0}
    finally:
        consumer.close()
