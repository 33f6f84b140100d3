"""`consume` when the broker is gone, and when it is told to stop: what the user sees.

Progress goes to stderr; when stderr is not a terminal (as here) it is a log of lines.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from consumers.broker_process import free_port
from consumers.producer import EventProducer
from profile_engine.events import ProfileEvent
from tests.profile_engine.builders import identify
from tests.support.kafka_logs import (
    create_topic,
    in_transaction,
    private_broker,
    transactional_producer,
)
from tests.support.processes import RunningCli

WAITING = r"^consume: waiting for the broker at {} since \d\d:\d\d:\d\d$"


def people(count: int) -> list[ProfileEvent]:
    return [identify(n, eid=f"p{n}", email=f"p{n}@example.com") for n in range(count)]


def consume_cli(db_path: Path, bootstrap: str, topic: str, *extra: str) -> RunningCli:
    return RunningCli(
        "consume", "--db", str(db_path), "--topic", topic, "--dead-letter-topic", topic,
        "--bootstrap-servers", bootstrap, "--format", "json", *extra,
    )  # fmt: skip


def test_without_a_broker_it_says_it_waits_then_gives_up_with_exit_75(db_path: Path) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    cli = consume_cli(db_path, bootstrap, "events", "--once", "--give-up-after", "4")
    code, _, err = cli.finish(timeout=120)
    assert code == 75  # transient: try again later
    lines = err.splitlines()
    assert len(lines) == 2, err  # the waiting line, then one error line; no traceback
    assert re.match(WAITING.format(re.escape(bootstrap)), lines[0]), lines[0]
    assert lines[1].startswith(f"Error: gave up waiting for Kafka at {bootstrap}: no answer since")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_it_while_it_waits_for_the_broker(db_path: Path, signum: int) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    cli = consume_cli(db_path, bootstrap, "events", "--once")
    try:
        cli.wait_for_line(WAITING.format(re.escape(bootstrap)), timeout=120)
        cli.process.send_signal(signum)
        code, out, err = cli.finish(timeout=60)
    finally:
        cli.kill()
    assert code == 0, err
    assert json.loads(out)["consumed"] == 0


@pytest.mark.kafka
def test_it_folds_once_a_broker_that_was_down_comes_back(tmp_path: Path, db_path: Path) -> None:
    with private_broker(tmp_path / "broker") as broker:
        bootstrap = broker.bootstrap_servers
        topic = create_topic(bootstrap, "events", 3)
        with EventProducer(bootstrap, topic) as producer:
            producer.send_many(people(5))
            producer.flush()
        broker.stop()
        cli = consume_cli(db_path, bootstrap, topic, "--once")
        try:
            cli.wait_for_line(WAITING.format(re.escape(bootstrap)), timeout=120)
            broker.start(timeout=180, stop_with_owner=True)
            cli.wait_for_line("^consume: the broker answers again$", timeout=120)
            code, out, err = cli.finish(timeout=180)
        finally:
            cli.kill()
    assert code == 0, err
    assert json.loads(out)["folded"] == 5


@pytest.mark.kafka
def test_a_follower_of_a_transactional_log_stops_on_sigterm(
    kafka_bootstrap: str, fresh_topic: str, db_path: Path
) -> None:
    # Every partition the transaction touched ends with its commit marker.
    with transactional_producer(kafka_bootstrap) as producer:
        in_transaction(producer, fresh_topic, people(10), commit=True)
    follower = consume_cli(db_path, kafka_bootstrap, fresh_topic)
    try:
        time.sleep(8)  # time to catch up; a follower never ends by itself
        assert follower.process.poll() is None, follower.stderr_lines
        follower.process.send_signal(signal.SIGTERM)
        code, out, err = follower.finish(timeout=60)
    finally:
        follower.kill()
    assert code == 0, err
    first = json.loads(out)
    rest = consume_cli(db_path, kafka_bootstrap, fresh_topic, "--once")
    code, out, err = rest.finish(timeout=120)
    assert code == 0, err
    assert first["folded"] + json.loads(out)["folded"] == 10
