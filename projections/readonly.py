"""Opening the projection database for queries, with one-line errors a user can act on.

DuckDB lets one process open a database file for writing, or any number of processes open it
read-only, never both: while `profile-engine consume` (or a fold) holds the file, every other
open fails with a lock error. Query commands open read-only so DuckDB itself refuses writes.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from projections.store import ProjectionConfigError, check_schema_version

QUERY_VIEWS = ("profile_reachability", "reachability_counts", "identifier_status")


class ProjectionUnavailable(Exception):
    """The database cannot be opened or queried as asked; str() is one line for the user."""


def open_readonly(db_path: str) -> duckdb.DuckDBPyConnection:
    """A read-only connection to an existing projection that has the query views."""
    if not Path(db_path).is_file():
        raise ProjectionUnavailable(f"no projection database at {db_path} (fold events first)")
    con = _connect(db_path, read_only=True)
    try:
        check_schema_version(con, db_path)
    except ProjectionConfigError as error:
        con.close()
        raise ProjectionUnavailable(str(error)) from None
    missing = missing_views(con)
    if missing:
        con.close()
        raise ProjectionUnavailable(
            f"{db_path} has no query views ({', '.join(missing)}); "
            "run a fold or `profile-engine consume` on it once to install them"
        )
    return con


def open_writable(db_path: str) -> duckdb.DuckDBPyConnection:
    """A read-write connection to an existing projection (for settings changes)."""
    if not Path(db_path).is_file():
        raise ProjectionUnavailable(f"no projection database at {db_path} (fold events first)")
    con = _connect(db_path, read_only=False)
    if not _has_table(con, "settings"):
        con.close()
        raise ProjectionUnavailable(f"{db_path} is not a profile-engine projection")
    return con


def missing_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal AND schema_name = 'main'"
    ).fetchall()
    present = {row[0] for row in rows}
    return [name for name in QUERY_VIEWS if name not in present]


def describe_lock_error(db_path: str, error: BaseException) -> str | None:
    """The one-line explanation of a DuckDB lock conflict, or None for other errors."""
    text = str(error)
    if "Could not set lock" not in text and "Conflicting lock" not in text:
        return None
    holder = re.search(r"\(PID (\d+)\)", text)
    who = f"process {holder.group(1)}" if holder else "another process"
    return (
        f"{db_path} is locked by {who}, which holds it for writing (DuckDB allows one "
        "writing process and no readers beside it); stop `profile-engine consume` or wait "
        "for the fold to finish, then retry"
    )


def _connect(db_path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        con = duckdb.connect(db_path, read_only=read_only)
    except duckdb.Error as error:
        message = describe_lock_error(db_path, error)
        if message is None:
            first_line = str(error).strip().splitlines()[0]
            message = f"cannot open {db_path}: {first_line}"
        raise ProjectionUnavailable(message) from error
    # DuckDB's own progress bar would interleave with JSON/CSV written to stdout.
    con.execute("SET enable_progress_bar = false")
    return con


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = ?",
        [name],
    ).fetchone()
    return bool(row and row[0])
