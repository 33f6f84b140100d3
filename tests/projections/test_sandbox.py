"""The sandbox of a DuckDB instance, and statement checks on a reader that shares a writer's
instance (as the live server will): nothing but the projection is reachable, nothing written."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from projections import queries
from projections.connection import ProjectionUnavailable, connect, is_sandboxed, sandbox
from projections.readonly import open_readonly, read_projection
from projections.sql_checks import QueryError
from tests.projections.logs import fold
from tests.support.hostile import (
    SECRET,
    Targets,
    database_fingerprint,
    file_digests,
    hostile_statements,
)


@pytest.fixture
def projection(db_path: Path) -> Path:
    fold(
        db_path,
        {"type": "identify", "identifiers": {"customer_id": "c1", "email": "ann@example.com"},
         "traits": {"first_name": "Ann"}},
        {"type": "track", "identifiers": {"customer_id": "c1"}, "event": "purchase",
         "properties": {"order_id": "o1", "revenue": 12.5}},
        {"type": "identify", "identifiers": {"anonymous_id": "a2", "push_token": "t2"}},
    )  # fmt: skip
    return db_path


@pytest.fixture
def targets(tmp_path: Path) -> Targets:
    return Targets.create(tmp_path / "outside")


@pytest.fixture
def writer(projection: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The projection opened for writing and sandboxed, as a live server's fold holds it."""
    con = connect(projection)
    sandbox(con)
    yield con
    con.close()


def test_a_sandboxed_instance_reaches_no_file_network_or_extension(
    writer: duckdb.DuckDBPyConnection, targets: Targets
) -> None:
    reader = writer.cursor()  # settings are per instance: the cursor is sandboxed too
    before = targets.snapshot()
    for statement in (
        f"SELECT * FROM read_text('{targets.canary}')",
        f"SELECT * FROM read_csv('{targets.canary}')",
        f"SELECT * FROM glob('{targets.directory}/*')",
        f"SELECT * FROM '{targets.canary}'",
        f"COPY (SELECT 1) TO '{targets.fresh}'",
        f"COPY (SELECT 1) TO '{targets.canary_db}'",
        f"ATTACH '{targets.canary_db}' AS other",
        f"EXPORT DATABASE '{targets.fresh_dir}'",
        "SELECT * FROM read_csv('https://example.com/x.csv')",
        "INSTALL httpfs",
        "LOAD httpfs",
    ):
        with pytest.raises(duckdb.Error):
            reader.execute(statement).fetchall()
    assert targets.snapshot() == before
    assert not targets.fresh.exists() and not targets.fresh_dir.exists()


@pytest.mark.parametrize(
    "statement",
    [
        "SET enable_external_access = true",
        "SET GLOBAL enable_external_access = true",
        "RESET enable_external_access",
        "SET lock_configuration = false",
        "SET autoload_known_extensions = true",
        "SET allow_community_extensions = true",
        "PRAGMA enable_profiling",
        "SET temp_directory = '/'",
    ],
)
def test_no_cursor_can_unlock_the_sandbox(
    writer: duckdb.DuckDBPyConnection, statement: str
) -> None:
    reader = writer.cursor()
    with pytest.raises(duckdb.Error, match="configuration has been locked"):
        reader.execute(statement)
    assert is_sandboxed(reader) and is_sandboxed(writer)


def test_the_writer_keeps_working_in_the_sandbox(writer: duckdb.DuckDBPyConnection) -> None:
    incoming = pa.table({"profile_id": ["p-new"], "note": ["registered from Arrow"]})
    writer.register("incoming", incoming)
    writer.execute("CREATE TABLE notes AS SELECT * FROM incoming")
    writer.execute("INSERT INTO notes VALUES ('p-2', 'plain DML')")
    writer.execute("CHECKPOINT")
    rows = writer.cursor().execute("SELECT note FROM notes ORDER BY profile_id").fetchall()
    assert rows == [("plain DML",), ("registered from Arrow",)]


def _sort_beyond_memory(path: Path, temp_directory: str | None) -> list[str]:
    """Files seen beside ``path`` while a sort well beyond the memory limit runs sandboxed."""
    con = duckdb.connect(str(path))
    try:
        con.execute("SET memory_limit = '20MB'")
        con.execute("SET threads = 1")
        if temp_directory is not None:
            con.execute(f"SET temp_directory = '{temp_directory}'")
        con.execute(
            "CREATE TABLE big AS SELECT range AS x, md5(range::VARCHAR) AS s FROM range(1200000)"
        )
        sandbox(con)
        seen: set[str] = set()
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                seen.update(p.name for p in path.parent.iterdir())
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            con.execute("SELECT s, x FROM big ORDER BY s DESC").fetchmany(1)
        finally:
            done.set()
            watcher.join()
        return sorted(seen)
    finally:
        con.close()


def test_the_writer_still_spills_to_its_own_temp_directory(tmp_path: Path) -> None:
    path = tmp_path / "spill" / "big.duckdb"
    path.parent.mkdir()
    assert "big.duckdb.tmp" in _sort_beyond_memory(path, None)
    # the same sort without a temp directory runs out of memory: the query did need to spill
    other = tmp_path / "nospill" / "big.duckdb"
    other.parent.mkdir()
    with pytest.raises(duckdb.OutOfMemoryException):
        _sort_beyond_memory(other, "")


def test_sandbox_is_idempotent_and_refuses_an_instance_locked_without_it() -> None:
    con = duckdb.connect()
    sandbox(con)
    sandbox(con)
    assert is_sandboxed(con)
    locked = duckdb.connect()
    locked.execute("SET lock_configuration = true")
    assert not is_sandboxed(locked)
    with pytest.raises(ProjectionUnavailable, match="cannot sandbox"):
        sandbox(locked)


def test_query_connections_are_sandboxed(projection: Path) -> None:
    assert read_projection(str(projection), is_sandboxed)
    con = open_readonly(str(projection))
    try:
        assert is_sandboxed(con)
    finally:
        con.close()


def test_python_objects_beside_the_query_are_out_of_reach(projection: Path) -> None:
    secret_table = pa.table({"secret": [SECRET]})  # noqa: F841 - DuckDB finds it by its name
    plain = duckdb.connect()
    assert plain.execute("SELECT * FROM secret_table").fetchall() == [(SECRET,)]
    plain.close()
    con = open_readonly(str(projection))
    try:
        for cursor in (con, con.cursor()):
            with pytest.raises(duckdb.CatalogException, match="secret_table"):
                cursor.execute("SELECT * FROM secret_table")
    finally:
        con.close()


def test_hostile_statements_from_a_reader_of_the_writers_instance_change_nothing(
    projection: Path, writer: duckdb.DuckDBPyConnection, targets: Targets
) -> None:
    before = database_fingerprint(writer)
    outside_before = targets.snapshot()
    reader = writer.cursor()
    let_through: list[str] = []
    for statement in hostile_statements(targets):
        try:
            columns, rows = queries.run_sql(reader, statement)
        except QueryError as error:
            assert len(str(error).splitlines()) == 1
            assert SECRET not in str(error)
        else:
            let_through.append(f"{statement} -> {columns} {rows}")
    assert let_through == []
    assert database_fingerprint(writer) == before
    assert targets.snapshot() == outside_before
    assert not targets.fresh.exists() and not targets.fresh_dir.exists()
    writer.close()
    reopened = duckdb.connect(str(projection), read_only=True)
    try:
        assert database_fingerprint(reopened) == before
    finally:
        reopened.close()


def test_read_only_queries_leave_the_file_byte_identical(
    projection: Path, targets: Targets
) -> None:
    before = file_digests(projection)
    con = open_readonly(str(projection))
    try:
        for statement in hostile_statements(targets):
            with pytest.raises(QueryError):
                queries.run_sql(con, statement)
        assert queries.run_sql(con, "SELECT count(*) FROM profiles")[1] == [(2,)]
    finally:
        con.close()
    assert file_digests(projection) == before
