"""BatchProducer against a real broker: batches land in order, each line is accounted for."""

from __future__ import annotations

from array import array
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers.batch_producer import (
    BatchProducer,
    Delivery,
    DeliveryError,
    DeliveryRefused,
    PrebuiltRecords,
    line_ranges,
    unconfirmed_error,
)
from consumers.kafka_client import BrokerUnavailable, TopicMissingError
from consumers.record_batches import Batcher, BuiltBatch, KeyPartitioner
from profile_engine.errors import ErrorKind
from tests.support.kafka import consume_all, topic_with_message_limit

T0_MS = 1_767_225_600_000


def batches_for(
    partitions: int, lines: range, limit: int, value_size: int = 40
) -> list[BuiltBatch]:
    batcher = Batcher(KeyPartitioner(partitions), limit)
    for line in lines:
        batcher.add(f"anonymous_id:p{line % 11}".encode(), b"%d:" % line + b"v" * value_size,
                    T0_MS + line, line)  # fmt: skip
    return batcher.take()


@pytest.mark.kafka
def test_batches_land_in_their_keys_partition_in_line_order_and_are_confirmed(
    kafka_bootstrap: str, fresh_topic: str
) -> None:
    with BatchProducer(kafka_bootstrap, fresh_topic) as producer:
        assert producer.partitions == 6 and producer.max_batch_bytes == 1_048_588
        # Several rounds: a partition's sequence numbers carry on from batch to batch.
        for start in (1, 2_001, 4_001):
            for built in batches_for(6, range(start, start + 2_000), 16_000):
                assert producer.send(built)
        delivery = producer.finish()
    assert delivery.confirmed == 6_000 and not delivery.unconfirmed and delivery.gave_up is None

    messages = consume_all(kafka_bootstrap, fresh_topic, expected=6_000)
    partitioner = KeyPartitioner(6)
    order: dict[int, list[int]] = defaultdict(list)
    for message in sorted(messages, key=lambda m: (m.partition, m.offset)):
        assert message.partition == partitioner(message.key)
        line = int(message.value.split(b":")[0])
        assert message.timestamp == T0_MS + line
        order[message.partition].append(line)
    assert sorted(line for lines in order.values() for line in lines) == list(range(1, 6_001))
    assert all(lines == sorted(lines) for lines in order.values())


@pytest.fixture
def small_messages_topic(kafka_admin: Any) -> Iterator[str]:
    """A topic that accepts record batches of at most 10,000 bytes."""
    with topic_with_message_limit(kafka_admin, 10_000) as name:
        yield name


@pytest.mark.kafka
def test_the_topics_message_limit_is_read_and_a_refused_batch_reports_each_line(
    kafka_bootstrap: str, small_messages_topic: str
) -> None:
    with BatchProducer(kafka_bootstrap, small_messages_topic, delivery_timeout_s=30) as producer:
        assert producer.max_batch_bytes == 10_000
        fitting = batches_for(3, range(1, 301), producer.max_batch_bytes)
        # Built past the limit on purpose: the broker, not our batcher, refuses this one.
        (too_big,) = batches_for(1, range(1_001, 1_301), 1_000_000)
        too_big = too_big._replace(partition=1)
        assert too_big.size > 10_000
        for built in [*fitting[:2], too_big, *fitting[2:]]:
            producer.send(built)
        delivery = producer.finish()

    assert set(too_big.lines) <= set(delivery.unconfirmed)
    assert not delivery.retriable  # a retry would be refused again
    assert any(reason.startswith("MessageSizeTooLargeError") for reason in delivery.reasons)
    assert delivery.confirmed + len(delivery.unconfirmed) == 300 + 300
    logged = {
        int(m.value.split(b":")[0]) for m in consume_all(kafka_bootstrap, small_messages_topic)
    }
    assert len(logged) == delivery.confirmed and not logged & set(delivery.unconfirmed)


@pytest.mark.kafka
def test_a_missing_topic_is_an_error_for_an_operator(kafka_bootstrap: str) -> None:
    with pytest.raises(TopicMissingError, match="topic no-such-topic does not exist"):
        BatchProducer(kafka_bootstrap, "no-such-topic", delivery_timeout_s=10)


def test_no_broker_is_a_transient_error_within_the_delivery_timeout() -> None:
    with pytest.raises(BrokerUnavailable, match=r"cannot reach Kafka at 127\.0\.0\.1:1"):
        BatchProducer("127.0.0.1:1", "any-topic", delivery_timeout_s=2)


def test_prebuilt_records_carry_the_producer_state_the_sender_assigns() -> None:
    (built,) = batches_for(1, range(1, 4), 10_000)
    records = PrebuiltRecords(built)
    assert records.is_full() and records.next_offset() == 3
    records.set_producer_state(77, 2, 1_000, False)
    records.close()
    batch = records.records().next_batch()
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (77, 2, 1_000)
    assert records.size_in_bytes() == built.size
    from kafka.errors import IllegalStateError

    with pytest.raises(IllegalStateError):  # a retried batch keeps its sequence
        records.set_producer_state(78, 2, 2_000, False)


# --- the report ------------------------------------------------------------------------------


def test_line_ranges_fold_runs_across_rejected_lines_only() -> None:
    assert line_ranges([9, 1, 2, 3, 7, 8, 3]) == [(1, 3), (7, 9)]
    assert line_ranges([1, 2, 4, 5, 9], bridged={3, 7}) == [(1, 5), (9, 9)]
    assert line_ranges([]) == []


def test_rejected_lines_do_not_break_the_ranges_of_the_message(tmp_path: Path) -> None:
    delivery = Delivery(confirmed=3, gave_up="no confirmation from Kafka at h:1 for 5 s")
    delivery.fail(array("q", [4, 5, 7, 8]), "x", True)
    error = unconfirmed_error(
        delivery, (10, 12), list_path=tmp_path / "u.txt", resume="r", rejected={6, 9}
    )
    assert "7 line(s) not confirmed (rejected lines aside): 4-12;" in str(error)
    assert (tmp_path / "u.txt").read_text().split() == ["4", "5", "7", "8", "10", "11", "12"]


def test_the_error_names_counts_ranges_the_file_and_how_to_resume(tmp_path: Path) -> None:
    delivery = Delivery(confirmed=40_843)
    delivery.gave_up = "no confirmation from Kafka at 127.0.0.1:9092 for 60 s"
    delivery.fail(array("q", [*range(40_001, 40_121), *range(41_000, 41_004)]), "x", True)
    listing = tmp_path / "events.jsonl.unconfirmed.txt"
    error = unconfirmed_error(
        delivery, (41_004, 99_498), list_path=listing, resume="publishing it again is safe"
    )
    assert isinstance(error, DeliveryError) and error.kind is ErrorKind.TRANSIENT
    assert str(error) == (
        "no confirmation from Kafka at 127.0.0.1:9092 for 60 s; 40,843 line(s) confirmed, "
        "58,619 line(s) not confirmed: 40001-40120, 41000-99498; all numbers in "
        f"{listing}; publishing it again is safe"
    )
    numbers = [int(n) for n in listing.read_text().split()]
    assert numbers == [*range(40_001, 40_121), *range(41_000, 99_499)]


def test_a_refusal_is_for_an_operator_and_a_long_list_is_capped(tmp_path: Path) -> None:
    delivery = Delivery(confirmed=5)
    delivery.fail(array("q", range(2, 40, 2)), "MessageSizeTooLargeError: too large", False)
    error = unconfirmed_error(delivery, None, list_path=tmp_path / "u.txt", resume="retry")
    assert isinstance(error, DeliveryRefused) and error.kind is ErrorKind.NEEDS_OPERATOR
    text = str(error)
    assert text.startswith("the broker refused 19 line(s) (MessageSizeTooLargeError: too large)")
    assert "2, 4, 6, 8, 10, 12, 14, 16 and 11 more range(s)" in text
    assert "\n" not in text


def test_lines_of_a_pipe_never_read_are_told_without_a_count(tmp_path: Path) -> None:
    delivery = Delivery(confirmed=10, gave_up="no confirmation from Kafka at h:1 for 5 s")
    error = unconfirmed_error(delivery, (11, None), list_path=tmp_path / "u.txt", resume="r")
    assert "10 line(s) confirmed, lines not confirmed: 11 onwards (never read);" in str(error)
