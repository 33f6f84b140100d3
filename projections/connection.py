"""Opening DuckDB files, with DuckDB's failures translated into the project's error kinds.

DuckDB lets one process open a database file for writing, or any number of processes open it
read-only, never both: while a fold holds the file, every other open fails with a lock error,
which becomes ``DatabaseBusy`` (transient) here; other open failures need an operator.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from profile_engine.errors import BadInput, NeedsOperator, Transient, first_line


class ProjectionUnavailable(NeedsOperator):
    """The database cannot be opened or queried as asked; str() is one line for the user."""


class DatabaseBusy(Transient):
    """Another process holds the database for writing; retry when it lets go."""


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


def connect(db_path: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection to ``db_path``; DatabaseBusy or ProjectionUnavailable when it cannot open."""
    path = str(db_path)
    try:
        con = duckdb.connect(path, read_only=read_only)
    except duckdb.Error as error:
        message = describe_lock_error(path, error)
        if message is not None:
            raise DatabaseBusy(message) from error
        raise ProjectionUnavailable(f"cannot open {path}: {first_line(error)}") from error
    # DuckDB's own progress bar would interleave with JSON/CSV written to stdout.
    con.execute("SET enable_progress_bar = false")
    return con


class DataRejected(BadInput):
    """The database (or Arrow, on the way in) refused a value of the batch."""


class StorageFailed(NeedsOperator):
    """The database file cannot be written (a full disk, a read-only file system)."""


_DATA_ERRORS = (
    duckdb.ConversionException,
    duckdb.InvalidInputException,
    duckdb.OutOfRangeException,
    duckdb.ConstraintException,
    duckdb.TypeMismatchException,
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    OverflowError,
    UnicodeError,
)


@contextmanager
def write_errors(db_path: str) -> Iterator[None]:
    """Translate what can go wrong while a batch is written into the project's kinds."""
    try:
        yield
    except _DATA_ERRORS as error:
        raise DataRejected(f"the database refused a value: {first_line(error)}") from error
    except (duckdb.IOException, OSError) as error:
        text = first_line(error)
        hint = (
            "free some space and run the command again"
            if "space" in text.lower()
            else "check the file and its directory"
        )
        raise StorageFailed(
            f"cannot write {db_path}: {text}; nothing of the batch was kept, {hint} "
            "(the fold resumes where it stopped)"
        ) from error
