"""Latency of `counts` and `profile` lookups over a generated 1M-profile projection.

The projection is generated with set-based SQL (DuckDB range()), not by folding events: the
queries only see the tables, and this builds a million profiles in about a minute. The shape
is meant to be realistic: UUID profile ids, several identifiers per profile (anonymous ids,
emails, phones, push tokens, customer ids), mixed consents, some bounces and CCPA opt-outs,
traits, subscriptions, orders, merges, ~10 timeline events for a fraction of the profiles,
and the per-profile reachability inputs derived with the fold's own SQL. Identifier keys
(`id_key`) are computed in Python with profile_engine.keys.identifier_key, the function the
fold and the lookups use, so every lookup goes through the identifiers_by_key index.

Usage: python benchmarks/bench_queries.py [--profiles N] [--db FILE] [--lookups N]
Prints one JSON object: counts and lookup p50/p99 milliseconds, how many lookups found a
profile, and which tables the lookup statements read through an index.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from read_path import measure_read_path

from profile_engine.keys import identifier_key
from projections.batch_writer import REACHABILITY_INPUT_TALLY, REACHABILITY_INPUTS
from projections.store import SCHEMA_VERSION, create_indexes, sql_file

MONTH = "2026-01"
# Identifiers are generated and keyed this many profiles at a time (memory stays bounded).
CHUNK_PROFILES = 100_000

# Profile i's id; merged-away id j. Temporary macros: they vanish with the connection.
MACROS = """
CREATE OR REPLACE TEMP MACRO pid(i) AS md5('profile/' || i)::UUID;
CREATE OR REPLACE TEMP MACRO merged_pid(i) AS md5('merged/' || i)::UUID;
CREATE OR REPLACE TEMP MACRO eid(i, tag) AS md5('event/' || i || '/' || tag);
"""

PROFILES_SQL = """
INSERT INTO profiles BY NAME
SELECT
    pid(i) AS profile_id,
    TIMESTAMP '2024-01-01' + to_seconds((hash(i, 'c') % 63072000)::BIGINT) AS created_at,
    eid(i, 'created') AS created_event_id,
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
"""

# One chunk of profiles' identifiers, every column but id_key. Values are unique per
# (type, value), as the fold keeps them, and already normalised.
IDENTIFIERS_SQL = """
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
    FROM range({lo}, {hi}) AS t(i)
    CROSS JOIN spec AS s
    CROSS JOIN LATERAL (
        SELECT unnest(range((s.lo + hash(t.i, s.id_type) % (s.hi - s.lo + 1))::BIGINT)) AS j
    )
    WHERE hash(t.i, s.id_type, 'has') % 100 < s.pct
)
SELECT
    pid(i) AS profile_id,
    id_type,
    CASE id_type
        WHEN 'email' THEN 'user' || i || '.' || j || '@example.com'
        WHEN 'phone' THEN '+1555' || lpad((i * 3 + j)::VARCHAR, 7, '0')
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
    eid(i, 'seen/' || id_type || '/' || j) AS last_seen_event_id,
    (hash(i, j, 'b') % 12 = 0)::BIGINT AS hard_bounces,
    0::BIGINT AS complaints,
    (hash(i, j, 's') % 4)::BIGINT AS soft_bounces,
    (hash(i, j, 's') % 3)::BIGINT AS consecutive_soft_bounces
FROM expanded
"""

DERIVED_SQL = """
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
SELECT pid(i) AS profile_id, name,
       CASE name WHEN 'first_name' THEN 'Name' || (i % 997) WHEN 'city' THEN 'City' || (i % 211)
                 ELSE (1 + i % 12)::VARCHAR END AS value,
       CASE name WHEN 'birthday_month' THEN 'long' ELSE 'string' END AS value_type,
       TIMESTAMP '2025-06-01' + to_seconds((hash(i, name) % 10000000)::BIGINT) AS updated_at,
       eid(i, 'identify') AS source
FROM range({n}) AS t(i), (VALUES ('first_name'), ('city'), ('birthday_month')) AS n(name)
WHERE hash(i, 'tr') % 2 = 0;

INSERT INTO subscriptions BY NAME
SELECT pid(i) AS profile_id, 'newsletter' AS list_id, 'email' AS channel,
       CASE WHEN i % 3 = 0 THEN 'unsubscribed' ELSE 'subscribed' END AS status,
       'user' || i || '.0@example.com' AS identifier,
       TIMESTAMP '2025-03-01' + to_seconds((hash(i, 'sub') % 20000000)::BIGINT) AS updated_at,
       eid(i, 'subscription') AS event_id
FROM range({n}) AS t(i) WHERE hash(i, 'sub?') % 5 = 0;

INSERT INTO orders BY NAME
SELECT p.profile_id, p.profile_id::VARCHAR || '-o' || k AS order_id, 42.5 AS revenue,
       p.last_seen - to_seconds(k * 86400) AS ordered_at,
       md5(p.profile_id::VARCHAR || '/order/' || k) AS event_id
FROM profiles AS p, LATERAL (SELECT unnest(range(p.order_count)) AS k);

-- Every twentieth profile absorbed another one; the survivor is always live.
INSERT INTO profile_merges BY NAME
SELECT merged_pid(i) AS merged_profile_id, pid(i * 7) AS survivor_profile_id,
       TIMESTAMP '2025-05-01' AS merged_at, eid(i, 'merge') AS event_id
FROM range({n} // 20) AS t(i);

INSERT INTO events BY NAME
SELECT
    eid(i, k) AS event_id,
    pid(i) AS profile_id,
    CASE WHEN k % 5 = 0 THEN 'identify' ELSE 'track' END AS type,
    TIMESTAMP '2025-11-01' + to_seconds((hash(i, k, 't') % 7776000)::BIGINT) AS timestamp,
    CASE WHEN k % 5 = 0 THEN NULL
         ELSE ['page_view', 'add_to_cart', 'message_sent', 'purchase'][(1 + hash(i, k) % 4)::BIGINT]
    END AS event_name,
    '{{"event": "page_view", "properties": {{"url": "/"}}}}'::JSON AS payload
FROM range({n}) AS t(i), range(10) AS r(k)
WHERE hash(i, 'active') % 10 < 3;
"""


def insert_identifiers(con: duckdb.DuckDBPyConnection, profiles: int) -> None:
    """Generate each chunk's identifiers in SQL, key them in Python, insert them."""
    for lo in range(0, profiles, CHUNK_PROFILES):
        hi = min(profiles, lo + CHUNK_PROFILES)
        chunk = con.sql(IDENTIFIERS_SQL.format(lo=lo, hi=hi)).to_arrow_table()
        keys = [
            identifier_key(id_type, value)
            for id_type, value in zip(
                chunk.column("id_type").to_pylist(),
                chunk.column("id_value").to_pylist(),
                strict=True,
            )
        ]
        keyed = chunk.append_column("id_key", pa.array(keys, pa.string()))
        con.register("identifier_chunk", keyed)
        try:
            con.execute(
                "INSERT INTO identifiers BY NAME"
                " SELECT * REPLACE (id_key::UUID AS id_key) FROM identifier_chunk"
            )
        finally:
            con.unregister("identifier_chunk")


def build_projection(db_path: Path, profiles: int, with_indexes: bool) -> float:
    """Generate the projection tables; returns seconds taken."""
    started = time.perf_counter()
    con = duckdb.connect(str(db_path))
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute(sql_file("schema.sql"))
        con.execute(MACROS)
        con.execute(PROFILES_SQL.format(n=profiles))
        insert_identifiers(con, profiles)
        con.execute(DERIVED_SQL.format(n=profiles))
        con.execute(
            REACHABILITY_INPUTS.format(
                identifiers="identifiers",
                profiles="profiles",
                scope="SELECT profile_id FROM profiles",
            )
        )
        con.execute(REACHABILITY_INPUT_TALLY)
        con.execute("INSERT INTO projection_meta VALUES ('schema_version', ?)", [SCHEMA_VERSION])
        con.execute(sql_file("views.sql"))
        # After the rows, as a rebuild does: building an index once is cheaper than keeping it.
        if with_indexes:
            create_indexes(con)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return time.perf_counter() - started


def cli_seconds(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "from profile_engine.cli.main import main; main()", *args],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def profile_id(number: int) -> str:
    """The id the macro pid() gives profile ``number``."""
    return str(uuid.UUID(hashlib.md5(f"profile/{number}".encode()).hexdigest()))


def table_sizes(db_path: Path) -> dict[str, int]:
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        row = con.execute(
            "SELECT (SELECT count(*) FROM profiles), (SELECT count(*) FROM identifiers),"
            " (SELECT count(*) FROM events), (SELECT count(*) FROM profile_merges)"
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    return dict(zip(("profiles", "identifiers", "events", "merges"), row, strict=True))


def run(
    db_path: Path, profiles: int, lookups: int, rebuild: bool, with_indexes: bool
) -> dict[str, Any]:
    result: dict[str, Any] = {"indexes": with_indexes}
    if rebuild or not db_path.exists():
        db_path.unlink(missing_ok=True)
        result["build_seconds"] = round(build_projection(db_path, profiles, with_indexes), 1)
    result.update(table_sizes(db_path))
    result["db_mb"] = round(db_path.stat().st_size / 1e6, 1)
    result.update(measure_read_path(db_path, lookups, counts_runs=21, seed=7, month=MONTH))
    db = str(db_path)
    result["cli_counts_seconds"] = round(cli_seconds(["counts", "--db", db, "--month", MONTH]), 3)
    result["cli_profile_seconds"] = round(
        cli_seconds(["profile", "--db", db, "profile_id:" + profile_id(0)]), 3
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=1_000)
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
