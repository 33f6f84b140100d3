"""Run `profile-engine serve` as a user does: a real process on a loopback port, a real broker.

``serving(...)`` starts the CLI in a subprocess with ``--port 0``, waits for the record it
writes beside the database and for the API to answer, and on the way out stops it with
SIGTERM and checks that it stopped cleanly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from consumers.producer import EventProducer
from profile_engine.events import ProfileEvent

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 90.0


@dataclass
class Server:
    url: str
    pid: int
    process: subprocess.Popen[str]
    db_path: Path
    group_id: str
    token: str | None

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_TIMEOUT_S)

    def client(self, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60.0, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        with self.client() as client:
            return client.get(path, **kwargs)

    def status(self) -> dict[str, Any]:
        response = self.get("/api/status")
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def wait_until(
        self, check: Callable[[dict[str, Any]], bool], timeout_s: float = 120.0
    ) -> dict[str, Any]:
        """Poll /api/status until ``check`` holds for it; the last status."""
        deadline = time.monotonic() + timeout_s
        status = self.status()
        while not check(status):
            if time.monotonic() > deadline:
                raise AssertionError(f"status never matched within {timeout_s} s: {status}")
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}")
            if status["state"] == "failed":
                raise AssertionError(f"the fold failed: {status['error']}")
            time.sleep(0.1)
            status = self.status()
        return status

    def wait_folded(self, consumed: int, timeout_s: float = 120.0) -> dict[str, Any]:
        """Until ``consumed`` messages are committed in the projection and it follows the log."""
        return self.wait_until(
            lambda s: (
                sum(p["next_offset"] for p in s["partitions"]) >= consumed
                and s["lag"] == 0
                and s["state"] == "following"
            ),
            timeout_s,
        )


def serve_command(db_path: Path, bootstrap: str, topic: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "profile_engine.cli.main", "serve",
        "--db", str(db_path), "--port", "0", "--bootstrap-servers", bootstrap,
        "--topic", topic, *extra,
    ]  # fmt: skip


@contextmanager
def serving(
    db_path: Path,
    bootstrap: str,
    topic: str,
    dead_letter_topic: str | None = None,
    *,
    token: str | None = None,
    extra: Iterable[str] = (),
    check_clean_stop: bool = True,
) -> Iterator[Server]:
    group_id = f"test-group-{uuid.uuid4().hex[:8]}"
    args = ["--group-id", group_id, *extra]
    if dead_letter_topic:
        args += ["--dead-letter-topic", dead_letter_topic]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PROFILE_ENGINE_TOKEN", None)
    if token:
        env["PROFILE_ENGINE_TOKEN"] = token
    process = subprocess.Popen(
        serve_command(db_path, bootstrap, topic, *args),
        cwd=db_path.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        server = _wait_started(process, db_path, group_id, token)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
            raise AssertionError(f"serve did not stop on SIGTERM: {stderr}") from None
    if check_clean_stop:
        assert process.returncode == 0, stderr
        assert "Traceback" not in _KNOWN_READER_NOISE.sub("", stderr), stderr
        assert not Path(str(db_path) + ".server.json").exists()


# consumers/reader.py's pipe thread trips over the pipe its reader closes on a normal stop
# (the fold has stopped by then; reported to the owner of reader.py). Anything else fails.
_KNOWN_READER_NOISE = re.compile(
    r"Exception in thread kafka-pipe:\nTraceback.*?TypeError: 'NoneType' object cannot be "
    r"interpreted as an integer\n",
    re.DOTALL,
)


@contextmanager
def new_topics(admin: Any, name: str, partitions: int = 6) -> Iterator[tuple[str, str]]:
    """A fresh events topic and dead-letter topic (infinite retention), deleted afterwards."""
    from kafka.admin import NewTopic

    suffix = uuid.uuid4().hex[:8]
    names = (f"test-events-{name}-{suffix}", f"test-dead-letters-{name}-{suffix}")
    configs = {"retention.ms": "-1"}
    admin.create_topics(
        [NewTopic(names[0], partitions, 1, topic_configs=configs),
         NewTopic(names[1], 1, 1, topic_configs=configs)]
    )  # fmt: skip
    admin.wait_for_topics(list(names), timeout_ms=30_000)
    try:
        yield names
    finally:
        admin.delete_topics(list(names), raise_errors=False)


def _wait_started(
    process: subprocess.Popen[str], db_path: Path, group_id: str, token: str | None
) -> Server:
    record = Path(str(db_path) + ".server.json")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"serve exited with {process.returncode}: {stderr}")
        if record.exists():
            info = json.loads(record.read_text())
            if info["pid"] == process.pid:
                server = Server(
                    f"http://{info['host']}:{info['port']}",
                    process.pid,
                    process,
                    db_path,
                    group_id,
                    token,
                )
                server.status()  # answers
                return server
        time.sleep(0.1)
    process.kill()
    raise AssertionError("serve did not start in time")


def publish(bootstrap: str, topic: str, events: Iterable[ProfileEvent]) -> int:
    sent = 0
    with EventProducer(bootstrap, topic) as producer:
        for event in events:
            producer.send(event)
            sent += 1
        producer.flush()
    return sent


def publish_generated(bootstrap: str, topic: str, rows: Iterable[Any]) -> int:
    """Generated rows as they arrive from producers: valid ones as Avro, the rest (contract
    breakers and non-JSON lines) as raw bytes that the fold dead-letters. The count sent."""
    from kafka import KafkaProducer

    from profile_engine.contract import ContractError, parse_event

    raw: list[bytes] = []
    sent = 0
    with EventProducer(bootstrap, topic) as producer:
        for row in rows:
            try:
                producer.send(parse_event(row))
                sent += 1
            except (ContractError, TypeError, ValueError):
                raw.append(row.encode() if isinstance(row, str) else json.dumps(row).encode())
        producer.flush()
    garbage = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for value in raw:
        garbage.send(topic, key=b"generated", value=value)
    garbage.flush()
    garbage.close()
    return sent + len(raw)
