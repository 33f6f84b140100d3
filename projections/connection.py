"""Opening DuckDB files, sandboxing them, and translating DuckDB's failures into error kinds.

DuckDB lets one process open a database file for writing, or any number of processes open it
read-only, never both: while a fold holds the file, every other open fails with a lock error,
which becomes ``DatabaseBusy`` (transient) here; other open failures need an operator.

**The sandbox.** SQL from users (``sql``, ``export --where``, the HTTP API) runs on a DuckDB
instance that cannot reach anything but its own database: no other file, no network, no
extension install or load, and no setting can be changed back (see DuckDB's "Securing DuckDB").
The settings belong to the database *instance*, so every cursor of a sandboxed connection is
sandboxed too, and a writer can share the instance with its readers: the database's own file,
WAL and ``.tmp`` spill directory stay allowed, as do Arrow tables registered from Python, DML
and CHECKPOINT. What DuckDB's settings cannot refuse (a statement that writes to the database
itself) is refused by the statement checks of ``projections.sql_checks`` before it runs.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

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
    pid = holder.group(1) if holder else None
    ours, _ = lock_holder(db_path)
    if ours is not None and pid is not None and f"(pid {pid})" in ours:
        what = ours.split("`")[1] if ours.count("`") >= 2 else ours
        return (
            f"{db_path} is locked by {ours}, which holds it for writing (DuckDB allows one "
            f"writing process and no readers beside it); stop `{what}` or wait for it to "
            "finish, then retry"
        )
    who = f"process {pid}" if pid else "another process"
    return (
        f"{db_path} is locked by {who}, which holds it for writing (DuckDB allows one "
        "writing process and no readers beside it); stop it or wait for it to finish, then "
        "retry"
    )


def lock_holder(db_path: str | Path) -> tuple[str | None, dict[str, str]]:
    """Who holds ``<db>.lock`` (``ProjectionLock``): its one-line description and the details
    it recorded (the topic and consumer group of a consumer), or (None, {}) when no one."""
    try:
        text = _companion(Path(db_path), ".lock").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None, {}
    first, _, rest = text.strip().partition("\n")
    try:
        details = json.loads(rest) if rest else {}
    except json.JSONDecodeError:
        details = {}
    if not isinstance(details, dict):
        details = {}
    return (first or None), {str(k): str(v) for k, v in details.items()}


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


class MemoryExhausted(NeedsOperator):
    """DuckDB needed more memory than its limit (PROFILE_ENGINE_DUCKDB_MEMORY) allows."""


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


def _out_of_memory(error: BaseException) -> bool:
    """DuckDB ran out of its limit: an OutOfMemoryException, or a commit that could not
    allocate (changing an index), which fails as a transaction error or as a fatal one that
    invalidates the instance."""
    if isinstance(error, duckdb.OutOfMemoryException):
        return True
    text = str(error)
    return isinstance(error, duckdb.Error) and (
        "could not allocate" in text or "Out of Memory" in text
    )


@contextmanager
def write_errors(db_path: str) -> Iterator[None]:
    """Translate what can go wrong while a batch is written into the project's kinds."""
    try:
        yield
    except _DATA_ERRORS as error:
        raise DataRejected(f"the database refused a value: {first_line(error)}") from error
    except (duckdb.Error, OSError) as error:
        if _out_of_memory(error):
            raise MemoryExhausted(
                f"{db_path} needed more memory than DuckDB's limit ({first_line(error)}); "
                "nothing of the batch was kept: raise PROFILE_ENGINE_DUCKDB_MEMORY (for example "
                "2GB) and run the command again"
            ) from error
        text = first_line(error)
        storage = isinstance(error, duckdb.IOException | OSError) or any(
            sign in text for sign in ("No space left", "Could not write", "Read-only file system")
        )
        if not storage:
            raise
        hint = (
            "free some space and run the command again"
            if "space" in text.lower()
            else "check the file and its directory"
        )
        raise StorageFailed(
            f"cannot write {db_path}: {text}; nothing of the batch was kept, {hint} "
            "(the fold resumes where it stopped)"
        ) from error


# Applied in this order; lock_configuration comes last because it also freezes itself.
SANDBOX_SETTINGS: tuple[tuple[str, str], ...] = (
    # No file but the database's own (read_text, read_csv, glob, COPY, ATTACH, EXPORT), no
    # network (httpfs URLs), no extension loaded from disk, no Python replacement scans.
    ("enable_external_access", "false"),
    # INSTALL/LOAD would fetch or load code; autoloading would do it behind a query's back.
    ("autoinstall_known_extensions", "false"),
    ("autoload_known_extensions", "false"),
    ("allow_community_extensions", "false"),
    # Every later SET/RESET/PRAGMA setter fails, so nothing above can be turned back on.
    ("lock_configuration", "true"),
)


def sandbox(con: duckdb.DuckDBPyConnection) -> None:
    """Shut the DuckDB instance of ``con`` in: its own database files, nothing else, for good.

    Call it after the settings the owner needs (memory limit, checkpoint threshold): nothing
    can be changed afterwards. Idempotent; ProjectionUnavailable when the instance was locked
    without the sandbox (nothing could make it safe then).
    """
    if is_sandboxed(con):
        return
    try:
        for name, value in SANDBOX_SETTINGS:
            con.execute(f"SET GLOBAL {name} = {value}")
    except duckdb.Error as error:
        raise ProjectionUnavailable(f"cannot sandbox the database: {first_line(error)}") from None
    if not is_sandboxed(con):  # pragma: no cover - DuckDB ignored a setting it accepted
        raise ProjectionUnavailable("cannot sandbox the database: a setting did not hold")


def is_sandboxed(con: duckdb.DuckDBPyConnection) -> bool:
    """True when every sandbox setting holds on the instance of ``con``."""
    names = [name for name, _ in SANDBOX_SETTINGS]
    rows = con.execute(
        "SELECT name, lower(value) FROM duckdb_settings() WHERE list_contains(?, name)", [names]
    ).fetchall()
    current = dict(rows)
    return all(current.get(name) == value for name, value in SANDBOX_SETTINGS)


@contextmanager
def duckdb_errors(db_path: str | Path) -> Iterator[None]:
    """DuckDB failures inside the block become DatabaseBusy or ProjectionUnavailable."""
    try:
        yield
    except duckdb.Error as error:
        message = describe_lock_error(str(db_path), error)
        if message is not None:
            raise DatabaseBusy(message) from error
        raise ProjectionUnavailable(f"{db_path}: {first_line(error)}") from error


def _companion(db_path: Path, suffix: str) -> Path:
    return db_path.with_name(db_path.name + suffix)


class ProjectionLock:
    """An exclusive advisory lock on ``<db>.lock``, naming its holder in refusals.

    Taken by every process that writes a projection for a while (consume, serve, rebuild) or
    changes its settings, so that a rebuild cannot swap a file from under a running consumer,
    a consumer cannot start on a file a rebuild is about to replace, and a setting cannot be
    lost to a swap.
    """

    def __init__(
        self, db_path: str | Path, purpose: str, details: Mapping[str, str] | None = None
    ) -> None:
        """``details``: recorded beside the holder's name for others to read (lock_holder)."""
        self.path = _companion(Path(db_path), ".lock")
        self.db_path = str(db_path)
        self.purpose = purpose
        self.details = dict(details or {})
        self._handle: IO[str] | None = None

    def acquire(self) -> ProjectionLock:
        try:
            handle = self.path.open("a+")
        except OSError as error:  # no such folder, no permission: the database cannot be there
            raise ProjectionUnavailable(
                f"cannot use {self.db_path}: {error.strerror or error} ({self.path})"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip().partition("\n")[0] or "another process"
            handle.close()
            raise DatabaseBusy(
                f"{self.db_path} is in use by {holder}; {self.purpose} has to wait until it stops"
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"`profile-engine {self.purpose}` (pid {os.getpid()})")
            if self.details:
                handle.write("\n" + json.dumps(self.details))
            handle.flush()
        except OSError as error:  # a full disk: nothing of the database can be written either
            handle.close()
            raise ProjectionUnavailable(
                f"cannot use {self.db_path}: {error.strerror or error} ({self.path})"
            ) from None
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> ProjectionLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, **tables: pa.Table) -> Iterator[None]:
    """Arrow tables visible to ``con``'s statements by name for the block, then unregistered."""
    for name, table in tables.items():
        con.register(name, table)
    try:
        yield
    finally:
        for name in tables:
            # After a failed statement the transaction refuses everything until ROLLBACK;
            # the original error matters, and the rollback drops the views anyway.
            with suppress(duckdb.Error):
                con.unregister(name)
