"""Build a projection beside the live one and swap it in atomically; who holds a projection.

A rebuild writes ``<db>.rebuild`` and renames it over ``<db>`` only when it succeeded, so
readers keep the old file until then and a failed rebuild leaves it untouched. Settings are
user configuration, not derived from the log: they are carried over, with the identity limits
and the topic the projection was built from.

``ProjectionLock`` is an advisory lock on ``<db>.lock`` taken by every process that writes a
projection for a while (consume, serve, rebuild) or changes its settings, so that a rebuild
cannot swap a file from under a running consumer, a consumer cannot start on a file that a
rebuild is about to replace, and a setting cannot be lost to a swap.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from profile_engine.fold import FoldConfig
from projections.connection import DatabaseBusy, connect
from projections.store import ProjectionStore


def _companion(db_path: Path, suffix: str) -> Path:
    return db_path.with_name(db_path.name + suffix)


class ProjectionLock:
    """An exclusive advisory lock on a projection, naming its holder in refusals."""

    def __init__(self, db_path: str | Path, purpose: str) -> None:
        self.path = _companion(Path(db_path), ".lock")
        self.db_path = str(db_path)
        self.purpose = purpose
        self._handle: IO[str] | None = None

    def acquire(self) -> ProjectionLock:
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DatabaseBusy(
                f"{self.db_path} is in use by {holder}; {self.purpose} has to wait until it stops"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"`profile-engine {self.purpose}` (pid {os.getpid()})")
        handle.flush()
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


@dataclass
class UserState:
    """What a projection holds that the log does not: carried over by a rebuild."""

    settings: list[tuple[str, str]] = field(default_factory=list)
    id_limits: FoldConfig | None = None
    source_topic: str | None = None


def read_user_state(db_path: Path) -> UserState:
    if not db_path.exists():
        return UserState()
    con = connect(db_path, read_only=True)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        state = UserState()
        if "settings" in tables:
            rows = con.execute("SELECT key, value FROM settings").fetchall()
            state.settings = [(str(k), str(v)) for k, v in rows]
        if "projection_meta" in tables:
            meta = dict(con.execute("SELECT key, value FROM projection_meta").fetchall())
            if "id_limits" in meta:
                state.id_limits = FoldConfig(id_limits=json.loads(meta["id_limits"]))
            state.source_topic = meta.get("source_topic")
        return state
    finally:
        con.close()


def _remove_db(path: Path) -> None:
    for candidate in (path, _companion(path, ".wal")):
        candidate.unlink(missing_ok=True)


@contextmanager
def scratch_projection(
    db_path: str, config: FoldConfig | None, topic: str | None, user: UserState
) -> Iterator[ProjectionStore]:
    """A fresh projection beside ``db_path``, swapped over it only if the body succeeds.

    The lookup indexes are built once at the end: cheaper than maintaining them per batch,
    and nobody reads the scratch file meanwhile.
    """
    target = Path(db_path)
    scratch = _companion(target, ".rebuild")
    _remove_db(scratch)
    store = ProjectionStore(scratch)
    try:
        store.add_settings_rows(user.settings)
        store.fold_config(config or user.id_limits)
        if topic is not None:
            store.check_source(topic, replace=True)
        store.drop_indexes()
        yield store
        store.create_indexes()
        store.con.execute("CHECKPOINT")
    except BaseException:
        store.close()
        _remove_db(scratch)
        raise
    store.close()
    os.replace(scratch, target)
    _companion(target, ".wal").unlink(missing_ok=True)
