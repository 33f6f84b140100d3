"""The fold consumer against a real broker: exactly-once effect, rebuild, dead letters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.consumer import ConsumeOptions, consume
from consumers.kafka_client import LogGapError
from consumers.producer import EventProducer
from consumers.rebuild import rebuild_from_file, rebuild_from_kafka
from profile_engine.contract import event_to_json
from profile_engine.events import ProfileEvent
from profile_engine.synthetic import generate_events
from tests.profile_engine.builders import ccpa, consent, identify, purchase, track
from tests.snapshots import dump

pytestmark = pytest.mark.kafka

ONCE = ConsumeOptions(once=True)


def publish(bootstrap: str, topic: str, events: Iterable[ProfileEvent]) -> None:
    with EventProducer(bootstrap, topic) as producer:
        for event in events:
            producer.send(event)
        producer.flush()


def publish_garbage(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for value in values:
        producer.send(topic, key=b"garbage", value=value)
    producer.flush()
    producer.close()


def small_log() -> list[ProfileEvent]:
    return [
        track(0, eid="a0", anonymous_id="anon-1"),
        identify(1, {"city": "Paris"}, eid="a1", email="ann@example.com"),
        identify(2, eid="a2", email="ann@example.com", anonymous_id="anon-1", customer_id="C1"),
        identify(3, eid="a3", email="ann@example.com", customer_id="C2"),
        consent(4, "email", "opted_in", eid="a4", email="ann@example.com"),
        purchase(5, "o-1", 20.0, eid="a5", customer_id="C1"),
        track(6, eid="b0", phone="+14155552671"),
        ccpa(7, "delete", eid="b1", phone="+14155552671"),
    ]


def synthetic(count: int, seed: int) -> list[dict[str, Any]]:
    return list(generate_events(count, seed))


def publish_raw_json(bootstrap: str, topic: str, rows: list[dict[str, Any]]) -> int:
    """Publish generated rows: valid ones as Avro, invalid ones as raw JSON bytes."""
    from profile_engine.contract import ContractError, parse_event

    producer = EventProducer(bootstrap, topic)
    invalid: list[bytes] = []
    for row in rows:
        try:
            producer.send(parse_event(row))
        except (ContractError, TypeError, ValueError):
            invalid.append(json.dumps(row).encode())
    producer.flush()
    producer.close()
    publish_garbage(bootstrap, topic, invalid)
    return len(invalid)


def test_consume_once_folds_the_log_and_stores_offsets(
    kafka_bootstrap: str, fresh_topic: str, fresh_dead_letter_topic: str, db_path: Path
) -> None:
    publish(kafka_bootstrap, fresh_topic, small_log())
    stats = consume(
        str(db_path), kafka_bootstrap, fresh_topic, fresh_dead_letter_topic, options=ONCE
    )
    assert (stats.consumed, stats.folded, stats.dead_lettered) == (8, 8, 0)
    state = dump(db_path, ("profiles", "identifiers", "consumer_offsets"))
    assert len(state["profiles"]) == 2  # C1's merged profile and C2; the phone was erased
    assert sum(row[2] for row in state["consumer_offsets"]) == 8


def test_bad_messages_are_dead_lettered_and_never_stop_the_good_ones(
    kafka_bootstrap: str, fresh_topic: str, fresh_dead_letter_topic: str, db_path: Path
) -> None:
    publish(kafka_bootstrap, fresh_topic, small_log()[:3])
    publish_garbage(kafka_bootstrap, fresh_topic, [b"not avro", b"\xc3\x01" + b"\x00" * 8])
    publish(kafka_bootstrap, fresh_topic, small_log()[3:])
    stats = consume(
        str(db_path), kafka_bootstrap, fresh_topic, fresh_dead_letter_topic, options=ONCE
    )
    assert stats.consumed == stats.folded + stats.duplicates + stats.dead_lettered
    assert (stats.folded, stats.dead_lettered) == (8, 2)
    with duckdb.connect(str(db_path), read_only=True) as con:
        letters = con.execute(
            'SELECT raw, reason, "partition", "offset" FROM dead_letters ORDER BY raw'
        ).fetchall()
    assert [row[0] for row in letters] == sorted([b"not avro", b"\xc3\x01" + b"\x00" * 8])
    assert all(row[1] and row[2] is not None and row[3] is not None for row in letters)
    dlq = KafkaConsumer(bootstrap_servers=kafka_bootstrap, consumer_timeout_ms=3000)
    dlq.assign([TopicPartition(fresh_dead_letter_topic, 0)])
    dlq.seek_to_beginning()
    kept = sorted(record.value for record in dlq)
    dlq.close()
    assert kept == sorted([b"not avro", b"\xc3\x01" + b"\x00" * 8])


def test_restarts_and_redelivery_apply_each_event_once(
    kafka_bootstrap: str, fresh_topic: str, db_path: Path
) -> None:
    publish(kafka_bootstrap, fresh_topic, small_log()[:4])
    consume(str(db_path), kafka_bootstrap, fresh_topic, None, options=ONCE)
    publish(kafka_bootstrap, fresh_topic, small_log())  # the first four again, then more
    stats = consume(str(db_path), kafka_bootstrap, fresh_topic, None, options=ONCE)
    assert (stats.consumed, stats.duplicates, stats.folded) == (8, 4, 4)
    with duckdb.connect(str(db_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM applied_events").fetchone() == (8,)
        orders = con.execute("SELECT sum(order_count) FROM profiles").fetchone()
    assert orders == (1,)


def test_rebuild_gives_identical_projections_and_ids(
    kafka_bootstrap: str, fresh_topic: str, tmp_path: Path
) -> None:
    publish_raw_json(kafka_bootstrap, fresh_topic, synthetic(3000, seed=11))
    live, rebuilt = tmp_path / "live.duckdb", tmp_path / "rebuilt.duckdb"
    consume(
        str(live),
        kafka_bootstrap,
        fresh_topic,
        None,
        options=ConsumeOptions(once=True, batch_size=250),
    )
    rebuild_from_kafka(str(rebuilt), kafka_bootstrap, fresh_topic, batch_size=1000)
    before = dump(live)
    assert before["profiles"] and before["dead_letters"] and before["profile_merges"]
    assert dump(rebuilt) == before
    rebuild_from_kafka(str(live), kafka_bootstrap, fresh_topic)  # swap over the live one
    assert dump(live) == before
    assert not Path(str(live) + ".rebuild").exists()


def test_erasure_survives_a_rebuild(kafka_bootstrap: str, fresh_topic: str, db_path: Path) -> None:
    publish(kafka_bootstrap, fresh_topic, small_log())
    rebuild_from_kafka(str(db_path), kafka_bootstrap, fresh_topic)
    with duckdb.connect(str(db_path), read_only=True) as con:
        phone = con.execute(
            "SELECT count(*) FROM identifiers WHERE id_value = '+14155552671'"
        ).fetchone()
        timeline = con.execute("SELECT count(*) FROM events WHERE event_id = 'b0'").fetchone()
    assert (phone, timeline) == ((0,), (0,))


def test_rebuild_keeps_settings(kafka_bootstrap: str, fresh_topic: str, db_path: Path) -> None:
    publish(kafka_bootstrap, fresh_topic, small_log())
    consume(str(db_path), kafka_bootstrap, fresh_topic, None, options=ONCE)
    with duckdb.connect(str(db_path)) as con:
        con.execute("INSERT INTO settings VALUES ('implicit_consent.sms', 'true')")
    rebuild_from_kafka(str(db_path), kafka_bootstrap, fresh_topic)
    with duckdb.connect(str(db_path), read_only=True) as con:
        assert con.execute("SELECT key, value FROM settings").fetchall() == [
            ("implicit_consent.sms", "true")
        ]


def test_rebuild_refuses_when_retention_ate_the_log(
    kafka_bootstrap: str, kafka_admin: Any, fresh_topic: str, db_path: Path
) -> None:
    publish(kafka_bootstrap, fresh_topic, small_log())
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    tps = [TopicPartition(fresh_topic, p) for p in consumer.partitions_for_topic(fresh_topic)]
    ends = consumer.end_offsets(tps)
    consumer.close()
    truncated = {tp: end for tp, end in ends.items() if end > 0}
    kafka_admin.delete_records(truncated)
    with pytest.raises(LogGapError, match="no longer holds"):
        rebuild_from_kafka(str(db_path), kafka_bootstrap, fresh_topic)
    assert not db_path.exists()


def test_rebuild_from_a_file_dead_letters_invalid_lines_with_their_numbers(
    tmp_path: Path, db_path: Path
) -> None:
    source = tmp_path / "events.jsonl"
    lines = [json.dumps(event_to_json(e)) for e in small_log()]
    lines.insert(2, "{not json")
    lines.insert(5, json.dumps({"type": "identify", "timestamp": "2026-01-01T00:00:00"}))
    source.write_text("\n".join(lines) + "\n")
    stats = rebuild_from_file(str(db_path), str(source))
    assert (stats.folded, stats.dead_lettered) == (8, 2)
    with duckdb.connect(str(db_path), read_only=True) as con:
        letters = con.execute(
            "SELECT line_number, reason FROM dead_letters ORDER BY line_number"
        ).fetchall()
    assert [n for n, _ in letters] == [3, 6]
    assert "not valid JSON" in letters[0][1]
    assert "timestamp" in letters[1][1]


def test_a_delete_scrubs_the_dead_letters_before_it_and_not_after_whatever_the_batches(
    tmp_path: Path,
) -> None:
    """A delete takes the erased person's values out of the dead letters that came before it
    (a short customer_id too: matched as a JSON string), in the batch's own dead letters as
    in stored ones, so the table is the same whatever the batch size: a consumer's small
    batches and a rebuild's one. A dead letter after the delete is news and stays whole."""
    at = "2026-01-0{}T10:00:00Z".format
    lines = [
        {"event_id": "ann-1", "type": "identify", "timestamp": at(1),
         "identifiers": {"customer_id": "ZQ7", "email": "ann.dl@example.com"}, "traits": {}},
        {"event_id": "bad-1", "type": "track", "timestamp": at(2),
         "identifiers": {"customer_id": "ZQ7"}, "event": 5},
        {"event_id": "bad-2", "type": "track", "timestamp": at(3),
         "identifiers": {"email": "Ann.DL@example.com"}},
        {"event_id": "del", "type": "ccpa", "timestamp": at(4),
         "identifiers": {"customer_id": "ZQ7"}, "request": "delete"},
        {"event_id": "bad-3", "type": "track", "timestamp": at(5),
         "identifiers": {"customer_id": "ZQ7"}, "event": 6},
    ]  # fmt: skip
    source = tmp_path / "log.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    tables = []
    for batch_size in (1, 2, 3, 1000):
        db = tmp_path / f"batches-of-{batch_size}.duckdb"
        rebuild_from_file(str(db), str(source), batch_size=batch_size)
        with duckdb.connect(str(db), read_only=True) as con:
            tables.append(
                con.execute(
                    "SELECT line_number, raw IS NULL, ends_with(reason, 'by a ccpa delete]')"
                    " FROM dead_letters ORDER BY line_number"
                ).fetchall()
            )
    assert tables[0] == [(2, True, True), (3, True, True), (5, False, False)]
    assert all(table == tables[0] for table in tables), tables


def test_a_consumer_killed_mid_batch_resumes_to_the_same_projections_as_a_rebuild(
    kafka_bootstrap: str, fresh_topic: str, fresh_dead_letter_topic: str, tmp_path: Path
) -> None:
    publish_raw_json(kafka_bootstrap, fresh_topic, synthetic(40_000, seed=5))
    killed_db, clean_db = tmp_path / "killed.duckdb", tmp_path / "clean.duckdb"
    command = [
        sys.executable, "-m", "profile_engine.cli.main", "consume", "--db", str(killed_db),
        "--topic", fresh_topic, "--dead-letter-topic", fresh_dead_letter_topic,
        "--bootstrap-servers", kafka_bootstrap, "--once",
        "--batch-size", "500",
    ]  # fmt: skip
    kills = 0
    for delay in (2.5, 2.0, 2.0):
        victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(delay)
        if victim.poll() is not None:
            break
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        kills += 1
    assert kills >= 1, "the consumer finished before it could be killed; use a larger log"
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    rebuild_from_kafka(str(clean_db), kafka_bootstrap, fresh_topic)
    assert dump(killed_db) == dump(clean_db)


def test_a_follower_folds_new_events_and_stops_cleanly_on_sigterm(
    kafka_bootstrap: str,
    fresh_topic: str,
    fresh_dead_letter_topic: str,
    db_path: Path,
    kafka_admin: Any,
) -> None:
    group = f"{fresh_topic}-follower"
    command = [
        sys.executable, "-m", "profile_engine.cli.main", "consume", "--db", str(db_path),
        "--topic", fresh_topic, "--dead-letter-topic", fresh_dead_letter_topic,
        "--bootstrap-servers", kafka_bootstrap, "--format", "json", "--group-id", group,
    ]  # fmt: skip
    follower = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(3)  # started and caught up with an empty topic
        publish(kafka_bootstrap, fresh_topic, small_log())
        # The group mirror is committed after each committed batch: once it holds all 8
        # offsets the follower has folded the tail (no fixed sleep: a loaded machine is slow).
        deadline = time.monotonic() + 90
        while _mirrored_offsets(kafka_admin, group) < 8 and time.monotonic() < deadline:
            assert follower.poll() is None, follower.stderr.read() if follower.stderr else ""
            time.sleep(0.5)
        assert follower.poll() is None, follower.stderr.read() if follower.stderr else ""
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    assert json.loads(out)["folded"] == 8
    state = dump(db_path, ("profiles", "consumer_offsets"))
    assert len(state["profiles"]) == 2
    assert sum(row[2] for row in state["consumer_offsets"]) == 8


def _mirrored_offsets(kafka_admin: Any, group: str) -> int:
    from kafka.errors import KafkaError

    try:
        committed = kafka_admin.list_group_offsets(group).get(group, {})
    except KafkaError:  # the group's coordinator is not ready before the first commit
        return 0
    return sum(offset.offset for offset in committed.values())


def test_a_tombstone_is_dead_lettered_with_its_reason(
    kafka_bootstrap: str, fresh_topic: str, db_path: Path
) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer.send(fresh_topic, key=b"email:ann@example.com", value=None).get(timeout=30)
    producer.close()
    publish(kafka_bootstrap, fresh_topic, small_log()[:2])
    stats = consume(str(db_path), kafka_bootstrap, fresh_topic, None, options=ONCE)
    assert (stats.consumed, stats.dead_lettered) == (3, 1)
    with duckdb.connect(str(db_path), read_only=True) as con:
        (key, reason) = con.execute("SELECT message_key, reason FROM dead_letters").fetchone()
    assert (key, reason) == (b"email:ann@example.com", "null value: not an event")
