"""The reader process: waiting for a broker that is gone, giving up, stopping when told."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from consumers.broker_process import free_port
from consumers.consumer import ConsumeOptions, consume
from consumers.kafka_client import BrokerUnavailable
from consumers.pipeline import FoldStats
from consumers.producer import EventProducer
from consumers.reader import KafkaReader, ReadPlan
from profile_engine.batch_fold import Prepared
from profile_engine.errors import Transient
from profile_engine.events import ProfileEvent
from projections.store import ProjectionStore
from tests.profile_engine.builders import identify
from tests.support.kafka_logs import create_topic, private_broker


def events(prefix: str, count: int) -> list[ProfileEvent]:
    return [identify(n, eid=f"{prefix}{n}", email=f"{prefix}{n}@example.com") for n in range(count)]


def publish(bootstrap: str, topic: str, batch: list[ProfileEvent]) -> None:
    with EventProducer(bootstrap, topic) as producer:
        for event in batch:
            producer.send(event)
        producer.flush()


def read_until(
    reader: KafkaReader, done: Callable[[list[str]], bool], seen: list[str], timeout: float
) -> None:
    """Iterate the reader, collecting event ids, until ``done(seen)``; fail after timeout."""
    deadline = time.monotonic() + timeout
    for chunk in reader.chunks():
        for _, _, event in chunk or []:
            assert isinstance(event, Prepared), event
            seen.append(event.event_id)
        if done(seen):
            return
        assert time.monotonic() < deadline, f"not done within {timeout}s; seen {seen}"
    raise AssertionError(f"the reader ended early; seen {seen}")


def unused_bootstrap() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


@pytest.mark.kafka
def test_the_reader_says_when_the_broker_is_gone_and_resumes_when_it_is_back(
    tmp_path: Path,
) -> None:
    with private_broker(tmp_path / "broker") as broker:
        bootstrap = broker.bootstrap_servers
        topic = create_topic(bootstrap, "events", 3)
        publish(bootstrap, topic, events("before", 5))
        reader = KafkaReader(ReadPlan(bootstrap, topic, {}, once=False))
        try:
            seen: list[str] = []
            read_until(reader, lambda s: len(s) == 5 and not reader.lag({}), seen, 120)
            assert reader.waiting_since is None

            stopped_at = time.time()
            broker.stop()
            read_until(reader, lambda s: reader.waiting_since is not None, seen, 120)
            assert reader.waiting_since is not None
            assert reader.waiting_since <= stopped_at + 1  # the broker's last answer

            broker.start(timeout=180, stop_with_owner=True)
            publish(bootstrap, topic, events("after", 3))
            read_until(reader, lambda s: len(s) == 8, seen, 120)
            read_until(reader, lambda s: reader.waiting_since is None, seen, 60)
        finally:
            reader.close()
    assert sorted(seen) == sorted(e.event_id for e in events("before", 5) + events("after", 3))


def test_the_reader_gives_up_after_the_configured_time() -> None:
    reader = KafkaReader(ReadPlan(unused_bootstrap(), "events", {}, once=True, give_up_after=2))
    yielded: list[object] = []
    try:
        with pytest.raises(BrokerUnavailable, match=r"gave up waiting for Kafka at .* no answer"):
            yielded.extend(reader.chunks())
    finally:
        reader.close()
    assert yielded == [None]  # told once that it waits, before giving up


def test_a_reader_process_that_dies_is_a_transient_error() -> None:
    """Killed (by the kernel's out-of-memory killer, a signal): reading again may work."""
    reader = KafkaReader(ReadPlan(unused_bootstrap(), "events", {}, once=False))
    try:
        chunks = reader.chunks()
        assert next(chunks) is None  # waiting for a broker that never answers
        reader._process.kill()
        with pytest.raises(Transient, match="the Kafka reader process stopped unexpectedly"):
            list(chunks)
    finally:
        reader.close()


def test_a_stop_request_ends_the_reading_while_the_broker_is_gone() -> None:
    readers: list[KafkaReader] = []

    def stop_once_waiting() -> bool:
        return bool(readers) and readers[0].waiting_since is not None

    reader = KafkaReader(
        ReadPlan(unused_bootstrap(), "events", {}, once=True), should_stop=stop_once_waiting
    )
    readers.append(reader)
    try:
        chunks = list(reader.chunks())  # returns once asked to stop; the broker never answers
    finally:
        reader.close()
    assert chunks == [None]


@pytest.mark.kafka
def test_a_stop_request_mid_batch_commits_what_was_folded_and_nothing_more(
    kafka_bootstrap: str, fresh_topic: str, db_path: Path
) -> None:
    total = 10_000
    publish(kafka_bootstrap, fresh_topic, events("e", total))
    received = [0]

    def note(stats: FoldStats) -> None:
        received[0] = stats.received

    # Asked to stop a few chunks in: long before the (one, huge) batch would be full.
    options = ConsumeOptions(
        once=True, batch_size=1_000_000, progress=note, should_stop=lambda: received[0] >= 4_000
    )
    stats = consume(str(db_path), kafka_bootstrap, fresh_topic, None, options=options)
    with ProjectionStore(db_path) as store:
        committed = sum(store.offsets(fresh_topic).values())
    assert 4_000 <= stats.consumed < total
    assert committed == stats.consumed == stats.folded
    rest = consume(
        str(db_path), kafka_bootstrap, fresh_topic, None, options=ConsumeOptions(once=True)
    )
    assert rest.folded == total - stats.consumed
