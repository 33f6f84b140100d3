"""DuckDB's memory limit: a bad setting and an exhausted limit are one-line operator errors."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from profile_engine.errors import ErrorKind
from projections.connection import MemoryExhausted, ProjectionUnavailable, write_errors
from projections.live import SERVE_INDEX_ENV, LiveProjection, ServedMemory, served_index_least
from projections.store import (
    INDEX_BYTES_PER_ROW,
    INDEX_ROOM,
    MemoryLimitInvalid,
    ProjectionStore,
    index_build_limit,
    memory_limit,
)
from tests.projections.logs import fold


@pytest.mark.parametrize("text", ["2GB", "512MB", "1.5GiB", " 64MiB "])
def test_a_size_is_passed_to_duckdb(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("PROFILE_ENGINE_DUCKDB_MEMORY", text)
    assert memory_limit() == text.strip()


def test_the_index_build_gets_more_than_the_fold_unless_a_limit_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROFILE_ENGINE_DUCKDB_MEMORY", raising=False)
    assert (memory_limit(), index_build_limit()) == ("640MB", "1GB")
    monkeypatch.setenv("PROFILE_ENGINE_DUCKDB_MEMORY", "300MB")
    assert (memory_limit(), index_build_limit()) == ("300MB", "300MB")


def test_a_rebuild_folds_at_the_working_limit_and_makes_room_once_its_indexes_are_built(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A rebuild folds with the indexes dropped: nothing to make room for, and a limit that
    # grew with the tables would let DuckDB cache them in memory past the fold's bound.
    monkeypatch.delenv("PROFILE_ENGINE_DUCKDB_MEMORY", raising=False)
    with ProjectionStore(tmp_path / "p.duckdb") as store:
        store.drop_indexes()
        _insert_identifiers(store.con, 200_000)
        store.commit_batch(None)
        folding = _limit_bytes(store.con)
        store.build_indexes()
        built = _limit_bytes(store.con)
        indexes = store.con.execute("SELECT count(*) FROM duckdb_indexes()").fetchall()[0][0]
    assert folding == pytest.approx(640e6, rel=0.001)
    # identifiers has two indexes (by key and by profile)
    assert built == pytest.approx(640e6 + 2 * 200_000 * INDEX_BYTES_PER_ROW * INDEX_ROOM, rel=0.001)
    assert indexes > 0


@pytest.mark.parametrize(
    ("text", "reason"),
    [("lots", "is not a size"), ("2", "is not a size"), ("512KB", "too small"),
     ("60MiB", "too small")],
)  # fmt: skip
def test_a_bad_setting_is_refused_before_the_file_is_opened(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, reason: str
) -> None:
    monkeypatch.setenv("PROFILE_ENGINE_DUCKDB_MEMORY", text)
    with pytest.raises(MemoryLimitInvalid, match=reason) as caught:
        ProjectionStore(tmp_path / "p.duckdb")
    assert caught.value.kind is ErrorKind.NEEDS_OPERATOR
    assert not (tmp_path / "p.duckdb").exists()


def test_running_out_of_memory_while_writing_says_what_to_raise(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "p.duckdb"))
    con.execute("SET memory_limit = '16MB'")
    con.execute("SET threads = 1")
    with pytest.raises(MemoryExhausted) as caught, write_errors("p.duckdb"):
        # A sort of wide rows that cannot spill in its own memory budget.
        con.execute("SELECT list(repeat('x', 1000)) FROM range(100000)").fetchall()
    message = str(caught.value)
    assert caught.value.kind is ErrorKind.NEEDS_OPERATOR
    assert "PROFILE_ENGINE_DUCKDB_MEMORY" in message and "\n" not in message
    con.close()


def _projection_with_large_indexes(db_path: Path, identifiers: int) -> None:
    """A projection whose identifier indexes alone outgrow the smallest working limit (ART
    nodes of random 128-bit keys: about 90 bytes an identifier for the two indexes)."""
    with ProjectionStore(db_path) as store:
        store.drop_indexes()
        _insert_identifiers(store.con, identifiers)
        store.build_indexes()


def _insert_identifiers(con: duckdb.DuckDBPyConnection, count: int) -> None:
    con.execute(
        "INSERT INTO identifiers (id_key, profile_id, id_type, id_value, valid, deliverable,"
        " consent, hard_bounces, complaints, soft_bounces, consecutive_soft_bounces)"
        " SELECT gen_random_uuid(), gen_random_uuid(), 'anonymous_id', 'a' || i::VARCHAR,"
        " true, true, 'unknown', 0, 0, 0, 0 FROM range(?) AS r(i)",
        [count],
    )


def test_the_fold_keeps_working_on_a_projection_whose_indexes_outgrow_the_working_limit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # DuckDB holds an index whole in memory to change it (a batch of random keys touches
    # nearly every node block) and cannot spill it: the limit must make room for them.
    db_path = tmp_path / "p.duckdb"
    monkeypatch.delenv("PROFILE_ENGINE_DUCKDB_MEMORY", raising=False)
    _projection_with_large_indexes(db_path, 1_000_000)
    monkeypatch.setenv("PROFILE_ENGINE_DUCKDB_MEMORY", "64MiB")
    fold(
        db_path,
        *[{"type": "identify", "identifiers": {"anonymous_id": f"new-{n}"}, "traits": {"a": 1}}
          for n in range(3_000)],
    )  # fmt: skip
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        added = con.execute(
            "SELECT count(*) FROM identifiers WHERE id_value LIKE 'new-%'"
        ).fetchone()
    finally:
        con.close()
    assert added == (3_000,)


def _limit_bytes(con: duckdb.DuckDBPyConnection) -> float:
    (text,) = con.execute("SELECT current_setting('memory_limit')").fetchall()[0]
    number, unit = text.split()
    return float(number) * 1024 ** (["KiB", "MiB", "GiB", "TiB"].index(unit) + 1)


def test_a_writer_makes_room_for_its_indexes_as_the_tables_grow(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PROFILE_ENGINE_DUCKDB_MEMORY", raising=False)
    with ProjectionStore(tmp_path / "p.duckdb") as store:
        empty = _limit_bytes(store.con)
        _insert_identifiers(store.con, 200_000)
        store.commit_batch(None)
        grown = _limit_bytes(store.con)
    # identifiers has two indexes (by key and by profile)
    assert empty == pytest.approx(640e6, rel=0.001)
    assert grown == pytest.approx(640e6 + 2 * 200_000 * INDEX_BYTES_PER_ROW * INDEX_ROOM, rel=0.001)


def test_a_commit_that_cannot_hold_its_indexes_says_what_to_raise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PROFILE_ENGINE_DUCKDB_MEMORY", raising=False)
    _projection_with_large_indexes(tmp_path / "p.duckdb", 1_000_000)
    con = duckdb.connect(str(tmp_path / "p.duckdb"))
    con.execute("SET memory_limit = '64MiB'")  # no room for the indexes: a raw connection
    with pytest.raises(MemoryExhausted) as caught, write_errors("p.duckdb"):
        con.execute("BEGIN")
        con.execute("DELETE FROM identifiers WHERE id_value LIKE '%7'")
        con.execute("COMMIT")
    assert "PROFILE_ENGINE_DUCKDB_MEMORY" in str(caught.value)
    con.close()


def test_the_server_is_sized_for_a_projection_to_grow_before_its_settings_lock(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # serve cannot refit its limit in place (the sandbox locks DuckDB's settings): a new
    # projection gets room for the indexes of a few million events before it must reopen.
    monkeypatch.delenv("PROFILE_ENGINE_DUCKDB_MEMORY", raising=False)
    monkeypatch.delenv(SERVE_INDEX_ENV, raising=False)
    projection = LiveProjection(tmp_path / "p.duckdb")
    try:
        limit = _limit_bytes(projection.connection)
        memory = projection.memory
    finally:
        projection.close()
    # DuckDB shows a limit past 1 GiB with one decimal of GiB
    assert limit == pytest.approx(640e6 + 1e9, rel=0.03)
    assert (memory.limit_bytes, memory.index_room_bytes) == (640_000_000 + 10**9, 10**9)


def test_a_served_projection_whose_indexes_outgrew_its_room_reopens_with_more(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PROFILE_ENGINE_DUCKDB_MEMORY", raising=False)
    monkeypatch.setenv(SERVE_INDEX_ENV, "10MB")
    projection = LiveProjection(tmp_path / "p.duckdb")
    try:
        assert not projection.outgrown()
        _insert_identifiers(projection.connection, 200_000)  # 16 MB of reserve, two indexes
        assert projection.outgrown()
        before = projection.connection
        assert projection.reopen()
        memory = projection.memory
        reserve = 2 * 200_000 * INDEX_BYTES_PER_ROW
        assert memory == ServedMemory(640_000_000 + 2 * reserve, 2 * reserve, reserve, 1)
        assert _limit_bytes(projection.connection) == pytest.approx(memory.limit_bytes, rel=0.001)
        assert projection.connection is not before and not projection.outgrown()
        with projection.reading() as con:  # the rows, readers and the sandbox are all back
            assert con.execute("SELECT count(*) FROM identifiers").fetchone() == (200_000,)
        with pytest.raises(ProjectionUnavailable, match="disabled"), projection.reading() as con:
            con.execute("SELECT * FROM read_text('/etc/hostname')")
    finally:
        projection.close()


def test_the_served_index_room_is_a_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SERVE_INDEX_ENV, "lots")
    with pytest.raises(MemoryLimitInvalid, match=f"{SERVE_INDEX_ENV}='lots' is not a size"):
        served_index_least()
    monkeypatch.setenv(SERVE_INDEX_ENV, "2.5GB")
    assert served_index_least() == 2_500_000_000
