"""How long the fold holds the GIL at a stretch: what the live server's readers wait behind.

`profile-engine serve` answers reads on threads of the process that folds, so a reader waits
whenever the fold thread holds the GIL in C code (which ignores the switch interval):
conversions between Python objects and Arrow, freeing a batch, garbage collections. This
script folds generated events into a copy of a bench_queries.py projection (default 300k
profiles), in batches as serve folds them (25,000), on a thread of its own, while a probe
thread sleeps 1 ms in a loop and records how late it wakes (no broker needed).

Reported: the probe's lateness p50/p99/p99.9/max until the fold's final collection, the
stalls over ``--stall-ms`` counted by where the fold thread was when the probe woke (its
innermost line, which took the GIL back from C code, or stood waiting for the CPU: on a
shared machine lateness is also the scheduler's; a collection shows as Collections.__call__,
which runs when it ends), and every collection the fold thread ran with its duration and
generation. The fold's thread keeps normal priority here; serve's is niced.

Usage: python benchmarks/bench_gil.py [--profiles N] [--events N] [--batch-size N]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench_queries import build_projection  # type: ignore[import-not-found]

from consumers.pipeline import Pipeline, PipelineOptions
from consumers.sources import ListSource
from profile_engine.contract import ContractError, parse_event
from profile_engine.events import ProfileEvent
from profile_engine.server.serve import SWITCH_INTERVAL_S
from profile_engine.synthetic import generate_events
from projections.store import ProjectionStore

SEED = 17
FOLD_THREAD = "fold"


class Probe:
    """A thread that sleeps 1 ms at a time and records how late it wakes, and where the fold
    thread stands when it wakes more than ``stall_ms`` late."""

    def __init__(self, stall_ms: float) -> None:
        self.stall_ms = stall_ms
        self.wakes: list[tuple[float, float]] = []  # (perf_counter at waking, ms late)
        self.stalls: dict[str, list[float]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            asleep = time.perf_counter()
            time.sleep(0.001)
            woke = time.perf_counter()
            late = (woke - asleep) * 1000 - 1.0
            self.wakes.append((woke, late))
            if late > self.stall_ms:
                self.stalls[_fold_line()].append(late)


def _fold_line() -> str:
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        if names.get(ident) == FOLD_THREAD:
            inner = traceback.extract_stack(frame)[-1]
            return f"{Path(inner.filename).name}:{inner.lineno} {(inner.line or '').strip()[:70]}"
    return "(the fold thread not running)"


class Collections:
    """Every garbage collection the fold thread runs: when it began, milliseconds, generation."""

    def __init__(self) -> None:
        self.runs: list[tuple[float, float, int]] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if threading.current_thread().name != FOLD_THREAD:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            took = (time.perf_counter() - self._started) * 1000
            self.runs.append((self._started, took, info["generation"]))


def generated(count: int) -> list[ProfileEvent]:
    """``count`` valid generated events, decoded before the fold starts."""
    events: list[ProfileEvent] = []
    for row in generate_events(count * 2, SEED, invalid_rate=0.0):
        if len(events) == count:
            break
        try:
            events.append(parse_event(row))  # type: ignore[arg-type]
        except (ContractError, TypeError, ValueError):
            continue
    return events


def quantiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "p999_ms": 0.0, "max_ms": 0.0}
    last = len(ordered) - 1
    return {
        "p50_ms": round(ordered[last // 2], 2),
        "p99_ms": round(ordered[round(0.99 * last)], 2),
        "p999_ms": round(ordered[round(0.999 * last)], 2),
        "max_ms": round(ordered[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=300_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=25_000)
    parser.add_argument("--stall-ms", type=float, default=5.0, help="lateness reported by place")
    parser.add_argument("--top", type=int, default=15, help="places reported")
    options = parser.parse_args()
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # as serve sets it
    figures: dict[str, Any] = {
        "profiles": options.profiles, "events": options.events,
        "batch_size": options.batch_size, "switch_interval_s": SWITCH_INTERVAL_S,
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        base, db = Path(tmp) / "base.duckdb", Path(tmp) / "fold.duckdb"
        figures["build_seconds"] = round(build_projection(base, options.profiles, True), 1)
        shutil.copy(base, db)
        events = generated(options.events)
        collections = Collections()
        gc.callbacks.append(collections)
        probe = Probe(options.stall_ms)
        with ProjectionStore(db) as store:
            pipeline = Pipeline(
                store,
                store.fold_config(None),
                PipelineOptions(batch_size=options.batch_size, max_wait_s=None),
            )
            fold = threading.Thread(
                target=pipeline.run, args=(ListSource(events),), name=FOLD_THREAD
            )
            probe.start()
            started = time.perf_counter()
            fold.start()
            fold.join()
            figures["fold_seconds"] = round(time.perf_counter() - started, 1)
            probe.stop()
        gc.callbacks.remove(collections)
    figures["consumed"] = pipeline.stats.consumed
    # Until the full collection the pipeline makes when it ends: not one a reader of a running
    # server meets (it is listed with the others below).
    end = collections.runs[-1][0]
    late = [ms for woke, ms in probe.wakes if woke <= end]
    figures["probe_late"] = quantiles(late) | {"wakes": len(late)}
    figures["stalls_over_ms"] = options.stall_ms
    places = sorted(probe.stalls.items(), key=lambda item: -max(item[1]))[: options.top]
    figures["stalls"] = [
        {"at": place, "count": len(lates), "max_ms": round(max(lates), 1)}
        for place, lates in places
    ]
    # The last is the pipeline's full collection when it ends.
    figures["collections"] = [
        {"ms": round(ms, 1), "generation": generation} for _, ms, generation in collections.runs
    ]
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
