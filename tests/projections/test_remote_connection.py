"""A DuckDB connection used through a pipe (the live server's fold process writes this way)."""

from __future__ import annotations

import multiprocessing as mp
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from projections.remote_connection import (
    ConnectionHost,
    RemoteConnection,
    RemoteConnectionClosed,
)


@contextmanager
def hosted(
    con: duckdb.DuckDBPyConnection,
    calls: dict[str, Callable[[Any], Any]] | None = None,
    contexts: dict[str, Callable[[], AbstractContextManager[Any]]] | None = None,
) -> Iterator[RemoteConnection]:
    ours, theirs = mp.Pipe()
    host = ConnectionHost(con, calls, contexts)
    thread = threading.Thread(target=host.serve, args=(theirs,), daemon=True)
    thread.start()
    remote = RemoteConnection(ours)
    try:
        yield remote
    finally:
        remote.close()
        thread.join(10)
        assert not thread.is_alive()


VALUES_SQL = (
    "SELECT 'a8098c1a-f86e-11da-bd1a-00112444be1e'::UUID AS u, TIMESTAMP '2026-03-01 10:00' AS t,"
    " [1, 2]::BIGINT[] AS l, '\\x01\\x02'::BLOB AS b, sum(x)::HUGEINT AS h, 1.5::DECIMAL(4,2) AS d,"
    " NULL::VARCHAR AS n FROM range(3) AS r(x)"
)


@pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result")
def test_rows_come_back_as_duckdb_itself_returns_them() -> None:
    con = duckdb.connect()
    direct_rows = con.execute(VALUES_SQL).fetchall()
    direct_one = con.execute(VALUES_SQL).fetchone()
    direct_table = con.execute(VALUES_SQL).to_arrow_table()
    with hosted(con) as remote:
        assert remote.execute(VALUES_SQL).fetchall() == direct_rows
        assert remote.execute(VALUES_SQL).fetchone() == direct_one
        assert remote.execute(VALUES_SQL).to_arrow_table().equals(direct_table)
        assert remote.execute("SELECT ? + 1", [41]).fetchall() == [(42,)]


def test_statements_change_the_host_database_and_registered_tables_are_readable() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (k VARCHAR, v BIGINT)")
    with hosted(con) as remote:
        remote.register("_batch", pa.table({"k": ["a", "b"], "v": [1, 2]}))
        remote.execute("INSERT INTO t SELECT * FROM _batch")
        remote.unregister("_batch")
        remote.executemany("INSERT INTO t VALUES (?, ?)", [("c", 3), ("d", 4)])
        with pytest.raises(duckdb.CatalogException):
            remote.execute("SELECT * FROM _batch")
    assert con.execute("SELECT * FROM t ORDER BY k").fetchall() == [
        ("a", 1), ("b", 2), ("c", 3), ("d", 4)
    ]  # fmt: skip


def test_a_failed_statement_raises_duckdbs_own_error_and_the_connection_goes_on() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (k VARCHAR PRIMARY KEY)")
    with hosted(con) as remote:
        remote.execute("INSERT INTO t VALUES ('a')")
        with pytest.raises(duckdb.ConstraintException, match="Duplicate key"):
            remote.execute("INSERT INTO t VALUES ('a')")
        assert remote.execute("SELECT count(*) FROM t").fetchall() == [(1,)]


def test_hooks_are_called_noted_and_entered_on_the_host_in_order() -> None:
    heard: list[str] = []

    @contextmanager
    def around() -> Iterator[None]:
        heard.append("enter")
        yield
        heard.append("exit")

    con = duckdb.connect()
    calls = {"double": lambda x: x * 2, "note": lambda x: heard.append(f"note {x}")}
    with hosted(con, calls, {"around": around}) as remote:
        remote.note("note", 1)
        assert remote.call("double", 21) == 42
        with remote.context("around"):
            heard.append("inside")
            remote.execute("SELECT 1")
    assert heard == ["note 1", "enter", "inside", "exit"]


def test_when_the_other_side_goes_mid_transaction_the_host_undoes_what_it_left(
    tmp_path: Path,
) -> None:
    con = duckdb.connect(str(tmp_path / "p.duckdb"))
    con.execute("CREATE TABLE t (k VARCHAR)")
    left: list[str] = []

    @contextmanager
    def around() -> Iterator[None]:
        yield
        left.append("left")

    with hosted(con, contexts={"around": around}) as remote:
        remote.execute("BEGIN TRANSACTION")
        remote.execute("INSERT INTO t VALUES ('half a batch')")
        remote.register("_batch", pa.table({"k": ["x"]}))
        remote.context("around").__enter__()
        # the fold process dies here: its end of the pipe closes
    assert left == ["left"]
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(0,)]
    with pytest.raises(duckdb.CatalogException):
        con.execute("SELECT * FROM _batch")
    con.execute("INSERT INTO t VALUES ('next')")  # no transaction was left open
    assert con.execute("SELECT k FROM t").fetchall() == [("next",)]


def test_a_gone_host_is_a_clear_error_on_the_other_side() -> None:
    ours, theirs = mp.Pipe()
    theirs.close()
    remote = RemoteConnection(ours)
    with pytest.raises(RemoteConnectionClosed, match="connection is gone"):
        remote.execute("SELECT 1").fetchall()
