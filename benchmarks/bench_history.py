"""Profiles over time: what keeping history costs, and how fast the past is asked.

1. `profile-engine generate -n N --seed 3 --days 365` writes the JSON Lines file;
2. the file is rebuilt several times, alternating with and without the history hook (A/B
   interleaved in the same run, each in a fresh child process, so the machine's noise falls
   on both): wall and CPU seconds of each, the fold-rate cost of history (median ratio), and
   the database size with and without the history tables;
3. on the projection with history, through the read path the CLI uses (read-only,
   sandboxed): `counts --as-of` p50/p99 over days spread across the year (the first, cold,
   apart), and `counts --daily` for the whole year (p50 of several runs).

Targets (issue 13, at 10M events): as-of p50 <= 500 ms, daily year <= 3 s, history <= 15%
slower. Figures are printed as JSON; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

# The fold in a child process; "off" replaces the history hook with nothing.
CHILD = """
import json, resource, sys, time
import projections.batch_writer as writer
if sys.argv[3] == "off":
    writer.write_history = lambda *args: None
from consumers.rebuild import rebuild_from_file
started = time.monotonic()
stats = rebuild_from_file(sys.argv[1], sys.argv[2])
usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
cpu = sum(u.ru_utime + u.ru_stime for u in usage)
print(json.dumps({"seconds": time.monotonic() - started, "cpu_seconds": cpu,
                  "folded": stats.folded}))
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def generate(events: int, days: int, path: Path) -> None:
    script = Path(sys.executable).with_name("profile-engine")
    command = [str(script), "generate", "-n", str(events), "--seed", "3", "--days", str(days)]
    subprocess.run([*command, "--out", str(path)], check=True, capture_output=True)


def rebuild(events_file: Path, db_path: Path, history: bool) -> dict[str, Any]:
    for stale in (db_path, Path(f"{db_path}.wal")):
        stale.unlink(missing_ok=True)
    mode = "on" if history else "off"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(db_path), str(events_file), mode],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"rebuild ({mode}) failed: {done.stderr.strip().splitlines()[-1:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["db_mb"] = round(sum(p.stat().st_size for p in (db_path, Path(f"{db_path}.wal"))
                                if p.exists()) / 1e6, 1)  # fmt: skip
    return result


def history_table_mb(db_path: Path) -> dict[str, float]:
    """Estimated size of each history table (DuckDB's block counts per table)."""
    import duckdb

    tables = ("profile_lineage", "identifier_attachments", "identifier_day_states",
              "profile_reachability_history", "activity_days", "event_landings")  # fmt: skip
    with duckdb.connect(str(db_path), read_only=True) as con:
        block = con.execute("SELECT block_size FROM pragma_database_size()").fetchone()
        size = int(block[0]) if block else 262_144
        sizes = {}
        for table in tables:
            row = con.execute(
                "SELECT count(DISTINCT block_id) FROM pragma_storage_info(?)", [table]
            ).fetchone()
            sizes[table] = round((row[0] if row else 0) * size / 1e6, 1)
        rows = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    return {"mb": sizes, "rows": rows}  # type: ignore[dict-item]


def query_figures(db_path: Path, first: date, last: date, runs: int) -> dict[str, Any]:
    from projections import history
    from projections.readonly import open_readonly

    con = open_readonly(str(db_path))
    try:
        span = (last - first).days
        days = [first + timedelta(days=random.Random(n).randint(0, span)) for n in range(runs)]
        timings = []
        for day in days:
            started = time.perf_counter()
            history.counts_as_of(con, day)
            timings.append(time.perf_counter() - started)
        cold, warm = timings[0], sorted(timings[1:])
        daily = []
        for _ in range(5):
            started = time.perf_counter()
            rows = history.daily_rows(con, first, last)
            daily.append(time.perf_counter() - started)
    finally:
        con.close()
    return {
        "as_of_cold_ms": round(cold * 1e3, 1),
        "as_of_p50_ms": round(statistics.median(warm) * 1e3, 1),
        "as_of_p99_ms": round(warm[min(len(warm) - 1, int(len(warm) * 0.99))] * 1e3, 1),
        "daily_days": len(rows),
        "daily_p50_s": round(statistics.median(daily), 3),
        "daily_max_s": round(max(daily), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rounds", type=int, default=2, help="A/B rebuild pairs")
    parser.add_argument("--queries", type=int, default=50, help="as-of queries")
    parser.add_argument("--work-dir", type=Path, help="scratch directory (default: a temp dir)")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-history-", dir=options.work_dir))
    try:
        events_file = work / "events.jsonl"
        log(f"generating {options.events:,} events over {options.days} days")
        generate(options.events, options.days, events_file)
        runs: dict[str, list[dict[str, Any]]] = {"with": [], "without": []}
        for round_number in range(options.rounds):
            order = [True, False] if round_number % 2 == 0 else [False, True]
            for history in order:
                name = "with" if history else "without"
                log(f"round {round_number + 1}: rebuild {name} history")
                runs[name].append(rebuild(events_file, work / f"{name}.duckdb", history))
        ratios = [w["seconds"] / o["seconds"] for w, o in zip(runs["with"], runs["without"],
                                                             strict=True)]  # fmt: skip
        cpu_ratios = [w["cpu_seconds"] / o["cpu_seconds"] for w, o in
                      zip(runs["with"], runs["without"], strict=True)]  # fmt: skip
        db = work / "with.duckdb"
        first = date(2026, 1, 1)
        last = first + timedelta(days=options.days - 1)
        report = {
            "events": options.events,
            "rebuilds": runs,
            "history_slowdown_wall": round(statistics.median(ratios) - 1, 3),
            "history_slowdown_cpu": round(statistics.median(cpu_ratios) - 1, 3),
            "db_mb_with": runs["with"][-1]["db_mb"],
            "db_mb_without": runs["without"][-1]["db_mb"],
            "history_tables": history_table_mb(db),
            "queries": query_figures(db, first, last, options.queries),
        }
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
