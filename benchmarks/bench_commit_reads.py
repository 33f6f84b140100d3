"""Reads beside a committing fold, in one process as `serve` runs them: with and without
the read transactions primed before each commit (projections/read_transactions.py).

A generated stream (`generate -n N --seed 3 --days 365`, default 1M events) is cut in two:
all but its last ``--tail`` events are rebuilt into a projection with its lookup indexes,
then each run folds the tail into a fresh copy of it through a `LiveProjection`, as serve
folds (consume's pipeline, batches of 25k by default, on a niced thread, the switch interval
serve sets), while ``--readers`` threads each look up a random identifier of the tail about 5
times a second through `LiveProjection.reading()`, as the server's requests do. Runs
alternate between the two ways (``--rounds`` of each, default 2):

- primed (today): reads arriving during a COMMIT take a transaction begun before it, and
  reads end their transactions on the closing thread;
- unprimed (before): every read begins its own transaction and ends it itself.

Reported per run: lookups p50/p90/p99/max, how many of the 8 slowest overlapped a COMMIT,
the COMMITs' durations and the fold thread's CPU seconds. No broker; no timed test.

Usage: python benchmarks/bench_commit_reads.py [--events N] [--tail N] [--readers N]
           [--rounds N] [--batch-size N]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

from consumers.pipeline import Pipeline, PipelineOptions
from consumers.sources import FileSource
from profile_engine.server.fold_adapter import yield_to_readers
from profile_engine.server.serve import SWITCH_INTERVAL_S
from projections import live, read_transactions
from projections.live import LiveProjection
from projections.queries import profile_view
from projections.store import ProjectionStore

READS_PER_SECOND = 5.0
PRIMED_READS = read_transactions.PRIMED_READS  # what serve primes; the way before primes none


def cli(*args: str) -> None:
    script = Path(sys.executable).with_name("profile-engine")
    subprocess.run([str(script), *args], check=True, capture_output=True)


def tail_keys(tail: Path, every: int = 37) -> list[str]:
    keys = []
    with tail.open() as lines:
        for line in islice(lines, 0, None, every):
            try:
                identifiers = json.loads(line).get("identifiers") or {}
            except ValueError:
                continue  # the generator writes some broken lines on purpose
            keys += [f"{kind}:{value}" for kind, value in islice(identifiers.items(), 1)]
    return keys


class Unprimed(read_transactions.ReadCloser):
    """The way before: a read ends its own transaction, and no commit primes any."""

    def close_later(self, cursor: Any) -> None:
        cursor.close()


def one_run(
    base: Path, tail: Path, work: Path, keys: list[str], readers: int, primed: bool, batch_size: int
) -> dict[str, Any]:
    shutil.copy(base, work)
    read_transactions.PRIMED_READS = PRIMED_READS if primed else 0
    live.ReadCloser = read_transactions.ReadCloser if primed else Unprimed  # type: ignore[misc]
    projection = LiveProjection(work)
    commits: list[tuple[float, float]] = []
    reads: list[tuple[float, float]] = []
    stop = threading.Event()

    @contextmanager
    def timed_commit() -> Iterator[None]:
        with projection.committing():
            started = time.perf_counter()
            yield
            commits.append((started, time.perf_counter()))

    def read(seed: int) -> None:
        pick = random.Random(seed)
        while not stop.is_set():
            started = time.perf_counter()
            with projection.reading() as con:
                profile_view(con, pick.choice(keys))
            reads.append((started, time.perf_counter()))
            time.sleep(pick.expovariate(READS_PER_SECOND))

    store = ProjectionStore(work, con=projection.connection, around_commit=timed_commit)
    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(readers)]
    for thread in threads:
        thread.start()
    fold_cpu: list[float] = []

    def fold() -> None:
        yield_to_readers()
        commits.clear()  # opening the store committed its metadata
        cpu = time.thread_time()
        pipeline = Pipeline(
            store, store.fold_config(None), PipelineOptions(max_wait_s=None, batch_size=batch_size)
        )
        pipeline.run(FileSource(tail, store.time_policy(None)))
        fold_cpu.append(time.thread_time() - cpu)

    folding = threading.Thread(target=fold)
    folding.start()
    folding.join()
    stop.set()
    for thread in threads:
        thread.join()
    projection.close()
    return summary(primed, reads, commits, fold_cpu[0])


def summary(
    primed: bool,
    reads: list[tuple[float, float]],
    commits: list[tuple[float, float]],
    fold_cpu: float,
) -> dict[str, Any]:
    took = sorted((end - start) * 1000 for start, end in reads)
    last = len(took) - 1

    def overlaps(start: float, end: float) -> bool:
        return any(start < c_end and c_start < end for c_start, c_end in commits)

    slowest = sorted(reads, key=lambda r: r[0] - r[1])[:8]
    return {
        "way": "primed" if primed else "unprimed",
        "reads": len(took),
        "p50_ms": round(took[last // 2], 1),
        "p90_ms": round(took[round(0.9 * last)], 1),
        "p99_ms": round(took[round(0.99 * last)], 1),
        "max_ms": round(took[-1], 1),
        "slowest_8_overlapping_a_commit": sum(overlaps(*r) for r in slowest),
        "commits_ms": [round((end - start) * 1000) for start, end in commits],
        "fold_thread_cpu_s": round(fold_cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tail", type=int, default=100_000, help="events folded while reading")
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=25_000, help="serve's batches")
    options = parser.parse_args()
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # as serve sets it
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stream, head, tail = work / "all.jsonl", work / "head.jsonl", work / "tail.jsonl"
        cli(
            "generate",
            "-n",
            str(options.events),
            "--seed",
            "3",
            "--days",
            "365",
            "--out",
            str(stream),
        )
        lines = stream.read_text().splitlines(keepends=True)
        head.write_text("".join(lines[: -options.tail]))
        tail.write_text("".join(lines[-options.tail :]))
        del lines
        base = work / "base.duckdb"
        cli("rebuild", "--db", str(base), "--from-file", str(head))
        keys = tail_keys(tail)
        runs = []
        for number in range(2 * options.rounds):
            primed = number % 2 == 1 if (number // 2) % 2 == 0 else number % 2 == 0
            copy = work / f"run{number}.duckdb"
            runs.append(
                one_run(base, tail, copy, keys, options.readers, primed, options.batch_size)
            )
            for stale in work.glob(f"run{number}.duckdb*"):
                stale.unlink()
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    figures = {"events": options.events, "tail": options.tail, "readers": options.readers,
               "batch_size": options.batch_size, "runs": runs}  # fmt: skip
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
