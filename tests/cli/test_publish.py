"""`profile-engine publish`, `topics create` and `archive` against a real broker."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from consumers.codec import AvroCodec
from profile_engine.cli.main import cli
from profile_engine.events import datetime_to_us
from tests.support.kafka import consume_all, kill_broker, private_broker

pytestmark = pytest.mark.kafka

TS = "2026-01-01T10:00:00Z"


def invoke(*args: str, input: bytes | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def valid_events() -> list[dict[str, Any]]:
    email = {"email": "ann@example.com"}
    return [
        {"event_id": "v-identify", "type": "identify", "timestamp": TS,
         "identifiers": {**email, "customer_id": 42}, "traits": {"first_name": "Ann"}},
        {"event_id": "v-track", "type": "track", "timestamp": TS, "identifiers": email,
         "event": "purchase", "properties": {"order_id": "o1", "revenue": 9.5}},
        {"event_id": "v-consent", "type": "consent", "timestamp": TS, "identifiers": email,
         "channel": "email", "status": "opted_in"},
        {"event_id": "v-bounce", "type": "bounce", "timestamp": TS,
         "identifiers": {"phone": "+1 415 555 2671"}, "channel": "sms", "bounce_type": "soft"},
        {"event_id": "v-subscription", "type": "subscription", "timestamp": TS,
         "identifiers": email, "list_id": "news", "channel": "email", "status": "subscribed"},
        {"event_id": "v-ccpa", "type": "ccpa", "timestamp": TS, "identifiers": email,
         "request": "opt_out"},
    ]  # fmt: skip


# (line text, the exact report expected on stderr after "line N: ")
INVALID_LINES = [
    ("{not json", "event: not valid JSON (Expecting property name enclosed in double quotes "
     "at column 2)"),
    (json.dumps({"type": "ccpa", "timestamp": "2026-01-01T10:00:00",
                 "identifiers": {"email": "a@b.com"}, "request": "delete"}),
     "timestamp: timestamp must carry a UTC offset (e.g. 2026-01-01T10:00:00Z)"),
    (json.dumps({"type": "consent", "timestamp": TS, "identifiers": {"email": "a@b.com"},
                 "channel": "sms", "status": "opted_in"}),
     "identifiers.phone: a consent event for channel sms must carry a usable phone"),
    (json.dumps({"type": "page", "timestamp": TS, "identifiers": {"email": "a@b.com"}}),
     "type: type must be one of identify, track, consent, bounce, subscription, ccpa"),
    (json.dumps({"type": "identify", "timestamp": TS, "identifiers": {"email": "a@b.com"},
                 "traits": {"shoe_size": 9}}),
     "traits.shoe_size: not a registered attribute "
     "(register it with `profile-engine attributes add`)"),
    (json.dumps({"type": "ccpa", "timestamp": TS, "identifiers": {"email": "null"},
                 "request": "delete"}),
     "identifiers: at least one usable identifier is required"),
]  # fmt: skip


def mixed_file(path: Path) -> tuple[list[str], dict[int, str]]:
    """Valid and invalid lines interleaved (and one blank); returns valid ids, line -> report."""
    lines: list[str] = []
    reports: dict[int, str] = {}
    valid = valid_events()
    for index, event in enumerate(valid):
        lines.append(json.dumps(event))
        if index < len(INVALID_LINES):
            text, report = INVALID_LINES[index]
            lines.append(text)
            reports[len(lines)] = report
        if index == 2:
            lines.append("   ")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [e["event_id"] for e in valid], reports


def publish_args(bootstrap: str, topic: str, tmp_path: Path, *extra: str) -> list[str]:
    attributes = tmp_path / "no-custom-attributes.json"  # standard attributes only
    return [
        "--bootstrap-servers", bootstrap, "--topic", topic, "--attributes", str(attributes),
        *extra,
    ]  # fmt: skip


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("line ")]


@pytest.mark.parametrize("workers", ["0", "1"])
def test_publish_sends_valid_lines_and_reports_and_keeps_invalid_ones(
    kafka_bootstrap: str, fresh_topic: str, tmp_path: Path, workers: str
) -> None:
    source = tmp_path / "events.jsonl"
    valid_ids, reports = mixed_file(source)
    result = invoke(
        "publish", str(source), *publish_args(kafka_bootstrap, fresh_topic, tmp_path),
        "--workers", workers,
    )  # fmt: skip

    assert result.exit_code == 1
    assert error_lines(result) == [f"line {n}: {text}" for n, text in sorted(reports.items())]
    assert f"published {len(valid_ids)}, rejected {len(reports)}" in result.stdout
    rejects = tmp_path / "events.jsonl.rejects.jsonl"
    source_lines = source.read_text(encoding="utf-8").splitlines()
    assert rejects.read_text(encoding="utf-8").splitlines() == [
        source_lines[n - 1] for n in sorted(reports)
    ]
    codec = AvroCodec()
    messages = consume_all(kafka_bootstrap, fresh_topic, len(valid_ids))
    assert sorted(codec.decode(m.value).event_id for m in messages) == sorted(valid_ids)


def test_publish_from_stdin_with_only_valid_lines_exits_zero(
    kafka_bootstrap: str, fresh_topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = "".join(json.dumps(e) + "\n" for e in valid_events()).encode()
    result = invoke(
        "publish", "-", *publish_args(kafka_bootstrap, fresh_topic, tmp_path), input=data
    )
    assert result.exit_code == 0, result.stderr
    assert "published 6, rejected 0" in result.stdout
    assert not (tmp_path / "stdin.rejects.jsonl").exists()
    assert len(consume_all(kafka_bootstrap, fresh_topic, 6)) == 6


def test_publish_from_stdin_keeps_rejects_in_the_working_directory(
    kafka_bootstrap: str, fresh_topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(
        "publish", "-", *publish_args(kafka_bootstrap, fresh_topic, tmp_path), input=b"[1, 2]\n"
    )
    assert result.exit_code == 1
    assert error_lines(result) == ["line 1: event: must be a JSON object"]
    assert (tmp_path / "stdin.rejects.jsonl").read_text() == "[1, 2]\n"


def test_publish_of_a_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["publish", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: {tmp_path / 'nope.jsonl'}: no such file"


def test_topics_create_twice_is_fine(kafka_bootstrap: str) -> None:
    topic = f"test-cli-topics-{uuid.uuid4().hex[:8]}"
    args = ["topics", "create", "--bootstrap-servers", kafka_bootstrap, "--topic", topic,
            "--dead-letter-topic", f"{topic}-dl", "--partitions", "2"]  # fmt: skip
    first = invoke(*args)
    second = invoke(*args)
    assert first.exit_code == 0 and second.exit_code == 0
    assert first.stdout.splitlines() == [f"created {topic}", f"created {topic}-dl"]
    assert second.stdout.splitlines() == [f"already exists {topic}", f"already exists {topic}-dl"]


def test_archive_command_writes_a_replayable_file(
    kafka_bootstrap: str, fresh_topic: str, tmp_path: Path
) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in valid_events()))
    args = publish_args(kafka_bootstrap, fresh_topic, tmp_path)
    assert invoke("publish", str(source), *args).exit_code == 0
    out = tmp_path / "archive.avro"
    result = invoke(
        "archive", "--bootstrap-servers", kafka_bootstrap, "--topic", fresh_topic,
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"archived 6 events from {fresh_topic} to {out}"

    from consumers.archive import iter_archive

    replayed = [event for _, event, _ in iter_archive(out)]
    assert sorted(e.event_id for e in replayed if e) == sorted(
        e["event_id"] for e in valid_events()
    )
    assert not (tmp_path / "archive.avro.skipped.jsonl").exists()

    # A message that is no event cannot be archived: kept beside it, and the command fails.
    from kafka import KafkaProducer

    raw = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    raw.send(fresh_topic, key=b"k", value=b"garbage").get(timeout=30)
    raw.close()
    result = invoke(
        "archive", "--bootstrap-servers", kafka_bootstrap, "--topic", fresh_topic,
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 1
    kept = tmp_path / "archive.avro.skipped.jsonl"
    assert f"kept in {kept}" in result.stderr.splitlines()[-1]
    (line,) = kept.read_text().splitlines()
    message = json.loads(line)
    assert base64.b64decode(message["value"]) == b"garbage" and message["key"] == "aw=="
    assert sum(1 for _ in iter_archive(out)) == 6  # the events are all there


# --- faults: nothing lost, nothing hidden ------------------------------------------------------


def test_a_line_larger_than_the_topic_accepts_is_rejected_and_later_lines_go(
    kafka_bootstrap: str, small_messages_topic: str, tmp_path: Path
) -> None:
    events = valid_events()
    huge = dict(events[1], event_id="too-big", event="blob", properties={"x": "x" * 30_000})
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in [events[0], huge, *events[1:]]))
    result = invoke(
        "publish", str(source), *publish_args(kafka_bootstrap, small_messages_topic, tmp_path)
    )
    assert result.exit_code == 1
    (report,) = error_lines(result)
    assert report.startswith("line 2: event: the message takes 30,")
    assert report.endswith("more than the topic accepts (max.message.bytes 20,000)")
    assert (tmp_path / "events.jsonl.rejects.jsonl").read_text() == json.dumps(huge) + "\n"
    codec = AvroCodec()
    messages = consume_all(kafka_bootstrap, small_messages_topic, len(events))
    assert sorted(codec.decode(m.value).event_id for m in messages) == sorted(
        e["event_id"] for e in events
    )


def test_a_future_event_is_delivered_with_its_own_time_and_does_not_block_its_batch(
    kafka_bootstrap: str, fresh_topic: str, tmp_path: Path
) -> None:
    # Kafka 4 refuses record timestamps more than an hour ahead of its clock: the record
    # timestamp is capped at the producer's clock, the event time stays in the body.
    # Three hours ahead: inside the event-time window (a day), beyond what Kafka 4 accepts.
    ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
    future = dict(valid_events()[0], event_id="from-the-future", timestamp=ahead.isoformat())
    present = dict(valid_events()[0], event_id="same-person-now")
    source = tmp_path / "events.jsonl"
    source.write_text(json.dumps(future) + "\n" + json.dumps(present) + "\n")
    before = time.time() * 1000
    result = invoke("publish", str(source), *publish_args(kafka_bootstrap, fresh_topic, tmp_path))
    assert result.exit_code == 0, result.stderr
    codec = AvroCodec()
    by_id = {
        codec.decode(m.value).event_id: m for m in consume_all(kafka_bootstrap, fresh_topic, 2)
    }
    assert set(by_id) == {"from-the-future", "same-person-now"}
    late = by_id["from-the-future"]
    assert before <= late.timestamp <= time.time() * 1000
    assert codec.decode(late.value).timestamp_us == datetime_to_us(ahead)
    assert by_id["same-person-now"].timestamp == 1_767_261_600_000  # its event time


def test_publish_to_a_missing_topic_is_one_line_for_an_operator(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text(json.dumps(valid_events()[0]) + "\n")
    result = CliRunner().invoke(
        cli, ["publish", str(source), *publish_args(kafka_bootstrap, "no-such-topic", tmp_path)]
    )
    assert result.exit_code == 78
    assert result.stderr.strip() == (
        "Error: topic no-such-topic does not exist; create it with `profile-engine topics create`"
    )


@pytest.mark.parametrize("command", ["publish", "import"])
def test_the_delivery_timeout_is_an_option_and_an_environment_variable(command: str) -> None:
    result = invoke(command, "--help")
    assert "--delivery-timeout" in result.stdout
    assert "PROFILE_ENGINE_DELIVERY_TIMEOUT" in result.stdout


def big_file(path: Path, lines: int) -> set[str]:
    """A large valid JSON Lines file (many people, a few invalid lines); its valid event ids."""
    ids = set()
    with path.open("w", encoding="utf-8") as out:
        for number in range(1, lines + 1):
            if number % 10_000 == 0:
                out.write("{broken\n")
                continue
            event_id = f"big-{number}"
            ids.add(event_id)
            out.write(
                f'{{"event_id": "{event_id}", "type": "track", "timestamp": "{TS}", '
                f'"identifiers": {{"anonymous_id": "anon-{number % 5_000}"}}, '
                f'"event": "page_view", "properties": {{"path": "/p/{number}"}}}}\n'
            )
    return ids


LINES = 100_000


def test_a_broker_killed_mid_file_ends_publish_in_bounded_time_and_loses_no_line(
    tmp_path: Path,
) -> None:
    source = tmp_path / "events.jsonl"
    valid_ids = big_file(source, LINES)
    topic = "events"
    with private_broker(tmp_path / "kafka") as broker:
        bootstrap = broker.bootstrap_servers
        assert invoke("topics", "create", "--bootstrap-servers", bootstrap, "--topic", topic,
                      "--dead-letter-topic", f"{topic}-dl").exit_code == 0  # fmt: skip
        command = [
            sys.executable, "-m", "profile_engine.cli.main", "publish", str(source),
            *publish_args(bootstrap, topic, tmp_path), "--delivery-timeout", "5",
        ]  # fmt: skip
        publisher = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        try:
            _wait_until_the_topic_holds_messages(bootstrap, topic, publisher)
            kill_broker(broker)
            killed_at = time.monotonic()
            _, stderr = publisher.communicate(timeout=240)
        finally:
            publisher.kill()
        seconds_after_kill = time.monotonic() - killed_at

        assert publisher.returncode == 75, stderr  # transient: try again later
        errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "Traceback" not in stderr
        (error,) = errors
        assert f"no confirmation from Kafka at {bootstrap} for 5 s" in error
        assert f"publishing {source} again is safe: events are deduplicated by event_id" in error
        confirmed = int(error.split(" line(s) confirmed")[0].rsplit(" ", 1)[1].replace(",", ""))
        listing = tmp_path / "events.jsonl.unconfirmed.txt"
        assert str(listing) in error
        unconfirmed = {int(n) for n in listing.read_text().split()}
        assert seconds_after_kill < 120  # bounded: the timeout, plus closing the connection

        # Every line is confirmed, rejected or listed; every confirmed one is in the log.
        broker.start(timeout=180, stop_with_owner=True)
        codec = AvroCodec()
        logged = {codec.decode(m.value).event_id for m in consume_all(bootstrap, topic)}
        not_listed = {f"big-{n}" for n in range(1, LINES + 1)} - {f"big-{n}" for n in unconfirmed}
        assert (not_listed & valid_ids) <= logged
        assert len(not_listed & valid_ids) == confirmed

        # Resuming: the same file again; event ids make the duplicates harmless.
        again = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert again.returncode == 1, again.stderr  # only the invalid lines remain
        assert not listing.exists()
        logged = {codec.decode(m.value).event_id for m in consume_all(bootstrap, topic)}
        assert logged == valid_ids


def _wait_until_the_topic_holds_messages(
    bootstrap: str, topic: str, publisher: subprocess.Popen[str]
) -> None:
    from tests.support.kafka import end_offsets

    deadline = time.monotonic() + 300
    while end_offsets(bootstrap, topic) == 0:
        assert publisher.poll() is None, publisher.communicate()
        assert time.monotonic() < deadline, "publish sent nothing"
        time.sleep(0.2)


@pytest.mark.parametrize("topic", ["", "bad topic!", "..", "x" * 250])
def test_a_topic_name_kafka_refuses_is_a_usage_error(tmp_path: Path, topic: str) -> None:
    source = tmp_path / "e.jsonl"
    source.write_text("")
    result = invoke("publish", str(source), "--topic", topic, "--bootstrap-servers", "127.0.0.1:1")
    assert result.exit_code == 2
    assert "is not a Kafka topic name (1 to 249 of A-Z a-z 0-9 . _ -)" in result.output


@pytest.mark.kafka
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_stopped_publish_leaves_no_worker_behind(
    tmp_path: Path, kafka_bootstrap: str, fresh_topic: str, how: str
) -> None:
    """SIGTERM stops it as Ctrl-C does (143, after telling which lines it did not confirm);
    even SIGKILL, which gives it no chance to shut its pool down, ends its encoding
    workers."""
    import psutil

    source = tmp_path / "events.jsonl"
    big_file(source, LINES)
    command = [sys.executable, "-m", "profile_engine.cli.main", "publish", str(source),
               *publish_args(kafka_bootstrap, fresh_topic, tmp_path)]  # fmt: skip
    publisher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until_the_topic_holds_messages(kafka_bootstrap, fresh_topic, publisher)
        workers = psutil.Process(publisher.pid).children()
        assert workers, "publish runs its encoding in worker processes"
        publisher.send_signal(getattr(signal, how))
        _, stderr = publisher.communicate(timeout=60)
    finally:
        publisher.kill()
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == []
    if how == "SIGTERM":
        # Stopped as Ctrl-C stops it: every line still confirmed, rejected or listed.
        assert publisher.returncode == 143 and stderr.strip().splitlines()[-1] == "terminated"
        from tests.support.kafka import end_offsets

        listing = tmp_path / "events.jsonl.unconfirmed.txt"
        listed = {int(n) for n in listing.read_text().split()} if listing.exists() else set()
        rejects = tmp_path / "events.jsonl.rejects.jsonl"  # those read before the stop
        rejected = len(rejects.read_text().splitlines()) if rejects.exists() else 0
        assert end_offsets(kafka_bootstrap, fresh_topic) + len(listed) + rejected == LINES
        if listed:
            assert "Publishing was stopped; " in stderr and str(listing) in stderr
