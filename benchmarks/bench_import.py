"""Throughput of `profile-engine import` on a generated CSV (default 1M rows).

The CSV has an email id column and seven typed attributes (string, long with a range,
boolean, double, date, datetime, epoch); about 0.1% of rows are deliberately invalid so the
rejects path is part of the measurement. The import path is the real one: file scan and
header check, per-cell validation, Avro encoding and the idempotent producer (acks=all) to a
fresh topic on PROFILE_ENGINE_BOOTSTRAP_SERVERS (default 127.0.0.1:9092).

A second figure, validate_only_rows_per_s, runs the same file into a sink that drops events,
to show what the validation costs without Kafka.

Usage: python benchmarks/bench_import.py [--rows N] [--csv FILE] [--keep]
Prints one JSON object: rows, seconds, rows_per_s, accepted, rejected, peak_rss_mb, ...
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consumers.batch_producer import Delivery
from consumers.importer import CsvImport
from consumers.record_batches import BuiltBatch
from profile_engine.attributes import AttributeRegistry
from profile_engine.events import datetime_to_us

HEADER = [
    "email",
    "first_name",
    "birthday_month",
    "vip",
    "ltv",
    "signup_date",
    "last_login",
    "last_seen_epoch",
]
CUSTOM = {
    "vip": "boolean",
    "ltv": "double",
    "signup_date": "date",
    "last_login": "datetime",
    "last_seen_epoch": "epoch",
}
NAMES = ["Ada", "Bob", "Cy", "Dee", "Eve", "Fay", "Gus", "Hal", 'Ivy "Poison"', "Jo, Jr."]
BAD_CELLS = [(3, "yes"), (4, "2,5"), (5, "2022-02-30"), (6, "2022-05-02 10:10:59"), (2, "13")]


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def generate_csv(path: Path, rows: int, seed: int = 7, bad_every: int = 1000) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for number in range(rows):
            row = [
                f"user{number}@example.com",
                rng.choice(NAMES),
                str(rng.randint(1, 12)),
                rng.choice(("true", "false", "TRUE")),
                f"{rng.uniform(0, 5000):.2f}",
                f"20{rng.randint(10, 25)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z",
                str(rng.randint(1_600_000_000, 1_770_000_000)),
            ]
            if number % bad_every == bad_every - 1:
                column, text = BAD_CELLS[(number // bad_every) % len(BAD_CELLS)]
                row[column] = text
            writer.writerow(row)


class _DropSink:
    """Takes the import's record batches and drops them: validation and encoding alone."""

    partitions = 6
    max_batch_bytes = 1_048_588

    def __init__(self) -> None:
        self.delivery = Delivery()

    def send(self, built: BuiltBatch) -> bool:
        self.delivery.confirmed += built.record_count
        return True

    def finish(self) -> Delivery:
        return self.delivery


def _registry(directory: Path) -> AttributeRegistry:
    registry = AttributeRegistry.load(directory / "attributes.json")
    for name, type_name in CUSTOM.items():
        registry.add(name, type_name)
    return registry


def _create_topic(bootstrap: str, topic: str) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-import")
    try:
        admin.create_topics([NewTopic(topic, 6, 1)])
        admin.wait_for_topics([topic], timeout_ms=30_000)
    finally:
        admin.close()


def run(rows: int, csv_path: Path | None, keep: bool, bootstrap: str) -> dict[str, Any]:
    from consumers.batch_producer import BatchProducer

    workdir = Path(tempfile.mkdtemp(prefix="bench-import-"))
    path = csv_path or workdir / "customers.csv"
    started = time.perf_counter()
    if not path.exists():
        generate_csv(path, rows)
    generate_seconds = time.perf_counter() - started
    registry = _registry(workdir)
    timestamp_us = datetime_to_us(datetime.now(UTC))

    plan = CsvImport.open(path, registry, "email")
    dry = plan.run(_DropSink(), timestamp_us)

    topic = f"bench-import-{uuid.uuid4().hex[:8]}"
    _create_topic(bootstrap, topic)
    started = time.perf_counter()
    plan = CsvImport.open(path, registry, "email")
    with BatchProducer(bootstrap, topic) as producer:
        counts = plan.run(producer, timestamp_us)
    seconds = time.perf_counter() - started  # includes the scan pass, flush and close
    total = counts.accepted + counts.rejected
    result = {
        "rows": total,
        "seconds": round(seconds, 2),
        "rows_per_s": round(total / seconds),
        "accepted": counts.accepted,
        "confirmed": counts.delivery.confirmed,
        "rejected": counts.rejected,
        "peak_rss_mb": _peak_rss_mb(),
        "validate_only_rows_per_s": round(dry.rows_per_s),
        "csv_mb": round(path.stat().st_size / 1e6, 1),
        "generate_seconds": round(generate_seconds, 2),
        "topic": topic,
    }
    if not keep:
        for leftover in (path, plan.rejects_path):
            if leftover.parent == workdir:
                leftover.unlink(missing_ok=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--csv", type=Path, default=None, help="reuse (or keep) this CSV")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    bootstrap = os.environ.get("PROFILE_ENGINE_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    print(json.dumps(run(args.rows, args.csv, args.keep, bootstrap)))


if __name__ == "__main__":
    main()
