"""`profile-engine publish`, `topics create` and `archive` against a real broker."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from consumers.codec import AvroCodec
from profile_engine.cli.main import cli
from tests.consumers.test_producer import consume_all

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
