"""How the batch writer turns Python values into Arrow columns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa
import pytest

from projections import rows
from projections.rows import ARROW_STEP, TIMESTAMP, arrow_array

SIZES = [0, 1, ARROW_STEP - 1, ARROW_STEP, ARROW_STEP + 1, 3 * ARROW_STEP + 5]


def _values(kind: str, size: int) -> list[Any]:
    if kind == "string":
        return [None if i % 7 == 0 else f"v{i}" for i in range(size)]
    if kind == "int64":
        return [None if i % 5 == 0 else i * 1_000_003 for i in range(size)]
    if kind == "bool":
        return [None if i % 11 == 0 else i % 2 == 0 for i in range(size)]
    return [None if i % 3 == 0 else datetime(2026, 1, 1 + i % 28) for i in range(size)]


TYPES = {"string": pa.string(), "int64": pa.int64(), "bool": pa.bool_(), "timestamp": TIMESTAMP}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", sorted(TYPES))
def test_a_column_converted_in_pieces_equals_one_conversion(kind: str, size: int) -> None:
    values = _values(kind, size)
    column = arrow_array(values, TYPES[kind])
    assert isinstance(column, pa.Array)  # one contiguous array, as DuckDB scanned before
    assert column.type == TYPES[kind]
    assert column.equals(pa.array(values, TYPES[kind]))


def test_tuples_convert_like_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rows, "ARROW_STEP", 3)
    values = tuple(f"k{i}" for i in range(10))
    assert arrow_array(values, pa.string()).to_pylist() == list(values)
