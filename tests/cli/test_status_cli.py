"""`status`: where the fold stands, from the projection, the server or the consumer group."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from consumers.broker_process import free_port
from tests.profile_engine.builders import identify, track
from tests.support.processes import RunningCli
from tests.support.sealed_cli import ok, run_cli
from tests.support.serving import publish, serving

pytestmark = pytest.mark.kafka

LOG = [identify(n, eid=f"st-{n}", email=f"p{n}@example.com") for n in range(40)]


def status(db: Path, *args: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        ok(run_cli("status", "--db", str(db), "--format", "json", *args, key=False)).stdout
    )
    return document


def consume_once(db: Path, bootstrap: str, topic: str, dead_letters: str) -> None:
    ok(run_cli("consume", "--once", "--db", str(db), "--bootstrap-servers", bootstrap,
               "--topic", topic, "--dead-letter-topic", dead_letters, key=False))  # fmt: skip


def offsets(document: dict[str, Any]) -> dict[int, tuple[int, int | None]]:
    return {p["partition"]: (p["next_offset"], p["log_end_offset"]) for p in document["partitions"]}


def test_a_stopped_projection_shows_its_offsets_beside_the_log_end_and_the_lag(
    kafka_bootstrap: str, fresh_topic: str, fresh_dead_letter_topic: str, tmp_path: Path
) -> None:
    db = tmp_path / "live.duckdb"
    publish(kafka_bootstrap, fresh_topic, LOG[:30])
    consume_once(db, kafka_bootstrap, fresh_topic, fresh_dead_letter_topic)
    publish(kafka_bootstrap, fresh_topic, LOG[30:])  # published since: the lag
    document = status(db, "--bootstrap-servers", kafka_bootstrap)
    assert document["source"] == "projection" and document["state"] == "not_running"
    assert document["topic"] == fresh_topic and document["broker"]["reachable"] is True
    assert sum(next_offset for next_offset, _ in offsets(document).values()) == 30
    assert sum(end for _, end in offsets(document).values() if end is not None) == 40
    assert document["lag"] == 10 and document["dead_letters"] == 0
    table = ok(run_cli("status", "--db", str(db), "--bootstrap-servers", kafka_bootstrap,
                       key=False)).stdout  # fmt: skip
    assert "not_running" in table and "lag:" in table and fresh_topic in table
    assert "log_end_offset" in table


def test_without_a_broker_the_offsets_show_and_the_lag_is_unknown(
    kafka_bootstrap: str, fresh_topic: str, fresh_dead_letter_topic: str, tmp_path: Path
) -> None:
    db = tmp_path / "live.duckdb"
    publish(kafka_bootstrap, fresh_topic, LOG)
    consume_once(db, kafka_bootstrap, fresh_topic, fresh_dead_letter_topic)
    document = status(db, "--bootstrap-servers", f"127.0.0.1:{free_port()}")
    assert document["broker"]["reachable"] is False
    assert "cannot reach Kafka" in document["broker"]["error"]
    assert document["lag"] is None
    assert sum(next_offset for next_offset, _ in offsets(document).values()) == len(LOG)


def test_a_projection_folded_from_files_has_no_topic(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    ok(run_cli("generate", "-n", "50", "--out", str(events), key=False))
    db = tmp_path / "live.duckdb"
    ok(run_cli("rebuild", "--db", str(db), "--from-file", str(events), key=False))
    document = status(db, "--bootstrap-servers", f"127.0.0.1:{free_port()}")
    assert document["topic"] is None and document["partitions"] == []
    assert document["broker"]["reachable"] is None  # nothing to ask it


def test_while_serve_holds_it_the_status_is_the_servers(
    kafka_bootstrap: str, fresh_topic: str, fresh_dead_letter_topic: str, tmp_path: Path
) -> None:
    db = tmp_path / "live.duckdb"
    total = publish(kafka_bootstrap, fresh_topic, LOG)
    with serving(db, kafka_bootstrap, fresh_topic, fresh_dead_letter_topic) as server:
        served = server.wait_folded(total)
        document = status(db)
        assert document["source"] == "server" and document["server"] == server.url
        assert document["state"] == served["state"] and document["fold_restarts"] == 0
        assert offsets(document) == offsets(served)
        assert document["since_start"]["folded"] == total


def test_while_consume_holds_it_the_offsets_come_from_the_consumer_group(
    kafka_bootstrap: str, fresh_topic: str, fresh_dead_letter_topic: str, tmp_path: Path
) -> None:
    db = tmp_path / "live.duckdb"
    total = publish(kafka_bootstrap, fresh_topic, [*LOG, track(50, eid="st-t", email="p1@x.io")])
    consume = RunningCli(
        "consume",
        "--db",
        str(db),
        "--bootstrap-servers",
        kafka_bootstrap,
        "--topic",
        fresh_topic,
        "--dead-letter-topic",
        fresh_dead_letter_topic,
    )
    try:
        # No --topic: the consumer's lock says which topic and group it folds.
        args = ("--bootstrap-servers", kafka_bootstrap)
        deadline = time.monotonic() + 60
        while not db.exists():  # consume creates it as it starts
            assert time.monotonic() < deadline, consume.stderr_lines
            time.sleep(0.1)
        document = status(db, *args)
        while document.get("lag") != 0 or not document["partitions"]:
            assert time.monotonic() < deadline, document
            time.sleep(0.5)  # the group's offsets follow each committed batch
            document = status(db, *args)
        assert document["source"] == "consumer_group" and document["state"] == "held"
        assert document["topic"] == fresh_topic and document["group_id"] == "profile-engine"
        assert f"`profile-engine consume` (pid {consume.process.pid})" in document["held_by"]
        assert sum(next_offset for next_offset, _ in offsets(document).values()) == total
    finally:
        consume.kill()
