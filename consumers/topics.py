"""Create the profile-events topic and its dead-letter topic; safe to run again."""

from __future__ import annotations

from dataclasses import dataclass, field

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import NoError, TopicAlreadyExistsError, for_code

from consumers.kafka_client import kafka_errors
from consumers.key_store import KEY_TOPIC_CONFIG, KEY_TOPIC_PARTITIONS, key_topic_for
from profile_engine.errors import NeedsOperator

DEAD_LETTER_PARTITIONS = 1  # dead letters are rare and read in order by a human
# The log is the source of truth and events keep their own (often old) timestamps: time-based
# retention would delete history that every rebuild needs.
KEEP_FOREVER = {"retention.ms": "-1"}


class TopicError(NeedsOperator):
    """The broker refused to create a topic for a reason other than its existence."""


@dataclass
class TopicsReport:
    created: list[str] = field(default_factory=list)
    existed: list[str] = field(default_factory=list)
    # Existing topics whose settings were brought to what this release needs.
    configured: list[str] = field(default_factory=list)


def create_topics(
    bootstrap: str,
    topic: str,
    dead_letter_topic: str,
    partitions: int = 6,
    replication_factor: int = 1,
    key_topic: str | None = None,
    *,
    with_key_topic: bool = False,
) -> TopicsReport:
    """Make the topics: events, dead letters and, ``with_key_topic`` (a master key is
    configured), the key store of sealed events (compacted, ``<topic>-keys`` unless
    ``key_topic`` names it); one that exists is reported, not an error."""
    wanted = {
        topic: {
            "num_partitions": partitions,
            "replication_factor": replication_factor,
            "configs": KEEP_FOREVER,
        },
        dead_letter_topic: {
            "num_partitions": DEAD_LETTER_PARTITIONS,
            "replication_factor": replication_factor,
            "configs": KEEP_FOREVER,
        },
    }
    keys = key_topic or key_topic_for(topic)
    if with_key_topic:
        wanted[keys] = {
            "num_partitions": KEY_TOPIC_PARTITIONS,
            "replication_factor": replication_factor,
            "configs": KEY_TOPIC_CONFIG,
        }
    report = TopicsReport()
    with kafka_errors(bootstrap):
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="profile-engine-topics")
    try:
        response = admin.create_topics(wanted, raise_errors=False)
        for result in response["topics"]:
            _classify(result, report)
        if with_key_topic and keys in report.existed:
            # The erasure bound rests on these settings (README): a key topic made before them,
            # or by hand, gets them too.
            _set_configs(admin, keys, KEY_TOPIC_CONFIG)
            report.configured.append(keys)
        if report.created:
            admin.wait_for_topics(report.created, timeout_ms=30_000)
    finally:
        admin.close()
    return report


def _set_configs(admin: KafkaAdminClient, topic: str, configs: dict[str, str]) -> None:
    """Set these settings of an existing topic, the others left as they are."""
    results = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)])
    for outcome in results.values():
        for name, error in outcome.items():
            if error not in (None, "OK", NoError) and not isinstance(error, NoError):
                raise TopicError(f"cannot set the settings of topic {name}: {error}")


def _classify(result: dict[str, object], report: TopicsReport) -> None:
    name = str(result["name"])
    error = for_code(int(str(result["error_code"])))
    if error is TopicAlreadyExistsError:
        report.existed.append(name)
    elif error is NoError:
        report.created.append(name)
    else:
        message = result.get("error_message") or error.__name__
        raise TopicError(f"cannot create topic {name}: {message}")
