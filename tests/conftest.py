"""Shared fixtures: a real Kafka broker, fresh topics and a fresh DuckDB path.

`kafka_bootstrap` picks, in this order: an external cluster named by
PROFILE_ENGINE_BOOTSTRAP_SERVERS; a Docker engine that answers (testcontainers' KafkaContainer
in KRaft mode); the project's own LocalBroker run from Maven jars on free loopback ports. The
broker starts only when a test asks for it, so pure unit tests never need Java.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

EXTERNAL_BOOTSTRAP_ENV = "PROFILE_ENGINE_BOOTSTRAP_SERVERS"
DOCKER_PING_SECONDS = 2.0


def pytest_configure(config: pytest.Config) -> None:
    # kafka-python 3.0 loads its protocol schemas through deprecated importlib.resources calls,
    # a few hundred warnings per session that say nothing about this project.
    config.addinivalue_line("filterwarnings", "ignore:read_text is deprecated:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:open_text is deprecated:DeprecationWarning")


def _docker_answers() -> bool:
    """True only when a Docker engine replies to a ping; a bare CLI or a dead socket is False."""
    if not (os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists()):
        return False  # the common case here: decide without importing docker at all
    try:
        import docker

        client = docker.from_env(timeout=DOCKER_PING_SECONDS)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure to reach the engine means "no Docker"
        return False


@contextmanager
def _docker_kafka() -> Iterator[str]:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers < 4.9 kept it at the top level
        from testcontainers.kafka import KafkaContainer

    container = KafkaContainer().with_kraft().with_env("KAFKA_LOG_RETENTION_MS", "-1")
    with container:
        yield container.get_bootstrap_server()


@contextmanager
def _local_kafka(data_dir: Path) -> Iterator[str]:
    from consumers.broker import BrokerError, LocalBroker
    from consumers.broker_process import free_port

    # Two tries, each on fresh ports and storage: a busy machine can lose a port to another
    # process between choosing it and the broker binding it, or kill a JVM while it boots.
    for attempt in (1, 2):
        client_port = free_port()
        controller_port = free_port()
        while controller_port == client_port:
            controller_port = free_port()
        broker = LocalBroker(
            data_dir=data_dir / f"attempt-{attempt}",
            port=client_port,
            controller_port=controller_port,
        )
        try:
            broker.start(timeout=180, stop_with_owner=True)
            break
        except BrokerError as error:
            broker.stop()
            if attempt == 2:
                raise
            print(f"local Kafka broker did not start ({error}); trying again", file=sys.stderr)
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a real Kafka broker for the whole session."""
    external = os.environ.get(EXTERNAL_BOOTSTRAP_ENV)
    if external:
        yield external
    elif _docker_answers():
        with _docker_kafka() as bootstrap:
            yield bootstrap
    else:
        with _local_kafka(tmp_path_factory.mktemp("kafka")) as bootstrap:
            yield bootstrap


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Iterator[Any]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="profile-engine-tests")
    try:
        yield admin
    finally:
        admin.close()


@pytest.fixture
def small_messages_topic(kafka_admin: Any) -> Iterator[str]:
    """A fresh topic that accepts record batches of at most 20,000 bytes."""
    from tests.support.kafka import topic_with_message_limit

    with topic_with_message_limit(kafka_admin, 20_000) as name:
        yield name


def _topic_name(request: pytest.FixtureRequest, role: str) -> str:
    # Kafka allows [a-zA-Z0-9._-]; the test name makes a leftover topic easy to trace.
    test_name = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name)[:60].strip("-")
    return f"test-{role}-{test_name}-{uuid.uuid4().hex[:8]}"


@contextmanager
def _new_topic(admin: Any, name: str, partitions: int) -> Iterator[str]:
    from kafka.admin import NewTopic

    # Infinite retention: events carry old timestamps, which time-based retention deletes.
    admin.create_topics([NewTopic(name, partitions, 1, topic_configs={"retention.ms": "-1"})])
    admin.wait_for_topics([name], timeout_ms=30_000)
    try:
        yield name
    finally:
        # Matters on an external cluster; a throw-away local broker would not care.
        admin.delete_topics([name], raise_errors=False)


@pytest.fixture
def fresh_topic(kafka_admin: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty topic with 6 partitions, unique to this test."""
    with _new_topic(kafka_admin, _topic_name(request, "events"), 6) as name:
        yield name


@pytest.fixture
def fresh_dead_letter_topic(kafka_admin: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty single-partition topic for dead letters, unique to this test."""
    with _new_topic(kafka_admin, _topic_name(request, "dead-letters"), 1) as name:
        yield name


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where a test's DuckDB file goes; the file itself does not exist yet."""
    return tmp_path / "profiles.duckdb"
