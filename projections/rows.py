"""How values of the fold become column values of the projection tables.

Shared by the batch writer and by the specification writer the tests compare it with, so both
spell every stored value the same way.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from profile_engine.batch_fold import timeline_payload, trait_text

__all__ = ["NEVER_US", "TIMESTAMP", "timeline_payload", "trait_text", "trait_value"]

TIMESTAMP = pa.timestamp("us")
NEVER_US = -(2**63)  # sorts below every real time: "never seen" in last-seen comparisons


def trait_value(text: str, value_type: str) -> Any:
    if value_type == "boolean":
        return text == "true"
    if value_type == "long":
        return int(text)
    if value_type == "double":
        return float(text)
    return text
