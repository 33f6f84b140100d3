"""Chunks of prepared records between processes, as ``marshal`` bytes of plain tuples.

The decoding process and the folding process exchange millions of small records. ``marshal``
writes and reads tuples of strings and numbers several times faster than pickle writes and
reads the same records as named tuples and dataclasses, so each side flattens its records to
plain tuples and the other rebuilds them.
"""

from __future__ import annotations

import marshal
from typing import Any

from consumers.pipeline import Record
from profile_engine.batch_fold import Prepared
from projections.store import DeadLetter


def records_to_wire(records: list[Record]) -> bytes:
    return marshal.dumps(
        [
            (
                r.partition,
                r.offset,
                r.line,
                None if r.event is None else tuple(r.event),
                None if r.letter is None else _letter_fields(r.letter),
            )
            for r in records
        ]
    )


def records_from_wire(data: bytes) -> list[Record]:
    return [
        Record(
            partition,
            offset,
            line,
            None if event is None else Prepared(*event),
            None if letter is None else DeadLetter(*letter),
        )
        for partition, offset, line, event, letter in marshal.loads(data)
    ]


def _letter_fields(letter: DeadLetter) -> tuple[Any, ...]:
    return (
        letter.source, letter.partition, letter.offset, letter.line_number, letter.key,
        letter.raw, letter.reason, letter.timestamp_us,
    )  # fmt: skip
