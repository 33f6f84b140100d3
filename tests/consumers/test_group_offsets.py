"""Offsets mirrored to a consumer group, read back the way Kafka's own tools read them."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from consumers.consumer import ConsumeOptions, consume
from consumers.group_offsets import GroupOffsets
from consumers.kafka_client import BrokerUnavailable
from consumers.producer import EventProducer
from projections.store import ProjectionStore
from tests.profile_engine.builders import identify

pytestmark = pytest.mark.kafka


def test_committed_offsets_are_what_kafka_consumer_groups_reads(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient, fresh_topic: str
) -> None:
    with EventProducer(kafka_bootstrap, fresh_topic) as producer:
        for minute in range(12):
            producer.send(identify(minute, email=f"p{minute}@example.com"))
        producer.flush()
    group = f"{fresh_topic}-group"
    offsets = GroupOffsets(kafka_bootstrap, fresh_topic, group)
    try:
        ends = offsets.end_offsets()
        assert sorted(ends) == list(range(6)) and sum(ends.values()) == 12
        offsets.commit({0: ends[0], 3: 1})
        offsets.commit({0: ends[0], 3: ends[3]})  # a later batch moves on
    finally:
        offsets.close()
    committed = kafka_admin.list_group_offsets(group)[group]
    assert {tp.partition: o.offset for tp, o in committed.items()} == {0: ends[0], 3: ends[3]}
    described = kafka_admin.describe_groups([group])[group]
    assert described["members"] == []  # offsets only: no member, no rebalance


def test_an_unreachable_broker_is_a_transient_error() -> None:
    from consumers.broker_process import free_port

    with pytest.raises(BrokerUnavailable, match="cannot reach Kafka"):
        GroupOffsets(f"127.0.0.1:{free_port()}", "any-topic", "any-group").end_offsets()


def test_consume_mirrors_the_offsets_it_commits_to_its_group(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient, fresh_topic: str, db_path: Path
) -> None:
    with EventProducer(kafka_bootstrap, fresh_topic) as producer:
        for minute in range(20):
            producer.send(identify(minute, email=f"p{minute}@example.com"))
    group = f"{fresh_topic}-mirror"
    options = ConsumeOptions(once=True, group_id=group)
    consume(str(db_path), kafka_bootstrap, fresh_topic, None, options=options)
    with ProjectionStore(db_path) as store:
        stored = store.offsets(fresh_topic)
    committed = kafka_admin.list_group_offsets(group)[group]
    assert {tp.partition: o.offset for tp, o in committed.items()} == stored
    assert sum(stored.values()) == 20
