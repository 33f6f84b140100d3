"""Fold events into a projection file the way production does: the pipeline with a list."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from consumers.pipeline import FoldStats, Pipeline, PipelineOptions
from consumers.sources import ListSource
from profile_engine.events import ProfileEvent
from profile_engine.fold import FoldConfig
from projections.store import ProjectionStore


def fold_into_db(
    db_path: str | Path,
    events: Iterable[ProfileEvent],
    config: FoldConfig | None = None,
    batch_size: int = 10_000,
) -> FoldStats:
    """Fold ``events`` in the given order into the projection at ``db_path``."""
    with ProjectionStore(db_path) as store:
        fold_config = store.fold_config(config)
        options = PipelineOptions(batch_size=batch_size, max_wait_s=None)
        return Pipeline(store, fold_config, options).run(ListSource(events))
