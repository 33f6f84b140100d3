"""Topic creation keeps the log forever: it is the source every rebuild reads."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from consumers.topics import create_topics

pytestmark = pytest.mark.kafka


def test_created_topics_have_infinite_retention(kafka_bootstrap: str, kafka_admin: Any) -> None:
    topic = f"test-retention-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, topic, f"{topic}-dlq")
    for name in (topic, f"{topic}-dlq"):
        described = kafka_admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
        assert described["topic"][name]["retention.ms"]["value"] == "-1"
    kafka_admin.delete_topics([topic, f"{topic}-dlq"], raise_errors=False)


def test_an_existing_key_topic_gets_the_compaction_settings_the_erasure_bound_needs(
    kafka_bootstrap: str, kafka_admin: Any
) -> None:
    """Made before those settings (or by hand), it kept its own: erased keys could stay in
    its log for as long as Kafka's defaults allow (7 days or more) instead of about 2 hours."""
    from kafka.admin import NewTopic

    from consumers.key_store import KEY_TOPIC_CONFIG

    topic = f"test-keys-{uuid.uuid4().hex[:8]}"
    kafka_admin.create_topics(
        [NewTopic(f"{topic}-keys", 1, 1, topic_configs={"retention.ms": "-1"})]
    )
    report = create_topics(kafka_bootstrap, topic, f"{topic}-dlq", with_key_topic=True)
    assert report.configured == [f"{topic}-keys"] and f"{topic}-keys" in report.existed
    wanted = dict(KEY_TOPIC_CONFIG)
    deadline = time.monotonic() + 30
    while True:  # the broker applies a change of settings a moment after it accepts it
        described = kafka_admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, f"{topic}-keys")]
        )["topic"][f"{topic}-keys"]
        settings = {k: described[k]["value"] for k in wanted if k in described}
        if settings == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert settings == wanted
    assert described["retention.ms"]["value"] == "-1"  # what it had of its own stays
    kafka_admin.delete_topics([topic, f"{topic}-dlq", f"{topic}-keys"], raise_errors=False)
