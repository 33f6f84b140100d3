"""`serve` as a user runs it, and the query commands while it holds the database."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from profile_engine.server.discovery import running_server
from tests.profile_engine.builders import bounce, consent, identify, purchase, track
from tests.support.serving import Server, publish, serve_command, serving

pytestmark = pytest.mark.kafka

LOG = [
    identify(0, {"first_name": "Ann", "city": "Paris"}, eid="c-01", email="ann@example.com",
             customer_id="C1"),
    consent(1, "email", "opted_in", eid="c-02", email="ann@example.com"),
    purchase(2, "o-1", 19.99, eid="c-03", customer_id="C1"),
    identify(3, {"first_name": "Bob"}, eid="c-04", email="bob@example.com", phone="+14155552671"),
    bounce(4, "email", "hard", eid="c-05", email="bob@example.com"),
    track(5, "page_viewed", eid="c-06", anonymous_id="anon-1"),
]  # fmt: skip
QUERIES = [
    ("counts", "--month", "2026-03", "--format", "json"),
    ("counts", "--month", "2026-03"),
    ("counts", "--month", "2026-03", "--channel", "sms", "--format", "csv"),
    ("profile", "email:ann@example.com"),
    ("profile", "customer_id:C1", "--format", "json"),
    ("profile", "email:nobody@example.com"),
    ("sql", "SELECT * FROM identifier_reachability ORDER BY ALL"),
    ("sql", "SELECT profile_id, first_seen, revenue, [1, 2] AS l FROM profiles ORDER BY ALL",
     "--format", "json"),
    ("sql", "SELECT channel, reachable FROM reachability_counts ORDER BY ALL", "--format", "csv"),
    ("sql", "DELETE FROM profiles"),
    ("settings", "show"),
    ("settings", "show", "--format", "json"),
]  # fmt: skip


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "profile_engine.cli.main", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=cwd)


def ask_all(db: Path) -> list[tuple[int, str, str]]:
    answers = []
    for query in QUERIES:
        command, *rest = query
        head = [command, *rest[:1]] if command == "settings" else [command]
        tail = rest[1:] if command == "settings" else rest
        result = run_cli(*head, "--db", str(db), *tail)
        answers.append((result.returncode, result.stdout, result.stderr))
    return answers


@pytest.fixture
def served(
    kafka_bootstrap: str, fresh_topic: str, fresh_dead_letter_topic: str, db_path: Path
) -> Iterator[Server]:
    publish(kafka_bootstrap, fresh_topic, LOG)
    with serving(db_path, kafka_bootstrap, fresh_topic, fresh_dead_letter_topic) as server:
        server.wait_folded(len(LOG))
        yield server


def test_query_commands_print_the_same_through_the_server_as_from_the_stopped_file(
    served: Server,
) -> None:
    db_path = served.db_path
    with pytest.raises(duckdb.Error, match="lock"):  # only the server can answer now
        duckdb.connect(str(db_path), read_only=True)
    live = ask_all(db_path)
    assert served.stop() == 0
    assert running_server(db_path) is None
    stopped = ask_all(db_path)
    assert live == stopped
    codes = [code for code, _, _ in live]
    assert codes == [0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0]
    assert json.loads(live[0][1])["total"] == 3
    assert live[5][2] == "Error: no profile found for email:nobody@example.com\n"


def test_sql_through_the_server_says_when_its_answer_was_cut_short(served: Server) -> None:
    """20,000 rows of 1 kB are past what the server answers a query with (16 MB): the rows it
    sent are printed, and the command fails saying so, as a script must know."""
    wide = "SELECT range AS n, repeat('x', 1000) AS pad FROM range(20000)"
    result = run_cli("sql", "--db", str(served.db_path), wide, "--format", "csv")
    assert result.returncode == 1
    (error,) = result.stderr.splitlines()
    printed = len(result.stdout.splitlines()) - 1  # the header
    assert error.startswith(
        "Error: the server answers a query with at most 1,000,000 rows or 16 MB of values; "
        f"the {printed:,} rows above"
    )
    assert 10_000 < printed < 20_000


def test_export_through_the_server_writes_the_rows_of_the_stopped_file(
    served: Server, tmp_path: Path
) -> None:
    live_out = tmp_path / "live.jsonl"
    result = run_cli("export", "--db", str(served.db_path), "--format", "json",
                     "--out", str(live_out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "exported 3 profiles" in result.stderr
    assert served.stop() == 0
    stopped_out = tmp_path / "stopped.jsonl"
    result = run_cli("export", "--db", str(served.db_path), "--format", "json",
                     "--out", str(stopped_out))  # fmt: skip
    assert result.returncode == 0, result.stderr

    def rows(path: Path) -> list[dict[str, object]]:
        lines = path.read_text().splitlines()
        return sorted((json.loads(line) for line in lines), key=lambda r: str(r["profile_id"]))

    assert rows(live_out) == rows(stopped_out)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_export_through_the_server_into_a_pipe_streams_into_it(
    served: Server, tmp_path: Path
) -> None:
    """A named pipe (or /dev/stdout) is written in place: not replaced by a file, and the
    rows are counted as they pass (a pipe cannot be read back)."""
    pipe = tmp_path / "rows.jsonl"
    os.mkfifo(pipe)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()))
    reader.start()
    result = run_cli("export", "--db", str(served.db_path), "--format", "json",
                     "--out", str(pipe))  # fmt: skip
    reader.join(timeout=30)
    assert result.returncode == 0, result.stderr
    assert "exported 3 profiles" in result.stderr
    assert pipe.is_fifo() and len(received[0].splitlines()) == 3


def test_settings_set_through_the_server_moves_the_counts_at_once(served: Server) -> None:
    db = str(served.db_path)

    def sms_reachable() -> int:
        result = run_cli("counts", "--db", db, "--month", "2026-03", "--format", "json")
        return int(json.loads(result.stdout)["channels"]["sms"]["reachable"])

    assert sms_reachable() == 0
    changed = run_cli("settings", "set", "implicit_consent.sms", "true", "--db", db)
    assert (changed.returncode, changed.stdout) == (0, "implicit_consent.sms = true\n")
    assert sms_reachable() == 1  # Bob's phone, unknown consent
    refused = run_cli("settings", "set", "implicit_consent.sms", "maybe", "--db", db)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "not a boolean" in refused.stderr
    reset = run_cli("settings", "reset", "implicit_consent.sms", "--db", db)
    assert reset.stdout == "implicit_consent.sms = false (default)\n"
    assert sms_reachable() == 0


def test_a_second_server_on_the_same_database_is_refused_in_one_line(
    served: Server, kafka_bootstrap: str, fresh_topic: str
) -> None:
    second = subprocess.run(
        serve_command(served.db_path, kafka_bootstrap, fresh_topic),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert second.returncode == 75, second.stderr
    assert second.stderr.startswith("Error: ") and second.stderr.count("\n") == 1
    assert "in use by `profile-engine serve`" in second.stderr
    assert running_server(served.db_path) is not None  # the first one's record stays


def test_a_busy_port_is_refused_in_one_line(db_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--db", str(db_path), "--port", str(port))
    assert result.returncode == 78
    assert result.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{port}")
    assert result.stderr.count("\n") == 1
    assert not db_path.exists()  # nothing was opened


def test_listening_beyond_loopback_needs_a_token(db_path: Path) -> None:
    result = run_cli("serve", "--db", str(db_path), "--host", "0.0.0.0")
    assert result.returncode == 1
    assert result.stderr == (
        "Error: listening on 0.0.0.0 needs a token: pass --token or set PROFILE_ENGINE_TOKEN "
        "(loopback addresses need none)\n"
    )


def test_serve_has_help() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for option in ("--host", "--port", "--token", "--group-id", "PROFILE_ENGINE_TOKEN"):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("parameter", "constant"),
    [("batch_size", "SERVE_BATCH_SIZE"), ("max_restarts", "DEFAULT_MAX_RESTARTS")],
)
def test_the_serve_defaults_are_the_servers(parameter: str, constant: str) -> None:
    # The CLI imports the server lazily (startup time), so it restates the defaults.
    from profile_engine.cli.serve_cmd import serve
    from profile_engine.server import fold_adapter

    (option,) = [p for p in serve.params if p.name == parameter]
    assert option.default == getattr(fold_adapter, constant)
