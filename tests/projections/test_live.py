"""The live projection: one instance shared by a writer and readers, and the server's reads."""

from __future__ import annotations

import csv
import io
import json
import threading
import uuid
from pathlib import Path

import duckdb
import pytest

from profile_engine.batch_fold import BatchFold, prepare
from profile_engine.errors import BadInput
from projections import live, queries
from projections.connection import ProjectionUnavailable
from projections.live import LiveProjection
from projections.settings import set_setting
from projections.store import ProjectionStore
from tests.projections.logs import fold

ANN = {"customer_id": "C1", "email": "Ann@Example.com"}


@pytest.fixture
def projection(db_path: Path) -> LiveProjection:
    fold(
        db_path,
        {"type": "identify", "identifiers": ANN, "traits": {"first_name": "Ann",
                                                            "last_name": "Lee"}},
        {"type": "track", "identifiers": {"customer_id": "C1"}, "event": "page_viewed"},
        {"type": "track", "identifiers": {"customer_id": "C1"}, "event": "purchase",
         "properties": {"order_id": "o1", "revenue": 10.0}},
        {"type": "consent", "identifiers": {"email": "ann@example.com"}, "channel": "email",
         "status": "opted_in"},
        {"type": "identify", "identifiers": {"phone": "(415) 555-2671"},
         "traits": {"first_name": "Bob"}},
        {"type": "identify", "identifiers": {"anonymous_id": "anon-3"}},
    )  # fmt: skip
    return LiveProjection(db_path)


def test_readers_see_the_last_committed_write_of_the_shared_instance(
    projection: LiveProjection,
) -> None:
    writer = projection.connection
    writer.execute("BEGIN TRANSACTION")
    writer.execute("DELETE FROM profiles")
    with projection.reading() as con:
        assert con.execute("SELECT count(*) FROM profiles").fetchone() == (3,)
    writer.execute("COMMIT")
    with projection.reading() as con:
        assert con.execute("SELECT count(*) FROM profiles").fetchone() == (0,)
    projection.close()


def test_a_reader_cannot_write_even_past_the_statement_check(projection: LiveProjection) -> None:
    with pytest.raises(ProjectionUnavailable, match="read-only"), projection.reading() as con:
        con.execute("DELETE FROM profiles")
    with projection.reading() as con:
        assert con.execute("SELECT count(*) FROM profiles").fetchone() == (3,)
    projection.close()


def test_the_instance_reaches_no_files_and_cannot_be_unlocked(
    projection: LiveProjection, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("nope")
    with pytest.raises(ProjectionUnavailable, match="disabled"), projection.reading() as con:
        con.execute(f"SELECT * FROM read_text('{secret}')")
    with pytest.raises(duckdb.Error, match="configuration"):
        projection.connection.execute("SET enable_external_access = true")
    projection.close()


def test_the_fold_writes_through_the_shared_connection_while_readers_read(
    projection: LiveProjection,
) -> None:
    store = ProjectionStore(projection.db_path, con=projection.connection)
    config = store.fold_config(None)
    counts: list[int] = []

    def read() -> None:
        for _ in range(20):
            with projection.reading() as con:
                counts.append(int(con.execute("SELECT count(*) FROM profiles").fetchone()[0]))  # type: ignore[index]

    reader = threading.Thread(target=read)
    reader.start()
    from tests.profile_engine.builders import identify

    for minute in range(5):
        batch = [prepare(identify(minute, email=f"new{minute}@example.com"))]
        fold = BatchFold(config, store.stored_world(batch, config))
        fold.fold(batch[0])
        store.commit_batch(fold.finish())
    reader.join()
    assert counts == sorted(counts) and set(counts) <= set(range(3, 9))
    with projection.reading() as con:
        assert con.execute("SELECT count(*) FROM profiles").fetchone() == (8,)
    projection.close()


# -- search -----------------------------------------------------------------------------------


def test_search_by_any_identifier_name_or_id_prefix_in_any_case(
    projection: LiveProjection,
) -> None:
    with projection.reading() as con:

        def first_names(q: str) -> list[str | None]:
            return [p["first_name"] for p in live.search_profiles(con, q).profiles]

        assert first_names("ANN@") == ["Ann"]
        assert first_names("ann l") == ["Ann"]
        assert first_names("(415) 555") == ["Bob"]
        assert first_names("anon-") == [None]
        pid = live.search_profiles(con, "c1").profiles[0]["profile_id"]
        assert first_names(pid[:6].upper()) == ["Ann"]
        assert live.search_profiles(con, "%").total == 0  # no wildcards
        everything = live.search_profiles(con, "")
        assert everything.total == 3 and everything.next_cursor is None
        first = live.search_profiles(con, "", limit=2)
        rest = live.search_profiles(con, "", limit=2, cursor=first.next_cursor)
        ids = [p["profile_id"] for p in first.profiles + rest.profiles]
        assert ids == [p["profile_id"] for p in everything.profiles]
        summary = live.search_profiles(con, "ann@").profiles[0]
        assert summary["identifiers"] == {"customer_id": "C1", "email": "ann@example.com"}
        assert (summary["order_count"], summary["revenue"]) == (1, 10.0)
        with pytest.raises(BadInput, match="cursor"):
            live.search_profiles(con, "", cursor="x")
        with pytest.raises(BadInput, match="limit"):
            live.search_profiles(con, "", limit=0)
    projection.close()


def test_timeline_pages_and_filters(projection: LiveProjection) -> None:
    with projection.reading() as con:
        pid = live.search_profiles(con, "c1").profiles[0]["profile_id"]
        page = live.timeline_page(con, pid, limit=2)
        assert page.total == 4 and page.type_counts == {"consent": 1, "identify": 1, "track": 2}
        assert [e["type"] for e in page.events] == ["consent", "track"]
        assert [e["type"] for e in live.timeline_page(con, pid, limit=2, offset=2).events] == [
            "track",
            "identify",
        ]
        tracks = live.timeline_page(con, pid, ["track"])
        assert tracks.total == 2 and {e["event_name"] for e in tracks.events} == {
            "page_viewed",
            "purchase",
        }
        assert live.timeline_page(con, pid, ["bounce"]).events == []
    projection.close()


# -- SQL and export ---------------------------------------------------------------------------


def test_sql_rows_are_limited_and_a_long_query_is_stopped(projection: LiveProjection) -> None:
    with projection.reading() as con:
        result = live.run_sql_limited(con, "SELECT * FROM range(5)", 3, timeout_s=30)
        assert (result.columns, result.rows, result.truncated) == (
            ["range"],
            [(0,), (1,), (2,)],
            True,
        )
        with pytest.raises(queries.QueryError, match=r"stopped after 0\.2 s"):
            live.run_sql_limited(
                con, "SELECT count(*) FROM range(100000000000) a", 10, timeout_s=0.2
            )
        with pytest.raises(queries.QueryError, match="read-only"):
            live.run_sql_limited(con, "DROP TABLE profiles", 10, timeout_s=30)
    projection.close()


def test_sql_rows_stop_at_the_answers_byte_budget(projection: LiveProjection) -> None:
    """400 rows of 100 kB each are 40 MB of values, past what one answer holds."""
    wide = "SELECT i, repeat('x', 100000) AS v FROM range(400) AS t(i)"
    with projection.reading() as con:
        result = live.run_sql_limited(con, wide, 1000, timeout_s=30)
    projection.close()
    assert result.truncated
    assert len(result.rows) == live.SQL_MAX_BYTES // (100_000 + 8)
    assert [row[0] for row in result.rows] == list(range(len(result.rows)))


def test_nested_values_count_toward_the_answers_byte_budget(projection: LiveProjection) -> None:
    """One row holding a list of 5M numbers is 40 MB of values (gigabytes as Python
    objects): measured before it is converted, and left out."""
    with projection.reading() as con:
        result = live.run_sql_limited(con, "SELECT list(range) FROM range(5000000)", 10, 30)
        small = live.run_sql_limited(con, "SELECT [1, 2] AS l, {'a': uuid()} AS s", 10, 30)
    projection.close()
    assert result.truncated and result.rows == []
    assert not small.truncated and small.rows[0][0] == [1, 2]
    assert isinstance(small.rows[0][1]["a"], uuid.UUID)  # the values a fetch gives


@pytest.mark.parametrize("output_format", ["csv", "json"])
def test_export_chunks_hold_the_rows_of_export(
    projection: LiveProjection, tmp_path: Path, output_format: str
) -> None:
    reference = tmp_path / f"reference.{output_format}"
    projection.close()
    con = duckdb.connect(projection.db_path, read_only=True)
    queries.export_profiles(con, str(reference), output_format, "order_count = 0")
    streamed = b"".join(live.export_chunks(con, output_format, "order_count = 0")).decode()
    con.close()
    if output_format == "csv":
        assert sorted(csv.reader(io.StringIO(streamed))) == sorted(
            csv.reader(io.StringIO(reference.read_text()))
        )
        assert streamed.splitlines()[0].startswith('"profile_id","first_seen",')
    else:

        def rows(text: str) -> list[dict[str, object]]:
            parsed = [json.loads(line) for line in text.splitlines()]
            return sorted(parsed, key=lambda row: str(row["profile_id"]))

        assert rows(streamed) == rows(reference.read_text())
    assert len(streamed.strip().splitlines()) == (3 if output_format == "csv" else 2)


def test_an_export_with_no_rows_still_has_its_csv_header(projection: LiveProjection) -> None:
    with projection.reading() as con:
        text = b"".join(live.export_chunks(con, "csv", "order_count > 99")).decode()
    assert text.count("\n") == 1 and text.startswith('"profile_id",')
    projection.close()


def test_settings_are_the_one_write_and_readers_see_it_at_once(
    projection: LiveProjection,
) -> None:
    with projection.writing_settings() as con:
        set_setting(con, "implicit_consent.sms", True)
    with projection.reading() as con:
        assert queries.counts(con, "2026-01")["channels"]["sms"]["reachable"] == 1
    projection.close()


def test_a_settings_change_is_seen_by_the_next_read_though_reads_were_primed_before_it(
    projection: LiveProjection,
) -> None:
    with projection.reading() as con:  # a read: the next commit primes transactions
        assert queries.counts(con, "2026-01")["channels"]["sms"]["reachable"] == 0
    projection.connection.execute("BEGIN TRANSACTION")
    with projection.committing():
        projection.connection.execute("COMMIT")
    with projection.writing_settings() as con:
        set_setting(con, "implicit_consent.sms", True)
    with projection.reading() as con:
        assert queries.counts(con, "2026-01")["channels"]["sms"]["reachable"] == 1
    projection.close()


def test_a_reopen_waits_for_the_reads_in_flight_and_holds_new_ones_back(
    projection: LiveProjection,
) -> None:
    inside, leave = threading.Event(), threading.Event()
    order: list[str] = []

    def long_read() -> None:
        with projection.reading() as con:
            inside.set()
            leave.wait(10)
            order.append("long read ends")
            assert con.execute("SELECT count(*) FROM profiles").fetchone() == (3,)

    def reopen() -> None:
        assert projection.reopen(wait_s=10)
        order.append("reopened")

    def late_read() -> None:
        with projection.reading() as con:
            order.append("late read")
            assert con.execute("SELECT count(*) FROM profiles").fetchone() == (3,)

    threads = [threading.Thread(target=long_read)]
    threads[0].start()
    assert inside.wait(10)
    threads.append(threading.Thread(target=reopen))
    threads[1].start()
    while not projection._gate._shut:  # the reopen is waiting at the gate
        threading.Event().wait(0.01)
    threads.append(threading.Thread(target=late_read))
    threads[2].start()
    threads[2].join(0.3)
    assert order == []  # the late reader waits behind the reopen, the reopen behind the read
    leave.set()
    for thread in threads:
        thread.join(10)
    assert order == ["long read ends", "reopened", "late read"]
    assert projection.memory.reopens == 1
    projection.close()


def test_a_reopen_gives_way_to_a_read_that_outlasts_its_wait(projection: LiveProjection) -> None:
    inside, leave = threading.Event(), threading.Event()

    def long_read() -> None:
        with projection.reading():
            inside.set()
            leave.wait(10)

    reader = threading.Thread(target=long_read)
    reader.start()
    assert inside.wait(10)
    before = projection.connection
    assert not projection.reopen(wait_s=0.2)
    with projection.reading() as con:  # the gate is open again: others still read
        assert con.execute("SELECT count(*) FROM profiles").fetchone() == (3,)
    leave.set()
    reader.join(10)
    assert projection.connection is before and projection.memory.reopens == 0
    projection.close()


def test_reads_arriving_during_a_commit_read_the_batch_before_it(
    projection: LiveProjection,
) -> None:
    writer = projection.connection

    def profiles() -> int:
        with projection.reading() as con:
            return int(con.execute("SELECT count(*) FROM profiles").fetchone()[0])  # type: ignore[index]

    def delete_one() -> None:
        writer.execute("BEGIN TRANSACTION")
        writer.execute(
            "DELETE FROM profiles WHERE profile_id IN (SELECT profile_id FROM profiles LIMIT 1)"
        )

    assert profiles() == 3
    delete_one()
    with projection.committing():
        writer.execute("COMMIT")
        # A read now takes a transaction begun before the COMMIT: the committed batch is
        # not in it yet, as for a read that came a moment earlier.
        assert profiles() == 3
    assert profiles() == 2
    delete_one()
    with projection.committing():
        writer.execute("COMMIT")  # nobody reads during this one
    # No read since the last commit: this one runs with no transaction beside it, and a
    # read during it begins its own, which sees it.
    delete_one()
    with projection.committing():
        writer.execute("COMMIT")
        assert profiles() == 0
    projection.close()
