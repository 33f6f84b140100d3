"""Latency of `counts` and `profile` lookups over a generated 1M-profile projection.

The projection is generated with set-based SQL (DuckDB range()), not by folding events: the
queries only see the tables, and this builds a million profiles in seconds. The shape is
meant to be realistic: several identifiers per profile (anonymous ids, emails, phones, push
tokens, customer ids), mixed consents, some bounces and CCPA opt-outs, traits, subscriptions,
orders, merges, and ~10 timeline events for a fraction of the profiles.

Usage: python benchmarks/bench_queries.py [--profiles N] [--db FILE] [--lookups N]
Prints one JSON object with p50/p99 milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from projections import queries
from projections.readonly import open_readonly

PROJECTIONS_DIR = Path(queries.__file__).parent
MONTH = "2026-01"

GENERATE_SQL = """
INSERT INTO profiles BY NAME
SELECT
    'p' || md5(i::VARCHAR) AS profile_id,
    TIMESTAMP '2024-01-01' + to_seconds((hash(i, 'c') % 63072000)::BIGINT) AS created_at,
    'e' || md5(i::VARCHAR) AS created_event_id,
    TIMESTAMP '2024-01-01' + to_seconds((hash(i, 'c') % 63072000)::BIGINT) AS first_seen,
    TIMESTAMP '2026-01-31' - to_seconds((hash(i, 'l') % 7776000)::BIGINT) AS last_seen,
    (1 + hash(i, 'n') % 40)::BIGINT AS event_count,
    hash(i, 'ccpa') % 50 = 0 AS ccpa_opted_out,
    NULL::TIMESTAMP AS ccpa_updated_at,
    NULL::VARCHAR AS ccpa_event_id,
    (CASE WHEN hash(i, 'o') % 4 = 0 THEN 1 + hash(i, 'oc') % 6 ELSE 0 END)::BIGINT
        AS order_count,
    0.0::DOUBLE AS revenue,
    NULL::TIMESTAMP AS last_purchase_at
FROM range({n}) AS t(i);

UPDATE profiles SET revenue = order_count * 42.5,
    last_purchase_at = CASE WHEN order_count > 0 THEN last_seen END;

INSERT INTO identifiers BY NAME
WITH spec AS (
    SELECT * FROM (VALUES
        ('anonymous_id', 1, 3, 100),
        ('customer_id', 1, 1, 50),
        ('email', 1, 3, 70),
        ('phone', 1, 2, 40),
        ('push_token', 1, 3, 30)
    ) AS s(id_type, lo, hi, pct)
), expanded AS (
    SELECT t.i, s.id_type, j
    FROM range({n}) AS t(i)
    CROSS JOIN spec AS s
    CROSS JOIN LATERAL (
        SELECT unnest(range((s.lo + hash(t.i, s.id_type) % (s.hi - s.lo + 1))::BIGINT)) AS j
    )
    WHERE hash(t.i, s.id_type, 'has') % 100 < s.pct
)
SELECT
    'p' || md5(i::VARCHAR) AS profile_id,
    id_type,
    CASE id_type
        WHEN 'email' THEN 'user' || i || '.' || j || '@example.com'
        WHEN 'phone' THEN '+1555' || lpad(((i * 3 + j) % 10000000)::VARCHAR, 7, '0')
        ELSE left(id_type, 1) || md5(i::VARCHAR || '-' || j)
    END AS id_value,
    hash(i, j, 'v') % 50 <> 0 AS valid,
    hash(i, j, 'v') % 50 <> 0 AND hash(i, j, 'b') % 12 <> 0 AS deliverable,
    CASE hash(i, j, 'k') % 20
        WHEN 0 THEN 'pending'
        WHEN 1 THEN 'opted_out' WHEN 2 THEN 'opted_out' WHEN 3 THEN 'opted_out'
        ELSE CASE WHEN hash(i, j, 'k2') % 2 = 0 THEN 'opted_in' ELSE 'unknown' END
    END AS consent,
    NULL::TIMESTAMP AS consent_updated_at,
    TIMESTAMP '2024-01-01' + to_seconds((hash(i, j, 'f') % 31536000)::BIGINT) AS first_seen,
    CASE WHEN hash(i, j, 'ln') % 40 = 0 THEN NULL
         ELSE TIMESTAMP '2025-01-01' + to_seconds((hash(i, j, 'ls') % 34000000)::BIGINT)
    END AS last_seen,
    'e' || md5(i::VARCHAR || '/' || j) AS last_seen_event_id,
    (hash(i, j, 'b') % 12 = 0)::BIGINT AS hard_bounces,
    0::BIGINT AS complaints,
    (hash(i, j, 's') % 4)::BIGINT AS soft_bounces,
    (hash(i, j, 's') % 3)::BIGINT AS consecutive_soft_bounces,
    NULL::VARCHAR AS consent_explicit,
    NULL::TIMESTAMP AS consent_explicit_at,
    NULL::VARCHAR AS consent_explicit_event_id,
    NULL::TIMESTAMP AS consent_unknown_at,
    NULL::VARCHAR AS consent_unknown_event_id
FROM expanded;

-- The fold stores which identifier of each type was seen last; derive it the same way here.
UPDATE identifiers SET is_last_seen = true
FROM (
    SELECT profile_id, id_type, arg_max(id_value, {{
        'seen': coalesce(last_seen, '-infinity'::TIMESTAMP),
        'event': coalesce(last_seen_event_id, ''),
        'value': id_value}}) AS id_value
    FROM identifiers GROUP BY ALL
) AS latest
WHERE identifiers.profile_id = latest.profile_id AND identifiers.id_type = latest.id_type
    AND identifiers.id_value = latest.id_value;

INSERT INTO traits BY NAME
SELECT 'p' || md5(i::VARCHAR) AS profile_id, name,
       CASE name WHEN 'first_name' THEN 'Name' || (i % 997) WHEN 'city' THEN 'City' || (i % 211)
                 ELSE ((i % 90) + 10)::VARCHAR END AS value,
       CASE name WHEN 'age' THEN 'long' ELSE 'string' END AS value_type,
       TIMESTAMP '2025-06-01' + to_seconds((hash(i, name) % 10000000)::BIGINT) AS updated_at,
       'e' || md5(i::VARCHAR) AS source
FROM range({n}) AS t(i), (VALUES ('first_name'), ('city'), ('age')) AS n(name)
WHERE hash(i, 'tr') % 2 = 0;

INSERT INTO subscriptions BY NAME
SELECT 'p' || md5(i::VARCHAR) AS profile_id, 'newsletter' AS list_id, 'email' AS channel,
       CASE WHEN i % 3 = 0 THEN 'unsubscribed' ELSE 'subscribed' END AS status,
       'user' || i || '.0@example.com' AS identifier,
       TIMESTAMP '2025-03-01' + to_seconds((hash(i, 'sub') % 20000000)::BIGINT) AS updated_at,
       'e' || md5(i::VARCHAR || 's') AS event_id
FROM range({n}) AS t(i) WHERE hash(i, 'sub?') % 5 = 0;

INSERT INTO orders BY NAME
SELECT p.profile_id, p.profile_id || '-o' || k AS order_id, 42.5 AS revenue,
       p.last_seen - to_seconds(k * 86400) AS ordered_at,
       'e' || md5(p.profile_id || k) AS event_id
FROM profiles AS p, LATERAL (SELECT unnest(range(p.order_count)) AS k);

INSERT INTO profile_merges BY NAME
SELECT 'm' || md5(i::VARCHAR) AS merged_profile_id, 'p' || md5((i * 7)::VARCHAR)
       AS survivor_profile_id, TIMESTAMP '2025-05-01' AS merged_at,
       'e' || md5(i::VARCHAR || 'm') AS event_id
FROM range({n} // 20) AS t(i);

INSERT INTO events BY NAME
SELECT
    'e' || md5(i::VARCHAR || ':' || k) AS event_id,
    'p' || md5(i::VARCHAR) AS profile_id,
    CASE WHEN k % 5 = 0 THEN 'identify' ELSE 'track' END AS type,
    TIMESTAMP '2025-11-01' + to_seconds((hash(i, k, 't') % 7776000)::BIGINT) AS timestamp,
    CASE WHEN k % 5 = 0 THEN NULL
         ELSE ['page_view', 'add_to_cart', 'message_sent', 'purchase'][(1 + hash(i, k) % 4)::BIGINT]
    END AS event_name,
    '{{"event": "page_view", "properties": {{"url": "/"}}}}'::JSON AS payload
FROM range({n}) AS t(i), range(10) AS r(k)
WHERE hash(i, 'active') % 10 < 3;
"""


def build_projection(db_path: Path, profiles: int, with_indexes: bool) -> float:
    """Generate the projection tables with set-based SQL; returns seconds taken."""
    started = time.perf_counter()
    con = duckdb.connect(str(db_path))
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute((PROJECTIONS_DIR / "schema.sql").read_text())
        con.execute(GENERATE_SQL.format(n=profiles))
        con.execute((PROJECTIONS_DIR / "views.sql").read_text())
        indexes = PROJECTIONS_DIR / "indexes.sql"
        if with_indexes and indexes.exists():
            con.execute(indexes.read_text())
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return time.perf_counter() - started


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    p99_index = min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[p99_index], 2),
        "runs": len(ordered),
    }


def time_calls(call: Callable[[], object], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def lookup_keys(con: duckdb.DuckDBPyConnection, count: int) -> list[str]:
    """A repeatable sample of TYPE:VALUE keys; some are merged-away profile ids."""
    identifiers = con.execute(
        f"SELECT id_type || ':' || id_value FROM identifiers"
        f" USING SAMPLE reservoir({int(count)} ROWS) REPEATABLE (7)"
    ).fetchall()
    merged = con.execute(
        f"SELECT 'profile_id:' || merged_profile_id FROM profile_merges"
        f" USING SAMPLE reservoir({max(1, count // 10)} ROWS) REPEATABLE (7)"
    ).fetchall()
    return [row[0] for row in identifiers + merged]


def cli_seconds(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "from profile_engine.cli.main import main; main()", *args],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def run(
    db_path: Path, profiles: int, lookups: int, rebuild: bool, with_indexes: bool
) -> dict[str, object]:
    result: dict[str, object] = {"profiles": profiles, "indexes": with_indexes}
    if rebuild or not db_path.exists():
        db_path.unlink(missing_ok=True)
        seconds = build_projection(db_path, profiles, with_indexes)
        result["build_seconds"] = round(seconds, 1)
    result["db_megabytes"] = round(db_path.stat().st_size / 1e6)
    con = open_readonly(str(db_path))
    try:
        keys = lookup_keys(con, lookups)
        sizes = con.execute(
            "SELECT (SELECT count(*) FROM identifiers), (SELECT count(*) FROM events)"
        ).fetchone()
        assert sizes is not None
        result["identifiers"], result["events"] = sizes
        queries.counts(con, MONTH)  # warm the buffer pool once, like a resident process
        result["counts"] = percentiles(time_calls(lambda: queries.counts(con, MONTH), 20))
        key_iter = iter(keys * 2)
        result["profile_lookup"] = percentiles(
            time_calls(lambda: queries.profile_view(con, next(key_iter)), len(keys))
        )
    finally:
        con.close()
    db = str(db_path)
    result["cli_counts_seconds"] = round(cli_seconds(["counts", "--db", db, "--month", MONTH]), 3)
    result["cli_profile_seconds"] = round(
        cli_seconds(["profile", "--db", db, keys[0], "--format", "json"]), 3
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--db", type=Path, help="projection file (default: a temp file)")
    parser.add_argument("--rebuild", action="store_true", help="regenerate an existing --db")
    parser.add_argument(
        "--without-indexes", action="store_true", help="skip projections/indexes.sql"
    )
    options = parser.parse_args()
    with_indexes = not options.without_indexes
    if options.db is None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.duckdb"
            figures = run(path, options.profiles, options.lookups, True, with_indexes)
    else:
        figures = run(options.db, options.profiles, options.lookups, options.rebuild, with_indexes)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
