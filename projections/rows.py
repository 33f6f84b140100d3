"""How values of the fold become column values of the projection tables.

Shared by the batch writer and by the specification writer the tests compare it with, so both
spell every stored value the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa

from profile_engine.batch_fold import timeline_payload, trait_text

__all__ = [
    "ARROW_STEP",
    "NEVER_US",
    "REACHABILITY_INPUT_COLUMNS",
    "TIMESTAMP",
    "arrow_array",
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


# Values converted from Python objects to Arrow at a time (see arrow_array).
ARROW_STEP = 4_096


def arrow_array(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """``pa.array(values, type_)``, converted ARROW_STEP values at a time.

    Converting Python objects is C code that holds the GIL until the last value: a batch's
    column in one call keeps the live server's readers (threads of the same process) waiting
    for all of it. Between pieces the interpreter can hand the GIL over; joining them
    (``concat_arrays``) runs without the GIL and gives the one contiguous array a single
    conversion gives, so DuckDB scans the same layout.
    """
    if len(values) <= ARROW_STEP:
        return pa.array(values, type_)
    pieces = [
        pa.array(values[start : start + ARROW_STEP], type_)
        for start in range(0, len(values), ARROW_STEP)
    ]
    return pa.concat_arrays(pieces)


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
