"""The read path of a projection, measured the way the CLI runs it (shared by the scripts).

`counts` and `profile` open the database read-only and sandboxed
(projections.readonly.open_readonly) and call projections.queries; so does this module, in
one resident process: the first `counts` run (cold caches) is reported apart from the rest.
It also records the statements one profile lookup runs and replays them under
EXPLAIN ANALYZE, so a benchmark can show which of them DuckDB answers from an index
(DuckDB picks an index scan when the query runs, so a plain EXPLAIN cannot show it).
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import duckdb

from projections import queries
from projections.readonly import open_readonly

# The share of lookups that name a merged-away profile id (`profile_id:<merged id>`).
MERGED_SHARE = 0.1


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50 and p99 (inclusive quantiles, so p50 <= p99 <= the slowest run) in ms."""
    if len(samples_ms) == 1:
        only = round(samples_ms[0], 3)
        return {"p50_ms": only, "p99_ms": only, "max_ms": only, "runs": 1}
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {
        "p50_ms": round(cuts[49], 3),
        "p99_ms": round(cuts[98], 3),
        "max_ms": round(max(samples_ms), 3),
        "runs": len(samples_ms),
    }


def time_calls(call: Callable[[], object], runs: int) -> list[float]:
    """Milliseconds of each of ``runs`` calls."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def lookup_keys(con: duckdb.DuckDBPyConnection, count: int, seed: int) -> list[str]:
    """``count`` random TYPE:VALUE keys, a tenth of them merged-away profile ids (fewer when
    the projection has fewer merges), in random order."""
    merged_wanted = round(count * MERGED_SHARE)
    merged = con.execute(
        f"SELECT 'profile_id:' || merged_profile_id::VARCHAR FROM profile_merges"
        f" USING SAMPLE reservoir({merged_wanted} ROWS) REPEATABLE ({seed})"
    ).fetchall()
    identifiers = con.execute(
        f"SELECT id_type || ':' || id_value FROM identifiers"
        f" USING SAMPLE reservoir({count - len(merged)} ROWS) REPEATABLE ({seed})"
    ).fetchall()
    keys = [row[0] for row in identifiers + merged]
    random.Random(seed).shuffle(keys)
    return keys


def latest_month(con: duckdb.DuckDBPyConnection) -> str:
    """The UTC month of the newest timeline event (the month a dashboard would ask about)."""
    row = con.execute("SELECT strftime(max(timestamp), '%Y-%m') FROM events").fetchone()
    return str(row[0]) if row and row[0] else "2026-01"


class _RecordingConnection:
    """Passes every call to the connection and keeps the (sql, parameters) it executes."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self.statements: list[tuple[str, list[Any]]] = []

    def execute(self, sql: str, parameters: list[Any] | None = None) -> duckdb.DuckDBPyConnection:
        self.statements.append((sql, list(parameters or [])))
        return self._con.execute(sql, parameters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def _table_scans(node: object) -> Iterator[tuple[str, str]]:
    """(table, scan type) of every table scan in an EXPLAIN (ANALYZE, FORMAT JSON) plan."""
    if isinstance(node, list):
        for item in node:
            yield from _table_scans(item)
    elif isinstance(node, dict):
        extra = node.get("extra_info") or {}
        if node.get("type") == "TABLE_SCAN" and "Table" in extra:
            yield str(extra["Table"]).rsplit(".", 1)[-1], str(extra.get("Type", "?"))
        for value in node.values():
            if isinstance(value, list | dict):
                yield from _table_scans(value)


def lookup_scans(con: duckdb.DuckDBPyConnection, keys: list[str]) -> dict[str, Any]:
    """How the statements of a profile lookup of each key scan their tables.

    ``index`` and ``sequential`` list the tables read each way; ``unindexed_reads`` the
    tables read sequentially although they have an index (empty when every lookup
    statement that can use an index does).
    """
    recorder = _RecordingConnection(con)
    for key in keys:
        queries.profile_view(cast(duckdb.DuckDBPyConnection, recorder), key)
    scans: set[tuple[str, str]] = set()
    for sql, parameters in recorder.statements:
        rows = con.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", parameters).fetchall()
        scans.update(_table_scans(json.loads(rows[0][1])))
    indexed = {
        row[0]
        for row in con.execute(
            "SELECT DISTINCT table_name FROM duckdb_indexes()"
            " WHERE database_name = current_database()"
        ).fetchall()
    }
    index = sorted({table for table, kind in scans if kind == "Index Scan"})
    sequential = sorted({table for table, kind in scans if kind != "Index Scan"})
    return {
        "index": index,
        "sequential": sequential,
        "unindexed_reads": [table for table in sequential if table in indexed],
    }


def measure_read_path(
    db_path: Path,
    lookups: int,
    counts_runs: int,
    seed: int,
    month: str | None = None,
    again: bool = False,
) -> dict[str, Any]:
    """`counts` p50/p99 over ``counts_runs`` runs (the first, cold, reported apart) and
    profile lookup p50/p99 over ``lookups`` random keys, on the sandboxed read path.

    ``again``: then another sample of as many keys in the same process (``profile_lookup_again``):
    the first lookups load the index nodes and row groups they pass through into DuckDB's
    buffers, so the second pass is nearer to what a resident server answers."""
    con = open_readonly(str(db_path))
    try:
        chosen_month = month or latest_month(con)
        keys = lookup_keys(con, lookups, seed)
        later_keys = lookup_keys(con, lookups, seed + 1) if again else []
        counts_ms = time_calls(lambda: queries.counts(con, chosen_month), counts_runs)
        found = 0

        def look_up(key: str) -> None:
            nonlocal found
            found += queries.profile_view(con, key) is not None

        key_iter = iter(keys)
        lookup_ms = time_calls(lambda: look_up(next(key_iter)), len(keys))
        found_first = found
        later_iter = iter(later_keys)
        later_ms = time_calls(lambda: look_up(next(later_iter)), len(later_keys))
        merged_key = next((k for k in keys if k.startswith("profile_id:")), None)
        identifier_key = next((k for k in keys if not k.startswith("profile_id:")), None)
        scans = lookup_scans(con, [k for k in (identifier_key, merged_key) if k is not None])
    finally:
        con.close()
    return {
        "month": chosen_month,
        "counts_first_ms": round(counts_ms[0], 3),
        "counts": percentiles(counts_ms[1:] or counts_ms),
        "profile_lookup": percentiles(lookup_ms),
        "lookups": len(keys),
        "lookups_merged_ids": sum(k.startswith("profile_id:") for k in keys),
        "lookups_found": found_first,
        "lookup_scans": scans,
        **({"profile_lookup_again": percentiles(later_ms)} if later_ms else {}),
    }
