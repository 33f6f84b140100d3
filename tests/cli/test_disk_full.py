"""A full disk during `consume` is a one-line error; the projection stays intact and the
consumer resumes once space is freed (on a small tmpfs: needs the right to mount one)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from consumers.producer import EventProducer
from profile_engine.contract import parse_event
from profile_engine.events import ProfileEvent
from profile_engine.synthetic import generate_events

pytestmark = pytest.mark.kafka

EXIT_NEEDS_OPERATOR = 78


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _events(seed: int) -> list[ProfileEvent]:
    events = []
    for raw in generate_events(20_000, seed=seed):
        try:
            events.append(parse_event(raw))
        except (ValueError, TypeError):
            continue
    return events


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "profile_engine.cli.main", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_a_full_disk_stops_consume_cleanly_and_it_resumes_when_space_is_freed(
    kafka_bootstrap: str, fresh_topic: str, fresh_dead_letter_topic: str, small_disk: Path
) -> None:
    events, more = _events(seed=4), _events(seed=5)
    with EventProducer(kafka_bootstrap, fresh_topic) as producer:
        for event in events:
            producer.send(event)
    db = small_disk / "profiles.duckdb"
    common = ("--db", str(db), "--topic", fresh_topic, "--bootstrap-servers", kafka_bootstrap,
              "--dead-letter-topic", fresh_dead_letter_topic)  # fmt: skip
    first = run_cli("consume", *common, "--once", "--batch-size", "2000")
    assert first.returncode == 0, first.stderr
    # Leave almost no room, then fold more: the next batch cannot be written.
    filler = small_disk / f"filler-{uuid.uuid4().hex}"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler.write_bytes(b"\0" * max(0, free - 64 * 1024))
    with EventProducer(kafka_bootstrap, fresh_topic) as producer:
        for event in more:
            producer.send(event)
    full = run_cli("consume", *common, "--once", "--batch-size", "20000")
    assert full.returncode == EXIT_NEEDS_OPERATOR, full.stderr
    assert "Traceback" not in full.stderr
    assert len(full.stderr.strip().splitlines()) == 1
    assert "space" in full.stderr.lower()

    filler.unlink()
    resumed = run_cli("consume", *common, "--once", "--format", "json")
    assert resumed.returncode == 0, resumed.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        (next_total,) = con.execute("SELECT sum(next_offset) FROM consumer_offsets").fetchone()  # type: ignore[misc]
        (applied,) = con.execute("SELECT count(*) FROM applied_events").fetchone()  # type: ignore[misc]
    assert next_total == len(events) + len(more)  # every message is behind the offsets
    assert applied == len({e.event_id for e in events + more})  # each applied exactly once
