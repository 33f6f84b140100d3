"""How the live server's reads begin and end their transactions beside a committing fold."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from projections import read_transactions
from projections.read_transactions import PrimedReads, ReadCloser, begin_read
from projections.store import ProjectionStore


@pytest.fixture
def store(db_path: Path) -> ProjectionStore:
    return ProjectionStore(db_path)


def test_the_closer_ends_handed_over_transactions_by_the_time_it_is_drained(
    store: ProjectionStore,
) -> None:
    closer = ReadCloser()
    cursors = [begin_read(store.con.cursor()) for _ in range(3)]
    for cursor in cursors:
        closer.close_later(cursor)
    closer.drain()
    for cursor in cursors:
        with pytest.raises(duckdb.ConnectionException, match="closed"):
            cursor.execute("SELECT 1")
    closer.stop()
    store.close()


def test_the_closer_survives_a_cursor_whose_connection_is_gone(db_path: Path) -> None:
    connection = duckdb.connect(str(db_path))
    orphan = connection.cursor()
    connection.close()
    closer = ReadCloser()
    closer.close_later(orphan)
    closer.drain()  # returns: the closing thread is still alive
    closer.stop()


def _count(cursor: duckdb.DuckDBPyConnection) -> int:
    return int(cursor.execute("SELECT count(*) FROM settings").fetchone()[0])  # type: ignore[index]


def test_primed_reads_see_the_state_before_the_commit_they_were_offered_for(
    store: ProjectionStore,
) -> None:
    primed = PrimedReads(store.con.cursor)
    assert primed.take() is None  # nothing offered: the read begins its own transaction
    before = _count(store.con)
    with store.transaction() as con:
        con.execute("INSERT INTO settings VALUES ('x', '1')")
        primed.offer()  # reads came since the last offer (the take above)
    taken = primed.take()
    assert taken is not None
    assert _count(taken) == before  # begun before the COMMIT: the batch before
    assert _count(store.con) == before + 1
    left = primed.withdraw()
    assert len(left) == read_transactions.PRIMED_READS - 1 and taken not in left
    assert primed.take() is None  # withdrawn: none left after the commit
    for cursor in [taken, *left]:
        cursor.close()
    store.close()


def test_after_the_commit_renewed_reads_see_it_and_replace_the_ones_begun_before(
    store: ProjectionStore,
) -> None:
    primed = PrimedReads(store.con.cursor)
    primed.take()
    before = _count(store.con)
    with store.transaction() as con:
        con.execute("INSERT INTO settings VALUES ('x', '1')")
        assert primed.offer() == []  # nothing primed before this commit
    replaced = primed.renew()
    assert len(replaced) == read_transactions.PRIMED_READS  # the ones begun before the commit
    assert all(_count(cursor) == before for cursor in replaced)
    taken = primed.take()
    assert taken is not None and _count(taken) == before + 1  # begun after: the batch
    left = primed.withdraw()
    assert len(left) == read_transactions.PRIMED_READS - 1
    assert primed.renew() == []  # withdrawn: nothing to replace
    for cursor in [*replaced, taken, *left]:
        cursor.close()
    store.close()


def test_no_reads_since_the_last_commit_means_no_primed_transactions(
    store: ProjectionStore,
) -> None:
    primed = PrimedReads(store.con.cursor)
    primed.offer()
    assert primed.renew() == []  # nothing before the commit, nothing after it
    assert primed.withdraw() == []
    primed.take()
    primed.offer()
    assert len(primed.withdraw()) == read_transactions.PRIMED_READS
    primed.offer()  # no read since the offer before
    assert primed.renew() == []
    assert primed.withdraw() == []
    store.close()


def test_the_store_enters_its_commit_hook_around_each_commit_only(db_path: Path) -> None:
    seen: list[tuple[str, int]] = []
    watcher: list[duckdb.DuckDBPyConnection] = []

    class Hook:
        def __enter__(self) -> None:
            if watcher:  # opening the store commits its own metadata first
                seen.append(("enter", _count(watcher[0])))

        def __exit__(self, *exc: object) -> None:
            if watcher:
                seen.append(("exit", _count(watcher[0])))

    store = ProjectionStore(db_path, around_commit=Hook)
    watcher.append(store.con.cursor())
    with store.transaction() as con:
        con.execute("INSERT INTO settings VALUES ('x', '1')")
    assert seen == [("enter", 0), ("exit", 1)]  # the COMMIT ran inside it
    with pytest.raises(RuntimeError), store.transaction() as con:
        con.execute("INSERT INTO settings VALUES ('y', '1')")
        raise RuntimeError("rolled back")
    assert len(seen) == 2  # a rollback does not commit
    store.close()
