"""The fold at customer scale: rebuild from a generated file, then query the result.

For each size N (``--events 500000,2000000,10000000``):

1. `profile-engine generate -n N --seed 3 --days 365` writes the JSON Lines file (timed on
   its own: not part of the rebuild);
2. `profile-engine rebuild --from-file` folds it into a fresh database in a child process,
   while this script sums the RSS of that process and all its descendants every
   ``--sample-interval`` seconds and keeps the peak (a sum of RSS counts pages the processes
   share once per process, so it errs high; the kernel's high-water mark of the largest
   process, read as it samples, is reported beside it, and so is the CPU time the rebuild
   used, which varies far less than its wall time when other work shares the machine);
3. on the result, the read path as the CLI runs it (read-only, sandboxed): `counts` p50/p99
   over ``--counts-runs`` runs (the first, cold, reported apart) and profile lookup p50/p99
   over ``--lookups`` random identifiers, a tenth of them merged-away profile ids (the
   target's figure), then over as many others in the same process (``profile_lookup_again``:
   with the index nodes and blocks the first pass loaded, nearer to a resident server);
4. following the log on the result: ``--follow`` more generated events (another seed, so
   mostly new people) folded into the indexed projection as `consume` folds them (the same
   pipeline and store, from a file instead of Kafka), in a child process sampled like the
   rebuild: `consume` keeps the lookup indexes up, which a rebuild does not, and they must fit
   in DuckDB's memory as the projection grows (0 skips it).

Prints one JSON object per size as it is measured, then {"summary": ...} with the peak RSS
growth between sizes and each target of the issue: met (true/false), or null when the size
it is set for was not run. Files live in a temporary directory (under ``--work-dir`` if
given) that is removed at the end; each size's files are removed once it is measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psutil
from bench_history import query_figures  # type: ignore[import-not-found]
from read_path import measure_read_path

MB = 1024 * 1024
GENERATE_START = "2026-01-01"  # the generated window's first day (UTC)


@dataclass(frozen=True)
class Target:
    name: str
    events: int  # the size the target is set for
    figure: tuple[str, ...]  # the path of the figure in that size's result
    limit: float


# The targets on the 2-core machine.
TARGETS = (
    Target("peak RSS at 10M events <= 2048 MB", 10_000_000, ("peak_tree_rss_mb",), 2048),
    Target("rebuild of 2M events <= 50 s", 2_000_000, ("rebuild_seconds",), 50),
    Target("counts p50 at 10M events <= 100 ms", 10_000_000, ("counts", "p50_ms"), 100),
    Target("lookup p99 at 10M events <= 5 ms", 10_000_000, ("profile_lookup", "p99_ms"), 5),
    # Issue 13 (profiles over time), on the same projection: its history covers --days.
    Target("counts --as-of p50 at 10M events <= 500 ms", 10_000_000,
           ("history", "as_of_p50_ms"), 500),
    Target("counts --daily for the year at 10M events <= 3 s", 10_000_000,
           ("history", "daily_p50_s"), 3),
)  # fmt: skip
# Memory must not grow with the number of profiles: the peak at 2M events at most 20% above
# the peak at 500k.
RATIO_TARGET = "peak RSS at 2M <= 1.2 x peak RSS at 500k"
RATIO_EVENTS, RATIO_BASE_EVENTS, RATIO_LIMIT = 2_000_000, 500_000, 1.2


@dataclass
class TreeRun:
    exit_code: int
    seconds: float
    peak_tree_rss_mb: float
    peak_process_rss_mb: float
    cpu_seconds: float
    samples: int


def cli_command() -> list[str]:
    """The `profile-engine` of this interpreter's environment."""
    script = Path(sys.executable).with_name("profile-engine")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from profile_engine.cli.main import main; main()"]


def cli_env() -> dict[str, str]:
    """This environment without PROFILE_ENGINE_* settings (a registry, a database), so the
    run depends on its arguments only."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PROFILE_ENGINE_")}


def tree_rss_bytes(root: psutil.Process, high_water: dict[int, int] | None = None) -> int:
    """RSS of ``root`` and every live descendant (processes that end meanwhile count 0);
    ``high_water`` gets each one's high-water mark so far, by pid."""
    total = 0
    try:
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if high_water is not None:
            high_water[member.pid] = max(high_water.get(member.pid, 0), _high_water(member))
    return total


def _high_water(process: psutil.Process) -> int:
    """The kernel's high-water mark of the process's RSS since it started its program (Linux's
    VmHWM), or its RSS now where there is none. Not wait4's ru_maxrss: Linux carries a forked
    child's high-water mark, the parent's memory at the fork, across exec, so a rebuild forked
    after a large size's queries reported this script's memory, not its own."""
    try:
        with open(f"/proc/{process.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return int(process.memory_info().rss)
    except (OSError, psutil.Error):
        return 0


def run_sampled(
    command: list[str], cwd: Path, stdout: Path, stderr: Path, interval: float
) -> TreeRun:
    """Run ``command`` to its end, sampling its process tree's RSS every ``interval`` s."""
    started = time.perf_counter()
    with stdout.open("wb") as out, stderr.open("wb") as err:
        child = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=err, env=cli_env())
        root = psutil.Process(child.pid)
        peak = samples = 0
        high_water: dict[int, int] = {}
        try:
            while True:
                peak = max(peak, tree_rss_bytes(root, high_water))
                samples += 1
                pid, status, usage = os.wait4(child.pid, os.WNOHANG)
                if pid:
                    break
                time.sleep(interval)
        except BaseException:  # interrupted: leave no rebuild running behind
            child.kill()
            child.wait()
            raise
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    return TreeRun(
        exit_code=child.returncode,
        seconds=seconds,
        peak_tree_rss_mb=round(peak / MB, 1),
        peak_process_rss_mb=round(max(high_water.values(), default=0) / MB, 1),
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        samples=samples,
    )


def run_cli(args: list[str], cwd: Path) -> float:
    """Run a CLI command to completion; its seconds. Fails loudly with its stderr."""
    started = time.perf_counter()
    command = [*cli_command(), *args]
    done = subprocess.run(command, cwd=cwd, env=cli_env(), capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"profile-engine {args[0]} failed: {done.stderr.decode().strip()}")
    return time.perf_counter() - started


def follow(db_path: Path, work: Path, options: argparse.Namespace) -> dict[str, Any]:
    """Fold ``options.follow`` new events into the indexed projection as `consume` does."""
    more = work / "more.jsonl"
    generate_args = ["generate", "-n", str(options.follow), "--seed", str(options.seed + 1)]
    generate_args += ["--days", str(options.days), "--start", f"{GENERATE_START}T00:00:00Z"]
    run_cli([*generate_args, "--out", str(more)], work)
    summary_file, errors_file = work / "follow.json", work / "follow.err"
    command = [sys.executable, __file__, "--fold-into", str(db_path), str(more)]
    run = run_sampled(command, work, summary_file, errors_file, options.interval)
    if run.exit_code != 0:
        error_text = errors_file.read_text(errors="replace").strip()
        raise SystemExit(f"following {options.follow:,} events failed: {error_text}")
    stats = json.loads(summary_file.read_text())
    return {
        "events": stats["consumed"],
        "seconds": round(run.seconds, 2),
        "events_per_s": round(stats["consumed"] / run.seconds),
        "peak_process_rss_mb": run.peak_process_rss_mb,
        "peak_tree_rss_mb": run.peak_tree_rss_mb,
    }


def fold_into(db_path: str, events_file: str) -> None:
    """The child of ``follow``: the consume pipeline from a file; prints its FoldStats."""
    from consumers.pipeline import Pipeline, PipelineOptions
    from consumers.sources import FileSource
    from projections.store import ProjectionStore

    with ProjectionStore(db_path) as store:
        options = PipelineOptions(max_wait_s=None)
        pipeline = Pipeline(store, store.fold_config(None), options)
        stats = pipeline.run(FileSource(Path(events_file), store.time_policy(None)))
    print(json.dumps(stats.as_dict()))


def file_mb(*paths: Path) -> float:
    return round(sum(p.stat().st_size for p in paths if p.exists()) / MB, 1)


def measure_size(events: int, root: Path, options: argparse.Namespace) -> dict[str, Any]:
    """Generate, rebuild and query one size; its files are removed afterwards."""
    work = root / f"events-{events}"
    work.mkdir()
    events_file = work / "events.jsonl"
    db_path = work / "profiles.duckdb"
    try:
        log(f"{events:,} events: generating")
        generate_args = ["generate", "-n", str(events), "--seed", str(options.seed)]
        generate_args += ["--days", str(options.days), "--start", f"{GENERATE_START}T00:00:00Z"]
        generate_args += ["--out", str(events_file)]
        generate_seconds = run_cli(generate_args, work)
        events_file_mb = file_mb(events_file)
        log(f"{events:,} events: rebuilding")
        rebuild_args = ["rebuild", "--db", str(db_path), "--from-file", str(events_file)]
        rebuild_args += ["--format", "json"]
        if options.batch_size:
            rebuild_args += ["--batch-size", str(options.batch_size)]
        summary_file, errors_file = work / "rebuild.json", work / "rebuild.err"
        run = run_sampled(
            [*cli_command(), *rebuild_args], work, summary_file, errors_file, options.interval
        )
        if run.exit_code != 0:
            error_text = errors_file.read_text(errors="replace").strip()
            raise SystemExit(f"rebuild of {events:,} events failed: {error_text}")
        fold = json.loads(summary_file.read_text())
        db_mb = file_mb(db_path, db_path.with_name(db_path.name + ".wal"))
        log(f"{events:,} events: querying")
        reads = measure_read_path(
            db_path, options.lookups, options.counts_runs, options.seed, again=True
        )
        if options.history_runs:
            log(f"{events:,} events: asking the past")
            first = date.fromisoformat(GENERATE_START)
            last = first + timedelta(days=max(0, math.ceil(options.days) - 1))
            reads["history"] = query_figures(db_path, first, last, options.history_runs)
        if options.follow:
            log(f"{events:,} events: following {options.follow:,} more")
            reads["follow"] = follow(db_path, work, options)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "events": events,
        "events_file_mb": events_file_mb,
        "generate_seconds": round(generate_seconds, 2),
        "rebuild_seconds": round(run.seconds, 2),
        "events_per_s": round(events / run.seconds),
        "fold_seconds": fold["seconds"],
        "rebuild_cpu_seconds": round(run.cpu_seconds, 2),
        "rebuild_cpu_us_per_event": round(run.cpu_seconds * 1e6 / events, 1),
        "consumed": fold["consumed"],
        "folded": fold["folded"],
        "duplicates": fold["duplicates"],
        "dead_lettered": fold["dead_lettered"],
        "peak_tree_rss_mb": run.peak_tree_rss_mb,
        "peak_process_rss_mb": run.peak_process_rss_mb,
        "rss_samples": run.samples,
        "db_mb": db_mb,
        **reads,
    }


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    by_size = {r["events"]: r for r in results}
    smallest = min(results, key=lambda r: r["events"])
    growth = {
        f"{r['events']}/{smallest['events']}": _ratio(
            r["peak_tree_rss_mb"], smallest["peak_tree_rss_mb"]
        )
        for r in results
        if r is not smallest
    }
    targets = [
        _verdict(target.name, _figure(by_size.get(target.events), target.figure), target.limit)
        for target in TARGETS
    ]
    peak, base = by_size.get(RATIO_EVENTS), by_size.get(RATIO_BASE_EVENTS)
    ratio = None
    if peak is not None and base is not None:
        ratio = _ratio(peak["peak_tree_rss_mb"], base["peak_tree_rss_mb"])
    targets.append(_verdict(RATIO_TARGET, ratio, RATIO_LIMIT))
    return {"sizes": sorted(by_size), "peak_rss_growth": growth, "targets": targets}


def _figure(result: dict[str, Any] | None, path: tuple[str, ...]) -> float | None:
    if result is None:
        return None
    value: Any = result
    for key in path:
        value = value[key]
    return float(value)


def _verdict(name: str, value: float | None, limit: float) -> dict[str, Any]:
    """A target's figure and whether it is met (None: its size was not run)."""
    met = None if value is None else value <= limit
    return {"target": name, "value": value, "limit": limit, "met": met}


def _ratio(value: float, base: float) -> float | None:
    return round(value / base, 3) if base > 0 else None


@contextmanager
def scratch_dir(parent: Path | None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of counts: {text!r}"
        ) from None
    if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(
            f"sizes must be distinct positive counts: {text!r}"
        ) from None
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events",
        type=parse_sizes,
        default=[500_000, 2_000_000, 10_000_000],
        help="comma-separated sizes (default: 500000,2000000,10000000)",
    )
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--days", type=float, default=365)
    parser.add_argument("--batch-size", type=int, help="passed to rebuild (default: its own)")
    parser.add_argument("--lookups", type=int, default=1_000)
    parser.add_argument("--counts-runs", type=int, default=50)
    parser.add_argument(
        "--sample-interval", dest="interval", type=float, default=0.1, help="seconds"
    )
    parser.add_argument("--work-dir", type=Path, help="where the temporary files go")
    parser.add_argument(
        "--history-runs",
        type=int,
        default=20,
        help="counts --as-of runs over the generated window, and --daily for all of it (0: skip)",
    )
    parser.add_argument(
        "--follow",
        type=int,
        default=100_000,
        help="new events folded into each rebuilt projection as consume folds them (0: skip)",
    )
    parser.add_argument("--fold-into", nargs=2, metavar=("DB", "FILE"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.fold_into:
        fold_into(*options.fold_into)
        return
    results = []
    with scratch_dir(options.work_dir) as root:
        for events in options.events:
            result = measure_size(events, root, options)
            print(json.dumps(result), flush=True)
            results.append(result)
    print(json.dumps({"summary": summarise(results)}), flush=True)


if __name__ == "__main__":
    main()
