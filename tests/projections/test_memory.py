"""DuckDB's memory limit: a bad setting and an exhausted limit are one-line operator errors."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from profile_engine.errors import ErrorKind
from projections.connection import MemoryExhausted, write_errors
from projections.store import (
    MemoryLimitInvalid,
    ProjectionStore,
    index_build_limit,
    memory_limit,
)


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


def test_the_fold_limit_is_back_after_the_indexes_are_built(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PROFILE_ENGINE_DUCKDB_MEMORY", raising=False)
    with ProjectionStore(tmp_path / "p.duckdb") as store:
        store.drop_indexes()
        store.build_indexes()
        (limit,) = store.con.execute("SELECT current_setting('memory_limit')").fetchall()[0]
        indexes = store.con.execute("SELECT count(*) FROM duckdb_indexes()").fetchall()[0][0]
    assert limit.replace(" ", "") == "610.3MiB"  # DuckDB's spelling of 640MB
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
