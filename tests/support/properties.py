"""How many examples the slower property tests run: a CI-sized count, scaled for a longer
local run with PROFILE_ENGINE_PROPERTY_SCALE=10 pytest ... (CI: 1)."""

from __future__ import annotations

import os

SCALE = float(os.environ.get("PROFILE_ENGINE_PROPERTY_SCALE") or 1)


def examples(count: int) -> int:
    """``count`` property-test examples, times PROFILE_ENGINE_PROPERTY_SCALE."""
    return max(1, round(count * SCALE))
