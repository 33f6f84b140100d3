"""How values of the fold become column values of the projection tables.

Shared by the batch writer and by the specification writer the tests compare it with, so both
spell every stored value the same way.
"""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa

from profile_engine.batch_fold import timeline_payload, trait_text

__all__ = [
    "NEVER_US",
    "REACHABILITY_INPUT_COLUMNS",
    "TIMESTAMP",
    "timeline_payload",
    "trait_text",
    "trait_value",
    "without_identifier",
]

TIMESTAMP = pa.timestamp("us")
NEVER_US = -(2**63)  # sorts below every real time: "never seen" in last-seen comparisons
# The columns of profile_reachability_inputs besides profile_id (also those of
# reachability_input_tally's groups and of profile_reachability_history's spans).
REACHABILITY_INPUT_COLUMNS = (
    "ccpa_opted_out, email_consent, email_soft_bounces, sms_consent, sms_soft_bounces,"
    " push_opted_in_soft_bounces, push_unknown_soft_bounces"
)


def trait_value(text: str, value_type: str) -> Any:
    if value_type == "boolean":
        return text == "true"
    if value_type == "long":
        return int(text)
    if value_type == "double":
        return float(text)
    return text


def without_identifier(payload: str, id_type: str) -> str:
    """A timeline payload without the identifier of ``id_type`` (an erasure took it from an
    event that applied to another profile)."""
    document = orjson.loads(payload)
    identifiers = document.get("identifiers")
    if isinstance(identifiers, dict):
        identifiers.pop(id_type, None)
    return orjson.dumps(document).decode()
