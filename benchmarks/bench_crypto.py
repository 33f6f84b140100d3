"""What sealing costs: publish and fold rates with encryption on and off, in the same run.

A generated stream (`profile-engine generate`, default 100k events) is published to a fresh
topic and folded from it (`rebuild` from Kafka) once in clear and once sealed with a master
key, in alternating order for each round (A/B, B/A, ...) so the machine's drift falls on both
alike; every command runs as a user runs it, in its own process. Per round and mode it reports
publish and fold events/s (and CPU seconds, steadier on a shared machine), the topic's bytes
(keys + values as stored per message, before Kafka's batch compression) and the database size;
then, on the last projections of each mode, profile lookup p50/p99 through the read path, and
the key store's size and load time. A final summary gives sealed/plain ratios of the medians.

Kafka: PROFILE_ENGINE_BOOTSTRAP_SERVERS, else a local broker started for the run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MASTER = os.urandom(32)


def cli(args: list[str], sealed: bool) -> tuple[float, float]:
    """Run one CLI command; (wall seconds, CPU seconds of the child)."""
    env = {k: v for k, v in os.environ.items() if k != "PROFILE_ENGINE_MASTER_KEY"}
    if sealed:
        env["PROFILE_ENGINE_MASTER_KEY"] = base64.b64encode(MASTER).decode()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "profile_engine.cli.main", *args],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {done.stderr.strip()[-500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@contextmanager
def broker(work: Path) -> Iterator[str]:
    external = os.environ.get("PROFILE_ENGINE_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    from consumers.broker import LocalBroker
    from consumers.broker_process import free_port

    local = LocalBroker(data_dir=work / "kafka", port=free_port(), controller_port=free_port())
    local.start(timeout=180, stop_with_owner=True)
    try:
        yield local.bootstrap_servers
    finally:
        local.stop()


def topic_bytes(bootstrap: str, topic: str) -> tuple[int, int]:
    """(messages, bytes of keys and values) of the whole topic."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        count = size = 0
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                for record in records:
                    count += 1
                    size += len(record.key or b"") + len(record.value or b"")
        return count, size
    finally:
        consumer.close()


def db_mb(db: Path) -> float:
    files = [db, Path(f"{db}.wal")]
    return round(sum(p.stat().st_size for p in files if p.exists()) / 1e6, 1)


def one_round(
    bootstrap: str, events_file: Path, work: Path, sealed: bool, events: int
) -> dict[str, Any]:
    topic = f"bench-crypto-{'sealed' if sealed else 'plain'}-{uuid.uuid4().hex[:6]}"
    kafka = ["--bootstrap-servers", bootstrap, "--topic", topic]
    cli(["topics", "create", *kafka, "--dead-letter-topic", f"{topic}-dead"], sealed)
    publish_s, publish_cpu = cli(["publish", str(events_file), *kafka], sealed)
    db = work / f"{topic}.duckdb"
    fold_s, fold_cpu = cli(["rebuild", "--db", str(db), *kafka], sealed)
    messages, size = topic_bytes(bootstrap, topic)
    return {
        "mode": "sealed" if sealed else "plain",
        "topic": topic,
        "db": str(db),
        "publish_eps": round(events / publish_s),
        "publish_cpu_us_per_event": round(publish_cpu / events * 1e6, 1),
        "fold_eps": round(events / fold_s),
        "fold_cpu_us_per_event": round(fold_cpu / events * 1e6, 1),
        "messages": messages,
        "topic_bytes_per_message": round(size / max(messages, 1), 1),
        "db_mb": db_mb(db),
    }


def lookups(db: Path, sealed: bool, runs: int) -> dict[str, Any]:
    from profile_engine.crypto import KeyRing
    from projections import queries
    from projections.readonly import open_readonly

    ring = KeyRing.from_master(MASTER) if sealed else None
    con = open_readonly(str(db))
    try:
        ids = [str(r[0]) for r in con.execute("SELECT profile_id FROM profiles").fetchall()]
        picked = random.Random(7).sample(ids, min(runs, len(ids)))
        timings = []
        for pid in picked:
            started = time.perf_counter()
            queries.profile_view(con, f"profile_id:{pid}", ring)
            timings.append(time.perf_counter() - started)
    finally:
        con.close()
    timings.sort()
    return {
        "lookup_p50_ms": round(statistics.median(timings) * 1e3, 2),
        "lookup_p99_ms": round(timings[min(len(timings) - 1, int(len(timings) * 0.99))] * 1e3, 2),
    }


def key_store_figures(bootstrap: str, topic: str) -> dict[str, Any]:
    """Load time of the whole key topic, then (in a second load, traced) its memory."""
    import tracemalloc

    from consumers.key_store import KeyStore, key_topic_for

    started = time.perf_counter()
    store = KeyStore(bootstrap, key_topic_for(topic)).load()
    load_s = time.perf_counter() - started
    keys = len(store)
    store.close()
    tracemalloc.start()
    store = KeyStore(bootstrap, key_topic_for(topic)).load()
    held = sum(len(ref) + len(value) for ref, value in store._keys.items())
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    store.close()
    return {
        "keys": keys,
        "load_s": round(load_s, 2),
        # Traced memory after the load, the client's own buffers included.
        "traced_bytes_per_key": round(current / max(keys, 1)),
        "payload_bytes_per_key": round(held / max(keys, 1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2, help="A/B pairs")
    parser.add_argument("--lookups", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-crypto-") as scratch:
        work = Path(scratch)
        events_file = work / "events.jsonl"
        subprocess.run(
            [sys.executable, "-m", "profile_engine.cli.main", "generate", "--events",
             str(args.events), "--seed", "3", "--invalid-rate", "0", "--out", str(events_file)],
            check=True, capture_output=True,
        )  # fmt: skip
        results: list[dict[str, Any]] = []
        with broker(work) as bootstrap:
            for round_number in range(args.rounds):
                order = (False, True) if round_number % 2 == 0 else (True, False)
                for sealed in order:
                    result = one_round(bootstrap, events_file, work, sealed, args.events)
                    result["round"] = round_number
                    print(json.dumps(result), file=sys.stderr)
                    results.append(result)
            last = {r["mode"]: r for r in results}
            extra = {
                mode: lookups(Path(r["db"]), mode == "sealed", args.lookups)
                for mode, r in last.items()
            }
            extra["key_store"] = key_store_figures(bootstrap, last["sealed"]["topic"])
    print(
        json.dumps({"events": args.events, "runs": results, **extra, "summary": summary(results)})
    )


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    def median(mode: str, key: str) -> float:
        return float(statistics.median(r[key] for r in results if r["mode"] == mode))

    figures: dict[str, Any] = {}
    for key in ("publish_eps", "fold_eps", "topic_bytes_per_message", "db_mb",
                "publish_cpu_us_per_event", "fold_cpu_us_per_event"):  # fmt: skip
        plain, sealed = median("plain", key), median("sealed", key)
        figures[key] = {
            "plain": plain,
            "sealed": sealed,
            "sealed_over_plain": round(sealed / plain, 3),
        }
    return figures


if __name__ == "__main__":
    main()
