"""`consume` and `rebuild` as a user runs them: summaries, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from profile_engine.contract import event_to_json
from tests.profile_engine.builders import identify, track


def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "profile_engine.cli.main", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def write_log(path: Path) -> Path:
    events = [
        track(0, anonymous_id="anon-1"),
        identify(1, email="a@example.com", anonymous_id="anon-1"),
    ]
    lines = [json.dumps(event_to_json(e)) for e in events] + ['{"type": "nope"}']
    path.write_text("\n".join(lines) + "\n")
    return path


def test_rebuild_from_a_file_prints_the_summary(tmp_path: Path, db_path: Path) -> None:
    source = write_log(tmp_path / "log.jsonl")
    result = run_cli(
        "rebuild", "--db", str(db_path), "--from-file", str(source), "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["consumed"], summary["folded"], summary["dead_lettered"]) == (3, 2, 1)


def test_a_bad_id_limit_is_a_one_line_error(tmp_path: Path, db_path: Path) -> None:
    source = write_log(tmp_path / "log.jsonl")
    result = run_cli(
        "rebuild", "--db", str(db_path), "--from-file", str(source), "--id-limit", "email"
    )
    assert result.returncode != 0
    assert "expected TYPE=N" in result.stderr
    assert "Traceback" not in result.stderr


def test_changing_id_limits_without_a_rebuild_is_refused(tmp_path: Path, db_path: Path) -> None:
    source = write_log(tmp_path / "log.jsonl")
    assert run_cli("rebuild", "--db", str(db_path), "--from-file", str(source)).returncode == 0
    result = run_cli("consume", "--db", str(db_path), "--once", "--id-limit", "customer_id=2",
                     "--bootstrap-servers", "127.0.0.1:1")  # fmt: skip
    assert result.returncode == 78  # needs an operator: rebuild with the new limits
    assert "rebuild to change them" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_locked_database_is_reported_clearly(tmp_path: Path, db_path: Path) -> None:
    source = write_log(tmp_path / "log.jsonl")
    assert run_cli("rebuild", "--db", str(db_path), "--from-file", str(source)).returncode == 0
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb, time; c = duckdb.connect({str(db_path)!r}); print('held', flush=True);"
         " time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = run_cli("consume", "--db", str(db_path), "--once")
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 75  # transient: retry when the writer lets go
    assert "is locked by process" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.kafka
def test_consume_names_a_missing_topic(kafka_bootstrap: str, db_path: Path) -> None:
    result = run_cli("consume", "--db", str(db_path), "--once", "--topic", "no-such-topic-here",
                     "--bootstrap-servers", kafka_bootstrap)  # fmt: skip
    assert result.returncode == 78  # needs an operator: create the topic
    assert "topic 'no-such-topic-here' does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.kafka
def test_a_mistyped_topic_on_the_first_run_does_not_tie_the_database_to_it(
    kafka_bootstrap: str, fresh_topic: str, db_path: Path
) -> None:
    """Nothing was folded from the mistyped topic: the right one is taken on the next run.
    (Once something was folded, another topic is refused: tests/cli/test_projection_lock_cli.)"""
    mistyped = run_cli("consume", "--db", str(db_path), "--once", "--topic", "no-such-topic-x",
                       "--bootstrap-servers", kafka_bootstrap)  # fmt: skip
    assert mistyped.returncode == 78
    right = run_cli("consume", "--db", str(db_path), "--once", "--topic", fresh_topic,
                    "--bootstrap-servers", kafka_bootstrap, "--dead-letter-topic", "")  # fmt: skip
    assert right.returncode == 0, right.stderr


def test_a_rebuild_gives_registered_traits_their_sql_types(tmp_path: Path, db_path: Path) -> None:
    registry = tmp_path / "attributes.json"
    assert (
        run_cli("attributes", "add", "vip", "boolean", "--attributes", str(registry)).returncode
        == 0
    )
    assert (
        run_cli("attributes", "add", "points", "long", "--attributes", str(registry)).returncode
        == 0
    )
    event = identify(0, {"vip": True, "points": 120, "city": "Oslo"}, email="a@example.com")
    source = tmp_path / "log.jsonl"
    source.write_text(json.dumps(event_to_json(event)) + "\n")
    rebuilt = run_cli("rebuild", "--db", str(db_path), "--from-file", str(source),
                      "--attributes", str(registry))  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stderr
    query = "SELECT vip, points + 1 AS next, city, typeof(points) FROM profile_traits"
    result = run_cli("sql", "--db", str(db_path), query, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"vip": True, "next": 121, "city": "Oslo", "typeof(points)": "BIGINT"}
    ]


def test_the_cli_batch_size_default_is_the_consumers() -> None:
    # The CLI imports the consumer lazily (startup time), so it restates the default.
    from consumers.consumer import DEFAULT_BATCH_SIZE
    from profile_engine.cli.fold_cmd import batch_option

    @batch_option
    def command(batch_size: int) -> None: ...

    (option,) = command.__click_params__  # type: ignore[attr-defined]
    assert option.default == DEFAULT_BATCH_SIZE


@pytest.mark.parametrize(
    "command",
    [
        ("rebuild", "--from-file", "{source}"),
        ("consume", "--once", "--bootstrap-servers", "127.0.0.1:1"),
        ("settings", "set", "bounce.soft_bounce_limit", "3"),
    ],
)
def test_a_database_in_a_folder_that_does_not_exist_is_one_line(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """The lock beside the database could not be created: that was a traceback."""
    source = write_log(tmp_path / "log.jsonl")
    db = tmp_path / "no-such-folder" / "p.duckdb"
    args = [part.format(source=source) for part in command]
    result = run_cli(*args, "--db", str(db))
    assert result.returncode == 78, result.stderr
    assert result.stderr.strip() == (
        f"Error: cannot use {db}: No such file or directory ({db}.lock)"
    )


def test_a_database_file_cut_short_is_named_in_one_line(tmp_path: Path, db_path: Path) -> None:
    source = write_log(tmp_path / "log.jsonl")
    assert run_cli("rebuild", "--db", str(db_path), "--from-file", str(source)).returncode == 0
    whole = db_path.read_bytes()
    db_path.write_bytes(whole[: len(whole) // 2])  # a copy that stopped halfway
    for args, says in (
        (("counts", "--db", str(db_path)), f"{db_path.name}: IO Error"),
        (("rebuild", "--db", str(db_path), "--from-file", str(source)), "move the file aside"),
    ):
        result = run_cli(*args)
        assert result.returncode == 78, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
        assert says in result.stderr
