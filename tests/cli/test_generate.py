"""`profile-engine generate`: JSON Lines to a file or stdout, deterministic, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from profile_engine.cli.main import cli
from profile_engine.contract import ContractError, parse_event


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["generate", *args], catch_exceptions=False)


def test_writes_n_lines_to_out_and_a_summary_to_stderr(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    result = invoke("--events", "500", "--seed", "3", "--out", str(out))
    assert result.exit_code == 0, result.output
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 500
    assert result.stdout == ""
    assert "wrote 500 events" in result.stderr


def test_stdout_gets_the_same_bytes_as_the_file(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    assert invoke("-n", "300", "--seed", "8", "--out", str(out)).exit_code == 0
    to_stdout = invoke("-n", "300", "--seed", "8")
    assert to_stdout.exit_code == 0
    assert to_stdout.stdout == out.read_text(encoding="utf-8")


def test_start_days_and_invalid_rate_are_honoured() -> None:
    result = invoke(
        "-n", "400", "--seed", "2", "--start", "2025-03-01T00:00:00+00:00",
        "--days", "1", "--invalid-rate", "0",
    )  # fmt: skip
    assert result.exit_code == 0
    for line in result.stdout.splitlines():
        event = parse_event(json.loads(line))  # every line valid at rate 0
        assert event.timestamp.date().isoformat() == "2025-03-01"


def test_invalid_rate_one_gives_only_invalid_lines() -> None:
    result = invoke("-n", "50", "--invalid-rate", "1")
    assert result.exit_code == 0
    for line in result.stdout.splitlines():
        try:
            parse_event(json.loads(line))
        except (json.JSONDecodeError, ContractError):
            continue
        raise AssertionError(f"valid line at invalid rate 1: {line}")


def test_naive_start_is_a_one_line_error() -> None:
    result = invoke("-n", "5", "--start", "2026-01-01T00:00:00")
    assert result.exit_code != 0
    assert "--start: needs a UTC offset" in result.stderr
    assert "Traceback" not in result.output


def test_unwritable_out_is_a_one_line_error(tmp_path: Path) -> None:
    result = invoke("-n", "5", "--out", str(tmp_path / "missing-dir" / "x.jsonl"))
    assert result.exit_code != 0
    assert "cannot write" in result.stderr and "No such file or directory" in result.stderr


def test_events_is_required_and_help_describes_the_stream() -> None:
    missing = invoke()
    assert missing.exit_code != 0 and "--events" in missing.stderr
    help_text = invoke("--help").stdout
    assert "JSON Lines" in help_text and "--invalid-rate" in help_text


def test_a_window_outside_what_a_file_accepts_is_one_line() -> None:
    """Events past 2100 would all be refused when folded (and past 9999 they overflowed)."""
    result = invoke("-n", "10", "--start", "9999-12-31T00:00:00Z")
    assert result.exit_code == 1
    assert "--start and --days: the events must fall between 2000-01-01T00:00:00Z and" in (
        result.output
    )
    assert invoke("-n", "1", "--start", "2099-12-31T00:00:00Z", "--days", "2").exit_code == 1
