"""The CLI's client of a running server: counting an export's rows as they stream past."""

from __future__ import annotations

import csv
import io

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from pyarrow import csv as pa_csv

from profile_engine.server.client import RowCounter
from tests.support.properties import examples

cells = st.text(alphabet=st.sampled_from('ab,"\n\r é'), max_size=6)


@settings(max_examples=examples(100), deadline=None)
@given(
    rows=st.lists(st.lists(cells, min_size=1, max_size=4), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_csv_rows_are_counted_however_the_stream_is_cut(
    rows: list[list[str]], cuts: list[int]
) -> None:
    """Written as the export writes CSV (pyarrow, text values quoted): quoted values may
    hold line ends and doubled quotes, and the chunks may end anywhere."""
    table = pa.table(
        {f"c{i}": [row[i] if i < len(row) else None for row in rows] for i in range(4)}
    )
    sink = io.BytesIO()
    pa_csv.write_csv(table, sink, pa_csv.WriteOptions(quoting_style="needed"))
    data = sink.getvalue()
    counter = RowCounter("csv")
    start = 0
    for cut in sorted(cuts):
        counter.feed(data[start:cut])
        start = max(start, cut)
    counter.feed(data[start:])
    assert counter.rows == len(rows)
    parsed = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert counter.rows == len(parsed) - 1


def test_json_lines_are_counted_one_a_line() -> None:
    counter = RowCounter("json")
    for chunk in (b'{"a": "x\\ny"}\n{"a"', b": 2}\n"):
        counter.feed(chunk)
    assert counter.rows == 2
