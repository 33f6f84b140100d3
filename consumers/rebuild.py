"""`rebuild`: fresh projections from the start of the log (or a file), swapped in atomically.

The same pipeline as `consume`, into a scratch projection beside the live one (see
projections/scratch.py); the live file serves readers until the swap. A rebuild holds the
projection's lock for its whole run, so no consumer folds into a file that is about to be
replaced and no setting is lost to the swap.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from consumers.key_store import KeyStore, SealingConfig
from consumers.pipeline import (
    DEFAULT_BATCH_SIZE,
    FoldStats,
    Pipeline,
    PipelineOptions,
    ProgressCallback,
    Source,
)
from consumers.reader import ReadPlan
from consumers.sources import FileSource, KafkaSource
from profile_engine.attributes import AttributeRegistry
from profile_engine.errors import BadInput
from profile_engine.fold import FoldConfig
from profile_engine.rules import EventTimePolicy
from projections.connection import ProjectionLock
from projections.scratch import read_user_state, scratch_projection
from projections.store import ProjectionConfigError
from projections.typed_traits import refresh_typed_traits_view


def _rebuild(
    db_path: str,
    source_for: Callable[[EventTimePolicy], Source],
    topic: str | None,
    *,
    batch_size: int,
    progress: ProgressCallback | None,
    config: FoldConfig | None,
    registry: AttributeRegistry | None,
    force: bool,
    time_policy: EventTimePolicy | None,
    sealing: SealingConfig | None = None,
) -> FoldStats:
    from projections.sealed import check_keying

    with ProjectionLock(db_path, "rebuild"):
        user = read_user_state(Path(db_path))
        if topic is not None and user.source_topic not in (None, topic) and not force:
            raise ProjectionConfigError(
                f"{db_path} was built from topic {user.source_topic!r}; rebuilding it from "
                f"{topic!r} replaces it: add --force to do so"
            )
        with scratch_projection(db_path, config, topic, user, time_policy) as store:
            if registry is not None:
                refresh_typed_traits_view(store.con, registry)
            fold_config = store.fold_config(None)
            check_keying(store, None if sealing is None else sealing.ring)
            # Erasures replayed by a rebuild destroy the keys again (a key store restored from
            # a backup older than an erasure forgets the person again).
            keys = None
            if sealing is not None:
                keys = KeyStore(sealing.bootstrap_servers, sealing.key_topic).attach()
            options = PipelineOptions(
                batch_size=batch_size, max_wait_s=None, progress=progress, key_eraser=keys
            )
            pipeline = Pipeline(store, fold_config, options)
            try:
                return pipeline.run(source_for(store.time_policy(None)))
            finally:
                if keys is not None:
                    keys.close()


def rebuild_from_kafka(
    db_path: str,
    bootstrap_servers: str,
    topic: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
    config: FoldConfig | None = None,
    registry: AttributeRegistry | None = None,
    force: bool = False,
    time_policy: EventTimePolicy | None = None,
    sealing: SealingConfig | None = None,
) -> FoldStats:
    def source_for(policy: EventTimePolicy) -> Source:
        # A rebuild re-reads dead letters too; they are already on the dead-letter topic.
        plan = ReadPlan(bootstrap_servers, topic, {}, True, time_policy=policy, sealing=sealing)
        return KafkaSource(plan)

    return _rebuild(
        db_path, source_for, topic, batch_size=batch_size, progress=progress,
        config=config, registry=registry, force=force, time_policy=time_policy,
        sealing=sealing,
    )  # fmt: skip


def rebuild_from_file(
    db_path: str,
    file_path: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressCallback | None = None,
    config: FoldConfig | None = None,
    registry: AttributeRegistry | None = None,
    time_policy: EventTimePolicy | None = None,
    sealing: SealingConfig | None = None,
) -> FoldStats:
    """``sealing``: a keyed rebuild; sealed archive records are opened with the key store on
    Kafka (an archive never holds keys, so it forgets erased people with the log)."""
    source = Path(file_path)
    if not source.is_file():
        raise BadInput(f"no such file: {file_path}")
    return _rebuild(
        db_path, lambda policy: FileSource(source, policy, sealing=sealing), None,
        batch_size=batch_size, progress=progress, config=config, registry=registry,
        force=True, time_policy=time_policy, sealing=sealing,
    )  # fmt: skip
