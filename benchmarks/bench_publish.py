"""Throughput of `profile-engine publish` on a generated JSON Lines stream (default 1M events).

The stream comes from profile_engine.synthetic (identify, track incl. purchases, consent,
bounce, subscription, ccpa, and a sprinkling of invalid events, so the rejects path is part of
the measurement). It is written to a temporary file first; only the publish is timed. The
publish path is the real one: block reading, pydantic validation with identifier normalisation
and the attribute registry, Avro single-object encoding and record batches built in worker
processes, and the idempotent producer (acks=all) to a fresh 6-partition topic on
PROFILE_ENGINE_BOOTSTRAP_SERVERS (default 127.0.0.1:9092), waiting for every confirmation.

cpu_us_per_event is the CPU of this process and its workers per input line: on a shared
machine it moves less than the wall-clock rate.

Usage: python benchmarks/bench_publish.py [--events N] [--workers W] [--seed S] [--file F]
Prints one JSON object: events, published, rejected, seconds, events_per_s, peak_rss_mb, ...
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

from consumers.batch_producer import BatchProducer
from consumers.publish import publish_lines
from consumers.topics import create_topics
from profile_engine.cli.log_cmd import load_trait_validator

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def write_stream(path: Path, count: int, seed: int) -> None:
    from profile_engine.synthetic import generate_events

    with path.open("w", encoding="utf-8") as out:
        for raw in generate_events(count, seed):
            out.write(json.dumps(raw, separators=(",", ":")))
            out.write("\n")


def _rss_mb(who: int) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(path: Path, bootstrap: str, workers: int) -> dict[str, Any]:
    topic = f"bench-publish-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, topic, f"{topic}-dead-letters", partitions=6)
    cpu_started = _cpu_seconds()
    with path.open("rb") as lines, BatchProducer(bootstrap, topic) as producer:
        result = publish_lines(
            lines,
            producer,
            validator_factory=partial(load_trait_validator, None),
            workers=workers,
        )
    cpu = _cpu_seconds() - cpu_started  # workers count once the pool has exited
    handled = result.published + result.rejected
    return {
        "topic": topic,
        "published": result.published,
        "rejected": result.rejected,
        "unconfirmed": len(result.delivery.unconfirmed),
        "seconds": round(result.seconds, 2),
        "events_per_s": round(handled / result.seconds),
        "published_per_s": round(result.events_per_s),
        "cpu_us_per_event": round(cpu / handled * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--workers", type=int, default=min(4, os.cpu_count() or 1),
        help="validation processes (0 = validate in the sending process)",
    )  # fmt: skip
    parser.add_argument("--file", type=Path, help="publish this JSONL file instead")
    args = parser.parse_args()
    bootstrap = os.environ.get("PROFILE_ENGINE_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP)

    with tempfile.TemporaryDirectory() as scratch:
        path = args.file or Path(scratch) / "events.jsonl"
        started = time.perf_counter()
        if args.file is None:
            write_stream(path, args.events, args.seed)
        generate_seconds = time.perf_counter() - started
        lines = sum(1 for _ in path.open("rb"))
        figures = run(path, bootstrap, args.workers)
    report = {
        "events": lines,
        **figures,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "generate_seconds": round(generate_seconds, 2),
        "peak_rss_mb": _rss_mb(resource.RUSAGE_SELF),
        "peak_worker_rss_mb": _rss_mb(resource.RUSAGE_CHILDREN),
    }
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
