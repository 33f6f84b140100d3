"""Statement checks on DuckDB's parse tree: what `sql` runs and what `export --where` may say."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from projections import queries
from projections.readonly import open_readonly
from projections.sql_checks import QueryError, check_read_statement, check_where
from tests.projections.logs import fold


@pytest.fixture(scope="module")
def projection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db_path = tmp_path_factory.mktemp("checks") / "profiles.duckdb"
    fold(
        db_path,
        {"type": "identify", "identifiers": {"customer_id": "c1", "email": "ann@example.com"}},
        {"type": "track", "identifiers": {"customer_id": "c1"}, "event": "purchase",
         "properties": {"order_id": "o1", "revenue": 120.0}},
        {"type": "identify", "identifiers": {"customer_id": "c2", "phone": "+14155552671"}},
        {"type": "identify", "identifiers": {"anonymous_id": "a3", "push_token": "t3"}},
    )  # fmt: skip
    return db_path


@pytest.fixture
def con(projection: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = open_readonly(str(projection))
    yield connection
    connection.close()


# -- sql -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "runs"),
    [
        ("SELECT 1", "SELECT 1"),
        ("CALL pragma_version()", "SELECT * FROM pragma_version()"),
        ("PRAGMA table_info('profiles')", "SELECT * FROM pragma_table_info('profiles')"),
        ("PRAGMA version", "SELECT * FROM pragma_version()"),
        ("EXPLAIN /* why */ ANALYZE SELECT 1", "EXPLAIN ANALYZE SELECT 1"),
        ("explain select 1", "EXPLAIN select 1"),
        # Names of the projection, of a WITH clause and of the SQL-standard catalog read on.
        ("WITH x AS (SELECT 1) SELECT * FROM x, profiles", "WITH x AS (SELECT 1) SELECT * FROM"
         " x, profiles"),
        ("SELECT * FROM information_schema.tables", "SELECT * FROM information_schema.tables"),
        ('SELECT * FROM "Profiles"', 'SELECT * FROM "Profiles"'),
        ("DESCRIBE profiles", "DESCRIBE profiles"),
    ],
)  # fmt: skip
def test_the_statement_that_runs_is_the_one_checked(
    con: duckdb.DuckDBPyConnection, statement: str, runs: str
) -> None:
    assert check_read_statement(con, statement) == runs


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        ("WITH c AS (COPY profiles TO 'x.csv') SELECT 1", "COPY statement"),
        ("WITH i AS (INSERT INTO settings VALUES ('a', 'b') RETURNING *) SELECT 1",
         "INSERT statement"),
        ("SELECT * FROM profiles p, LATERAL (SELECT * FROM read_text(p.profile_id))",
         "table function read_text()"),
        ("SELECT * FROM main.checkpoint()", "table function checkpoint()"),
        ("SELECT * FROM query_table('profiles')", "table function query_table()"),
        ("SELECT nextval('any_sequence')", "nextval() changes state"),
        # A quoted name DuckDB would read as a file (the sandbox allows its temporary folder).
        ("SELECT * FROM 'profiles.duckdb.tmp/secret.csv'", "'profiles.duckdb.tmp/secret.csv'"
         " is not a table or view of the projection"),
        ("FROM 'x.duckdb.tmp/*.csv'", "is not a table or view"),
        ("DESCRIBE 'x.parquet'", "'x.parquet' is not a table or view"),
        ("SUMMARIZE 'x.csv'", "'x.csv' is not a table or view"),
        ("SHOW 'x.csv'", "'x.csv' is not a table or view"),
        ("WITH x AS (SELECT 1) SELECT * FROM main.x", "'x' is not a table or view"),
        # The machine's paths and settings are not the projection's business.
        ("SELECT current_setting('secret_directory')", "current_setting() reads DuckDB's"),
        ("SELECT * FROM duckdb_settings()", "table function duckdb_settings()"),
        ("CALL duckdb_settings()", "table function duckdb_settings()"),
        ("SELECT path FROM duckdb_databases()", "table function duckdb_databases()"),
        ("SELECT * FROM duckdb_databases", "'duckdb_databases' is not a table or view"),
        ("SELECT * FROM pragma_database_list", "is not a table or view"),
        ("SELECT * FROM pg_catalog.pg_settings", "'pg_settings' is not a table or view"),
        ("SELECT * FROM pragma_database_size()", "table function pragma_database_size()"),
        ("EXPLAIN ANALYZE INSTALL httpfs", "only a SELECT may be explained"),
        ("EXPLAIN ANALYZE SELECT 1; SELECT 2", "exactly one SQL statement (got 2)"),
        ("EXPLAIN (FORMAT json) SELECT 1", "EXPLAIN options"),
        ("PRAGMA threads = 1", "a SET statement"),
        ("PRAGMA show_tables", "not a read-only pragma"),
        ("CALL read_text('/etc/hostname')", "table function read_text()"),
        ("SELEC 1", "syntax error"),
        ("CHECKPOINT", "refused: a CHECKPOINT statement"),
        ("ATTACH 'other.duckdb'", "refused: an ATTACH statement"),
        ("INSTALL httpfs", "refused: an INSTALL statement"),
        ("WITH x AS (SELECT 1) DELETE FROM profiles", "refused: a DELETE statement"),
        ("FORCE CHECKPOINT", "refused: a FORCE CHECKPOINT statement"),
        ("PIVOT identifiers ON id_type USING count(*)", "PIVOT without its values"),
        ("SELECT * FROM (PIVOT identifiers ON id_type USING count(*))", "name them"),
    ],
)  # fmt: skip
def test_refusals_say_what_and_why(
    con: duckdb.DuckDBPyConnection, statement: str, reason: str
) -> None:
    with pytest.raises(QueryError) as refused:
        check_read_statement(con, statement)
    assert reason in str(refused.value)
    assert len(str(refused.value).splitlines()) == 1


def test_table_macros_of_the_projection_are_allowed(con: duckdb.DuckDBPyConnection) -> None:
    columns, rows = queries.run_sql(con, "SELECT * FROM mau_for_month('2026-01')")
    assert columns == ["month", "mau"] and rows == [("2026-01", 1)]


# -- export --where ------------------------------------------------------------------------


def _export(con: duckdb.DuckDBPyConnection, tmp_path: Path, where: str) -> list[dict[str, object]]:
    out = tmp_path / "out.jsonl"
    queries.export_profiles(con, str(out), "json", where)
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize(
    ("where", "customers"),
    [
        ("email_reachable", ["c1"]),
        ("EMAIL_REACHABLE", ["c1"]),
        ("NOT email_reachable AND customer_id IS NOT NULL", ["c2"]),
        ("revenue > 100 OR phone IS NOT NULL", ["c1", "c2"]),
        ("revenue * 2 BETWEEN 200 AND 300", ["c1"]),
        ("customer_id IN ('c2', 'c9')", ["c2"]),
        ("customer_id NOT IN ('c2')", ["c1"]),
        ("email LIKE '%@example.com'", ["c1"]),
        ("upper(email) ILIKE 'ANN@%'", ["c1"]),
        ("list_contains(identifiers, 'phone:+14155552671')", ["c2"]),
        ("last_seen >= TIMESTAMP '2026-01-10 12:00:00' AND order_count = 0", ["c2", None]),
        ("coalesce(customer_id, 'none') = 'none'", [None]),
        ("customer_id IS DISTINCT FROM 'c1' AND customer_id <> 'it''s'", ["c2"]),
        ("year(first_seen) = 2026 AND len(identifiers) = 2", ["c1", "c2", None]),
    ],
)
def test_a_where_selects_the_profiles_it_says(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, where: str, customers: list[str | None]
) -> None:
    found = [record["customer_id"] for record in _export(con, tmp_path, where)]
    assert sorted(found, key=str) == sorted(customers, key=str)


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("", "--where is empty"),
        ("nope = 1", "'nope' is not an export column"),
        ("profile_export.email IS NULL", "'profile_export.email' is not an export column"),
        ("p.email IS NULL", "not an export column"),
        ("main.lower(email) = 'x'", "function lower()"),
        ("count(*) > 1", "function count_star()"),
        ("sum(revenue) OVER () > 0", "window"),
        ("read_text('x') IS NULL", "function read_text()"),
        ("email = ?", "a parameter"),
        ("(SELECT true)", "a subquery"),
        ("EXISTS (SELECT 1)", "a subquery"),
        ("CASE WHEN true THEN true END", "case"),
        ("list_transform(identifiers, x -> x) = []", "list_transform()"),
        ("email IN (phone)", "IN takes a list of constants"),
        ("true FROM profiles", "one condition over the export columns"),
        ("true UNION SELECT false", "one condition over the export columns"),
        ("true ORDER BY 1", "one condition over the export columns"),
        ("true; DELETE FROM profiles", "exactly one SQL statement"),
        ("email_reachable) OR (true", "syntax error"),
    ],
)
def test_a_where_beyond_the_allowed_kinds_is_refused(
    con: duckdb.DuckDBPyConnection, where: str, reason: str
) -> None:
    columns = [name for name, _ in queries.export_columns(con)]
    with pytest.raises(QueryError) as refused:
        check_where(con, where, columns)
    message = str(refused.value)
    assert reason in message, message
    assert message.startswith("--where") and len(message.splitlines()) == 1


def test_the_export_statement_is_generated_from_the_tree_not_the_text(
    con: duckdb.DuckDBPyConnection,
) -> None:
    select = queries.export_select(con, "email_reachable /* note */ -- and a comment", "csv")
    assert "note" not in select and "comment" not in select
    assert select.endswith("WHERE email_reachable")
