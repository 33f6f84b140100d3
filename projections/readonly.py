"""Opening the projection database for queries, with one-line errors a user can act on.

DuckDB lets one process open a database file for writing, or any number of processes open it
read-only, never both: while `profile-engine consume` (or a fold) holds the file, every other
open fails with a lock error. Query commands open read-only so DuckDB itself refuses writes,
and sandboxed (projections.connection.sandbox) so no query reaches another file, the network
or an extension.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb

from profile_engine.crypto import KeyRing
from projections.connection import (
    DatabaseBusy,
    ProjectionLock,
    ProjectionUnavailable,
    connect,
    duckdb_errors,
    sandbox,
)
from projections.store import ProjectionConfigError, check_schema_version

__all__ = [
    "DatabaseBusy",
    "ProjectionUnavailable",
    "missing_views",
    "open_readonly",
    "open_writable",
    "read_projection",
    "write_projection",
]

QUERY_VIEWS = ("profile_reachability", "reachability_counts", "identifier_status")

T = TypeVar("T")


def open_readonly(db_path: str, ring: KeyRing | None = None) -> duckdb.DuckDBPyConnection:
    """A read-only, sandboxed connection to an existing projection that has the query views.

    With ``ring`` and a keyed projection, the connection also has ``pe_open``/``pe_reveal``
    and the ``*_plain`` views (projections.sealed.register_sql), made before the sandbox."""
    if not Path(db_path).is_file():
        raise ProjectionUnavailable(f"no projection database at {db_path} (fold events first)")
    con = connect(db_path, read_only=True)
    try:
        if ring is not None:
            from projections.sealed import reading_keys, register_sql

            with duckdb_errors(db_path):
                if reading_keys(con, ring) is not None:
                    register_sql(con, ring)
        sandbox(con)
        check_schema_version(con, db_path)
    except ProjectionConfigError as error:
        con.close()
        raise ProjectionUnavailable(str(error)) from None
    except BaseException:
        con.close()
        raise
    missing = missing_views(con)
    if missing:
        con.close()
        raise ProjectionUnavailable(
            f"{db_path} has no query views ({', '.join(missing)}); "
            "run a fold or `profile-engine consume` on it once to install them"
        )
    return con


def open_writable(db_path: str) -> duckdb.DuckDBPyConnection:
    """A read-write, sandboxed connection to an existing projection (for settings changes)."""
    if not Path(db_path).is_file():
        raise ProjectionUnavailable(f"no projection database at {db_path} (fold events first)")
    con = connect(db_path, read_only=False)
    if not _has_table(con, "settings"):
        con.close()
        raise ProjectionUnavailable(f"{db_path} is not a profile-engine projection")
    try:
        sandbox(con)
    except BaseException:
        con.close()
        raise
    return con


def read_projection(
    db_path: str, work: Callable[[duckdb.DuckDBPyConnection], T], ring: KeyRing | None = None
) -> T:
    """``work`` on a read-only sandboxed connection; DuckDB failures become error kinds."""
    con = open_readonly(db_path, ring)
    try:
        with duckdb_errors(db_path):
            return work(con)
    finally:
        con.close()


def write_projection(db_path: str, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    """``work`` on a writable sandboxed connection; DuckDB failures become error kinds.

    Holds the projection's lock meanwhile: a running consume or rebuild refuses the change
    (a rebuild would otherwise swap in a file without it)."""
    with ProjectionLock(db_path, "a settings change"):
        con = open_writable(db_path)
        try:
            with duckdb_errors(db_path):
                return work(con)
        finally:
            con.close()


def missing_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal AND schema_name = 'main'"
    ).fetchall()
    present = {row[0] for row in rows}
    return [name for name in QUERY_VIEWS if name not in present]


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ?",
        [name],
    ).fetchone()
    return bool(row and row[0])
