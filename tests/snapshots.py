"""Whole-projection snapshots, to compare two databases table by table."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb

# Every table the log determines (settings are user configuration, not derived).
DERIVED_TABLES = (
    "profiles",
    "identifiers",
    "traits",
    "trait_tombstones",
    "subscriptions",
    "orders",
    "profile_merges",
    "identity_conflicts",
    "events",
    "applied_events",
    "dead_letters",
    "consumer_offsets",
    "profile_reachability_inputs",
    "reachability_input_tally",
)


def dump(db: Path, tables: Iterable[str] = DERIVED_TABLES) -> dict[str, list[tuple[Any, ...]]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in tables}
