"""Rebuild projections from the log (Kafka) or from a file, then swap them in atomically.

The new database is built beside the old one and renamed over it only when caught up, so
readers keep the old file until then and a failed rebuild leaves it untouched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from consumers.consumer import (
    DEFAULT_BATCH_SIZE,
    ConsumeStats,
    FoldConsumer,
    ProgressCallback,
    paused_full_gc,
)
from profile_engine.attributes import AttributeRegistry
from profile_engine.contract import ContractError, parse_event
from profile_engine.events import ProfileEvent
from profile_engine.fold import FoldConfig
from projections.store import DeadLetter, ProjectionStore
from projections.typed_traits import refresh_typed_traits_view

AVRO_CONTAINER_MAGIC = b"Obj\x01"


def _scratch_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".rebuild")


def _remove_db(path: Path) -> None:
    for candidate in (path, path.with_name(path.name + ".wal")):
        candidate.unlink(missing_ok=True)


def _copy_user_state(old: Path, store: ProjectionStore) -> None:
    """Settings are user configuration, not derived from the log: carry them over."""
    if not old.exists():
        return
    with duckdb.connect(str(old), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        rows = (
            con.execute("SELECT key, value FROM settings").fetchall()
            if "settings" in tables
            else []
        )
        limits = (
            con.execute("SELECT value FROM projection_meta WHERE key = 'id_limits'").fetchall()
            if "projection_meta" in tables
            else []
        )
    if rows:
        store.con.executemany("INSERT INTO settings VALUES (?, ?)", rows)
    if limits:
        store.fold_config(FoldConfig(id_limits=json.loads(limits[0][0])))


def _swap(scratch: Path, target: Path) -> None:
    os.replace(scratch, target)
    Path(str(target) + ".wal").unlink(missing_ok=True)


@contextmanager
def _scratch_projection(
    db_path: str, config: FoldConfig | None, registry: AttributeRegistry | None
) -> Iterator[ProjectionStore]:
    """A fresh projection beside ``db_path``, swapped over it only if the body succeeds."""
    target = Path(db_path)
    scratch = _scratch_path(target)
    _remove_db(scratch)
    store = ProjectionStore(scratch)
    try:
        _copy_user_state(target, store)
        store.fold_config(config)
        if registry is not None:
            refresh_typed_traits_view(store.con, registry)
        store.drop_indexes()  # built once at the end: cheaper than maintained per batch
        yield store
        store.create_indexes()
    except BaseException:
        store.close()
        _remove_db(scratch)
        raise
    store.close()
    _swap(scratch, target)


def rebuild_from_kafka(
    db_path: str,
    bootstrap_servers: str,
    topic: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
    config: FoldConfig | None = None,
    registry: AttributeRegistry | None = None,
) -> ConsumeStats:
    with _scratch_projection(db_path, config, registry) as store:
        # A rebuild re-reads dead letters too; they are already on the dead-letter topic.
        consumer = FoldConsumer(
            store, store.load_fold(), bootstrap_servers, topic, None, batch_size
        )
        try:
            return consumer.run(once=True, progress=progress)
        finally:
            consumer.close()


def iter_file_events(path: Path) -> Iterator[tuple[int, ProfileEvent | None, DeadLetter | None]]:
    """Events of a JSON Lines or Avro container file, with dead letters for bad entries."""
    with path.open("rb") as handle:
        is_avro = handle.read(4) == AVRO_CONTAINER_MAGIC
    if is_avro:
        from consumers.archive import iter_archive

        for number, event, error in iter_archive(path):
            letter = None
            if event is None:
                letter = DeadLetter(
                    str(path), None, None, number, None, None, error or "bad record"
                )
            yield number, event, letter
        return
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                yield number, parse_event(json.loads(raw)), None
            except (ContractError, ValueError) as error:
                reason = (
                    str(error) if isinstance(error, ContractError) else f"invalid JSON: {error}"
                )
                yield (
                    number,
                    None,
                    DeadLetter(str(path), None, None, number, None, raw.rstrip(b"\r\n"), reason),
                )


def rebuild_from_file(
    db_path: str,
    file_path: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
    config: FoldConfig | None = None,
    registry: AttributeRegistry | None = None,
) -> ConsumeStats:
    source = Path(file_path)
    if not source.is_file():
        raise FileNotFoundError(f"no such file: {file_path}")
    stats = ConsumeStats()
    with _scratch_projection(db_path, config, registry) as store, paused_full_gc() as fold_gc:
        fold = store.load_fold()
        dead: list[DeadLetter] = []
        in_batch = 0
        for _, event, letter in iter_file_events(source):
            stats.consumed += 1
            in_batch += 1
            if letter is not None:
                dead.append(letter)
                stats.dead_lettered += 1
            elif event is not None and fold.apply(event):
                stats.folded += 1
            else:
                stats.duplicates += 1
            if in_batch >= batch_size:
                store.write_batch(fold, fold.drain_changes(), (), dead)
                fold_gc.after_batch(in_batch)
                stats.batches += 1
                dead, in_batch = [], 0
                if progress:
                    progress(stats)
        store.write_batch(fold, fold.drain_changes(), (), dead)
        stats.batches += 1
        if progress:
            progress(stats)
    return stats
