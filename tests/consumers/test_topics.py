"""Topic creation keeps the log forever: it is the source every rebuild reads."""

from __future__ import annotations

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
