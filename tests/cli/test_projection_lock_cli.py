"""A rebuild, a consumer and a settings change never step on each other's projection.

Each holds the projection's lock (``<db>.lock``) while it writes; whoever comes second is
refused with one line naming the holder (transient: exit 75), and a rebuild never replaces a
projection built from another topic unless told to.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from profile_engine.contract import event_to_json
from projections.connection import ProjectionLock
from tests.profile_engine.builders import identify, track

EXIT_TRANSIENT = 75
EXIT_NEEDS_OPERATOR = 78


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "profile_engine.cli.main", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def _log(path: Path) -> Path:
    events = [track(0, anonymous_id="anon-1"), identify(1, email="a@x.io", anonymous_id="anon-1")]
    path.write_text("".join(json.dumps(event_to_json(e)) + "\n" for e in events))
    return path


@pytest.fixture
def built(tmp_path: Path, db_path: Path) -> Path:
    assert run_cli("rebuild", "--db", str(db_path), "--from-file", str(_log(tmp_path / "l.jsonl")))
    return db_path


def _refused_while_held(db_path: Path, holder: str, *args: str) -> str:
    with ProjectionLock(db_path, holder):
        result = run_cli(*args)
    assert result.returncode == EXIT_TRANSIENT, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"`profile-engine {holder}`" in result.stderr
    return result.stderr


def test_a_consumer_does_not_start_while_a_rebuild_runs(built: Path) -> None:
    _refused_while_held(built, "rebuild", "consume", "--db", str(built), "--once",
                        "--bootstrap-servers", "127.0.0.1:1")  # fmt: skip


def test_a_rebuild_does_not_replace_the_file_of_a_running_consumer(
    built: Path, tmp_path: Path
) -> None:
    before = built.read_bytes()
    _refused_while_held(built, "consume", "rebuild", "--db", str(built), "--from-file",
                        str(_log(tmp_path / "again.jsonl")))  # fmt: skip
    assert built.read_bytes() == before


def test_a_setting_is_not_changed_in_a_file_a_rebuild_is_about_to_replace(built: Path) -> None:
    _refused_while_held(
        built, "rebuild", "settings", "set", "implicit_consent.sms", "true", "--db", str(built)
    )
    shown = run_cli("settings", "show", "--db", str(built), "--format", "json")
    sms = next(s for s in json.loads(shown.stdout) if s["key"] == "implicit_consent.sms")
    assert sms["value"] is False


def test_settings_survive_a_rebuild(built: Path, tmp_path: Path) -> None:
    assert (
        run_cli("settings", "set", "implicit_consent.sms", "true", "--db", str(built)).returncode
        == 0
    )
    rebuilt = run_cli("rebuild", "--db", str(built), "--from-file", str(_log(tmp_path / "b.jsonl")))
    assert rebuilt.returncode == 0, rebuilt.stderr
    shown = run_cli("settings", "show", "--db", str(built), "--format", "json")
    sms = next(s for s in json.loads(shown.stdout) if s["key"] == "implicit_consent.sms")
    assert sms["value"] is True


@pytest.mark.kafka
def test_a_rebuild_from_another_topic_needs_force(
    kafka_bootstrap: str, fresh_topic: str, kafka_admin: object, db_path: Path
) -> None:
    from kafka.admin import NewTopic

    other = f"{fresh_topic}-other"
    kafka_admin.create_topics([NewTopic(other, 1, 1)])  # type: ignore[attr-defined]
    kafka_admin.wait_for_topics([other], timeout_ms=30_000)  # type: ignore[attr-defined]
    first = run_cli("rebuild", "--db", str(db_path), "--topic", fresh_topic,
                    "--bootstrap-servers", kafka_bootstrap)  # fmt: skip
    assert first.returncode == 0, first.stderr
    refused = run_cli("rebuild", "--db", str(db_path), "--topic", other,
                      "--bootstrap-servers", kafka_bootstrap)  # fmt: skip
    assert refused.returncode == EXIT_NEEDS_OPERATOR
    assert f"was built from topic {fresh_topic!r}" in refused.stderr
    assert "--force" in refused.stderr
    forced = run_cli("rebuild", "--db", str(db_path), "--topic", other, "--force",
                     "--bootstrap-servers", kafka_bootstrap)  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    consume_old = run_cli("consume", "--db", str(db_path), "--topic", fresh_topic, "--once",
                          "--bootstrap-servers", kafka_bootstrap)  # fmt: skip
    assert consume_old.returncode == EXIT_NEEDS_OPERATOR
    assert f"was built from topic {other!r}" in consume_old.stderr


def test_a_disk_too_full_to_take_the_lock_is_one_line(tmp_path: Path) -> None:
    db_path = tmp_path / "full.duckdb"
    # /dev/full opens, then refuses what a full disk refuses.
    (tmp_path / "full.duckdb.lock").symlink_to("/dev/full")
    result = run_cli("rebuild", "--db", str(db_path), "--from-file", str(_log(tmp_path / "l")))
    assert result.returncode == 78, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: cannot use {db_path}: ") and line.endswith(f"{db_path}.lock)")
