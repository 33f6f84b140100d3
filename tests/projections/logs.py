"""Hand-made logs for the query tests: raw producer-format events folded into a DuckDB file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from profile_engine.contract import parse_event
from tests.support.folding import fold_into_db

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def fold(db_path: Path, *raw_events: dict[str, Any]) -> None:
    """Fold events in the given order; event i gets id e000i and time T0 + i minutes,
    unless the raw event gives its own."""
    events = []
    for number, raw in enumerate(raw_events, start=1):
        stamped = {
            "event_id": f"e{number:04d}",
            "timestamp": (T0 + timedelta(minutes=number)).isoformat(),
            **raw,
        }
        events.append(parse_event(stamped))
    fold_into_db(db_path, events)
