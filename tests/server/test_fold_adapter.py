"""The fold behind `serve`: the same effect as `consume`, and what it does without a broker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from consumers.broker_process import free_port
from profile_engine.server.fold_adapter import FOLD_NICENESS, STABLE_AFTER_S, RestartPolicy
from profile_engine.server.pages import restarts_text
from profile_engine.synthetic import generate_events
from projections.live import SERVE_INDEX_ENV
from projections.store import INDEX_ROOM
from tests.profile_engine.builders import identify, track
from tests.snapshots import dump
from tests.support.folding import fold_into_db
from tests.support.serving import publish_generated, serving

pytestmark = pytest.mark.kafka


def consume_once(bootstrap: str, topic: str, dead_letters: str, db: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "profile_engine.cli.main", "consume", "--once", "--db", str(db),
         "--bootstrap-servers", bootstrap, "--topic", topic, "--dead-letter-topic", dead_letters],
        capture_output=True, text=True, timeout=300, cwd=db.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_serve_folds_exactly_what_consume_folds_across_a_restart(
    kafka_bootstrap: str, fresh_topic: str, fresh_dead_letter_topic: str, tmp_path: Path
) -> None:
    """Both fold the first part, stop, then fold the rest (a log folded in two goes may
    differ from one go when late events arrive between them; here both see the same goes)."""
    rows = list(generate_events(2_000, seed=5))  # duplicates, contract breakers, junk lines
    served_db, consumed_db = tmp_path / "served.duckdb", tmp_path / "consumed.duckdb"
    topics = (kafka_bootstrap, fresh_topic, fresh_dead_letter_topic)
    first = publish_generated(kafka_bootstrap, fresh_topic, rows[:900])
    with serving(served_db, *topics) as server:
        server.wait_folded(first)
    consume_once(*topics, consumed_db)
    total = first + publish_generated(kafka_bootstrap, fresh_topic, rows[900:])
    with serving(served_db, *topics) as server:
        status = server.wait_folded(total)
        counters = status["since_start"]
        assert counters["consumed"] == total - first  # resumed at the stored offsets
        assert counters["dead_lettered"] > 0 and counters["duplicates"] > 0
    consume_once(*topics, consumed_db)
    assert dump(served_db) == dump(consumed_db)


def test_serve_reopens_its_projection_as_the_indexes_outgrow_their_room_and_folds_on(
    kafka_bootstrap: str,
    fresh_topic: str,
    fresh_dead_letter_topic: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no room to spare, every batch that grows the indexes makes the server reopen the
    projection with a larger limit: the fold goes on from its offsets and loses nothing."""
    monkeypatch.setenv(SERVE_INDEX_ENV, "0MB")
    rows = list(generate_events(1_500, seed=6))
    served_db, consumed_db = tmp_path / "served.duckdb", tmp_path / "consumed.duckdb"
    topics = (kafka_bootstrap, fresh_topic, fresh_dead_letter_topic)
    total = 0
    for part in (rows[:500], rows[500:]):
        total += publish_generated(kafka_bootstrap, fresh_topic, part)
        with serving(served_db, *topics) as server:
            server.wait_folded(total)
            # the reopen follows the commit that outgrew the room; then the fold goes on
            status = server.wait_until(
                lambda s: s["memory"]["reopens"] >= 1 and s["state"] == "following"
            )
            memory = status["memory"]
            assert memory["index_reserve_bytes"] > 0
            assert memory["index_room_bytes"] >= memory["index_reserve_bytes"] * INDEX_ROOM
            metrics = server.get("/metrics").text
            assert f"profile_engine_projection_reopens_total {memory['reopens']}.0" in metrics
            assert server.get("/api/counts").json()["total"] > 0
        consume_once(*topics, consumed_db)
    assert dump(served_db) == dump(consumed_db)


def fold_processes_of(server_pid: int) -> list[int]:
    """The server's children started by multiprocessing's spawn (by the fold thread, so
    listed under that thread's task)."""
    tasks = Path(f"/proc/{server_pid}/task").iterdir()
    children = [pid for task in tasks for pid in (task / "children").read_text().split()]
    spawned = []
    for pid in children:
        with contextlib.suppress(FileNotFoundError):  # a child that just ended
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                spawned.append(int(pid))
    return spawned


def fold_process_of(server_pid: int) -> int:
    """The server's one fold process."""
    spawned = fold_processes_of(server_pid)
    assert len(spawned) == 1, spawned
    return spawned[0]


def new_fold_process(server_pid: int, old: int, timeout_s: float = 60.0) -> int:
    """The fold process started after ``old``, once it runs."""
    deadline = time.monotonic() + timeout_s
    while fold_processes_of(server_pid) in ([], [old]):
        assert time.monotonic() < deadline, "no new fold process"
        time.sleep(0.05)
    return fold_process_of(server_pid)


def niceness(stat: Path) -> int:
    """The nice value in a /proc .../stat file (field 19)."""
    return int(stat.read_text().rsplit(")", 1)[1].split()[16])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_a_killed_fold_process_is_started_again_and_loses_nothing(
    kafka_bootstrap: str, fresh_topic: str, fresh_dead_letter_topic: str, tmp_path: Path
) -> None:
    """The fold runs in a process of its own, below the server's priority. Killed at any point
    (here: while it folds), its open transaction is rolled back, the server goes on
    answering from the last committed batch, and a new fold process folds on from the
    committed offsets to exactly what consume folds."""
    rows = list(generate_events(3_000, seed=8))
    served_db, consumed_db = tmp_path / "served.duckdb", tmp_path / "consumed.duckdb"
    topics = (kafka_bootstrap, fresh_topic, fresh_dead_letter_topic)
    total = publish_generated(kafka_bootstrap, fresh_topic, rows)
    with serving(served_db, *topics, extra=["--batch-size", "200"]) as server:
        server.wait_until(lambda s: s["since_start"]["consumed"] > 0)
        fold = fold_process_of(server.pid)
        own = niceness(Path(f"/proc/{server.pid}/stat"))
        assert niceness(Path(f"/proc/{fold}/stat")) == own + FOLD_NICENESS
        os.kill(fold, signal.SIGKILL)
        status = server.wait_until(lambda s: s["state"] == "waiting", timeout_s=60)
        assert "fold process ended unexpectedly (exit code -9)" in status["error"]
        assert "starting it again in 1 s (1 of 5 in a row)" in status["error"]
        counts = server.get("/api/counts")  # reads go on, from the last committed batch
        assert counts.status_code == 200 and counts.json()["total"] > 0
        assert sum(p["next_offset"] for p in status["partitions"]) < total
        status = server.wait_folded(total)
        assert status["fold_restarts"] == 1 and status["error"] is None
        assert fold_process_of(server.pid) != fold
        assert "profile_engine_fold_restarts_total 1.0" in server.get("/metrics").text
        assert restarts_text(1) in server.get("/").text  # the overview says so too
    consume_once(*topics, consumed_db)
    assert dump(served_db) == dump(consumed_db)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_a_fold_process_that_keeps_dying_is_left_failed(
    kafka_bootstrap: str, fresh_topic: str, fresh_dead_letter_topic: str, tmp_path: Path
) -> None:
    """Deaths with no batch committed between them are a loop (the same batch would kill it
    again): after --fold-restarts of them the fold is left failed, and reads go on."""
    db = tmp_path / "served.duckdb"
    total = publish_generated(kafka_bootstrap, fresh_topic, list(generate_events(300, seed=9)))
    topics = (kafka_bootstrap, fresh_topic, fresh_dead_letter_topic)
    with serving(db, *topics, extra=["--fold-restarts", "1"]) as server:
        server.wait_folded(total)  # from here on nothing commits
        first = fold_process_of(server.pid)
        os.kill(first, signal.SIGKILL)
        server.wait_until(lambda s: s["fold_restarts"] == 1)
        os.kill(new_fold_process(server.pid, first), signal.SIGKILL)
        status = server.wait_until(lambda s: s["state"] == "failed", timeout_s=60)
        assert "2 times in a row, committing no batch" in status["error"]
        assert "not started again" in status["error"] and status["fold_restarts"] == 1
        assert server.get("/api/counts").json()["total"] > 0
        time.sleep(1.5)  # past the first pause: no process is started again
        assert not fold_processes_of(server.pid)


def test_a_broker_lost_while_following_shows_as_waiting(tmp_path: Path) -> None:
    """The fold process's reader waits for it meanwhile: the status must not say
    "following" (as `consume` says it waits)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    from tests.support.kafka import kill_broker, private_broker

    with private_broker(tmp_path / "kafka") as broker:
        bootstrap = broker.bootstrap_servers
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic("events", 1, 1), NewTopic("events-dl", 1, 1)])
        admin.close()
        sent = publish_generated(bootstrap, "events", generate_events(200, seed=5))
        with serving(tmp_path / "live.duckdb", bootstrap, "events", "events-dl") as server:
            server.wait_folded(sent)
            assert server.get("/api/status").json()["state"] == "following"
            kill_broker(broker)
            status = server.wait_until(lambda s: s["broker"]["reachable"] is False, 90)
            assert status["state"] == "waiting"
            assert status["error"].startswith("waiting for the broker: ")


def test_without_a_broker_it_still_answers_and_says_the_broker_is_down(tmp_path: Path) -> None:
    db = tmp_path / "live.duckdb"
    fold_into_db(
        db,
        [
            identify(0, eid="d-1", email="ann@example.com"),
            track(1, eid="d-2", email="ann@example.com"),
        ],
    )
    nobody = f"127.0.0.1:{free_port()}"
    with serving(db, nobody, "profile-events") as server:
        status = server.wait_until(lambda s: s["broker"]["reachable"] is False, timeout_s=60)
        assert status["state"] in ("starting", "waiting")
        assert "cannot reach Kafka" in status["broker"]["error"]
        assert status["lag"] is None
        counts = server.get("/api/counts", params={"month": "2026-03"}).json()
        assert counts["total"] == 1 and counts["mau"] == 1
        page = httpx.get(server.url + "/", headers={"Accept": "text/html"}, timeout=60)
        assert page.status_code == 200
        assert "Kafka unreachable" in page.text and "cannot reach Kafka" in page.text
        started = time.monotonic()
    print(f"stopped {time.monotonic() - started:.1f} s after SIGTERM while the broker was down")


def thread_niceness(pid: int) -> dict[int, int]:
    """Each thread of a process and its nice value (/proc/PID/task/TID/stat)."""
    return {int(task.name): niceness(task / "stat") for task in Path(f"/proc/{pid}/task").iterdir()}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority: Linux")
def test_the_fold_thread_yields_the_cpu_to_the_answers(tmp_path: Path) -> None:
    db = tmp_path / "live.duckdb"
    fold_into_db(db, [identify(0, eid="n-1", email="ann@example.com")])
    with serving(db, f"127.0.0.1:{free_port()}", "profile-events") as server:
        deadline = time.monotonic() + 30
        threads = thread_niceness(server.pid)
        while len(set(threads.values())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # the fold thread lowers its own priority as it starts
            threads = thread_niceness(server.pid)
        own = threads[server.pid]  # the main thread: uvicorn's event loop, the answers
        assert sorted(set(threads.values())) == [own, own + FOLD_NICENESS]
        assert server.get("/api/counts", params={"month": "2026-03"}).json()["total"] == 1


def test_a_dead_fold_process_waits_longer_each_death_in_a_row_then_is_left_failed() -> None:
    policy = RestartPolicy(limit=9)
    pauses = [policy.pause_after(lived_s=1.0) for _ in range(10)]
    assert pauses == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, None]
    policy.committed()  # a committed batch ends the row
    assert policy.pause_after(lived_s=1.0) == 1.0


def test_a_death_after_a_stable_run_is_the_first_in_a_row() -> None:
    """On a quiet topic no batch commits between deaths: a fold process that ran a while
    before it died was not in a loop, so the count of deaths in a row starts again."""
    policy = RestartPolicy(limit=1)
    assert policy.pause_after(lived_s=1.0) == 1.0
    assert policy.pause_after(lived_s=1.0) is None  # the second in a row: left failed
    assert policy.pause_after(lived_s=STABLE_AFTER_S) == 1.0
    assert RestartPolicy(limit=0).pause_after(lived_s=STABLE_AFTER_S) is None


def test_the_overview_says_how_often_the_fold_was_started_again() -> None:
    assert restarts_text(0) == ""  # the note is hidden then
    assert restarts_text(1).endswith("started again once since the server started.")
    assert "started again 1,234 times" in restarts_text(1234)
