"""CSV rows -> identify events and rejects (pure: no Kafka, no clock, no file writes).

The header names the id column plus registered attributes (case-insensitive). A header with
an unregistered attribute, a duplicate column or no id column refuses the whole file
(``HeaderError``). Every data row then becomes either an ``Identify`` event or a ``Reject``
naming the line, the column and the rule; a bad row never stops the good ones.

An empty cell means "not provided": the trait is left out of the event (it does not unset
a stored value). The event_id is derived from the file's content hash and the record's line
number, so importing the same file twice yields the same events, and the fold's event_id
de-duplication applies them once. Line numbers are zero-padded so that, for rows with the
same timestamp, a later row of the file wins the fold's (timestamp, event_id) ordering.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from profile_engine.attributes import AttributeRegistry, TextParser, TraitScalar
from profile_engine.errors import BadInput
from profile_engine.events import ID_PRIORITY, Identifier, Identify
from profile_engine.identifiers import DEFAULT_PHONE_REGION
from profile_engine.rules import (
    FILES_WINDOW,
    ContractError,
    EventTimeWindow,
    identifier,
    identify_event,
)

ID_TYPES: tuple[str, ...] = ID_PRIORITY
EVENT_ID_PREFIX = "import"


class HeaderError(BadInput):
    """The header cannot be imported: the whole file is refused and nothing is sent."""


@dataclass(frozen=True, slots=True)
class Reject:
    line: int
    cells: list[str]
    reason: str  # "column <name>: <rule>" (or a row-level rule)

    @property
    def message(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ImportColumns:
    """The plan for one file, chosen once from its header."""

    header: list[str]
    id_index: int
    id_column: str
    id_type: str
    # (cell index, attribute name, parser) for every trait column
    traits: tuple[tuple[int, str, TextParser], ...]


def _squash(name: str) -> str:
    return name.strip().lower().replace("_", "").replace("-", "")


def resolve_id_type(id_column: str, id_type: str | None) -> str:
    """--id-type, or the id type the column is named after (customerId -> customer_id)."""
    if id_type is not None:
        if id_type not in ID_TYPES:
            raise HeaderError(f"--id-type must be one of {', '.join(ID_TYPES)}, got {id_type!r}")
        return id_type
    for candidate in ID_TYPES:
        if _squash(candidate) == _squash(id_column):
            return candidate
    raise HeaderError(
        f"cannot tell the identifier type of column {id_column!r}; "
        f"pass --id-type ({'|'.join(ID_TYPES)})"
    )


def plan_columns(
    header: Sequence[str], registry: AttributeRegistry, id_column: str, id_type: str | None
) -> ImportColumns:
    """Match the header against the registry, or raise HeaderError listing every problem."""
    resolved_type = resolve_id_type(id_column, id_type)
    if not header or all(not cell.strip() for cell in header):
        raise HeaderError("the file has no header row")
    wanted_id = id_column.strip().lower()
    problems: list[str] = []
    seen: dict[str, int] = {}
    id_index: int | None = None
    traits: list[tuple[int, str, TextParser]] = []
    unregistered: list[str] = []
    for index, cell in enumerate(header):
        name = cell.strip().lower()
        if not name:
            problems.append(f"header column {index + 1} is empty")
            continue
        if name in seen:
            problems.append(
                f"duplicate column {cell.strip()!r} (columns {seen[name]} and {index + 1})"
            )
            continue
        seen[name] = index + 1
        if name == wanted_id:
            id_index = index
        elif (attribute := registry.get(name)) is not None:
            # Stored under the registered spelling (a header `ltv` names attribute `LTV`).
            traits.append((index, attribute.name, registry.text_parser(name)))
        else:
            unregistered.append(cell.strip())
    if unregistered:
        problems.append(
            f"unregistered attribute(s) {', '.join(repr(n) for n in unregistered)} "
            "(register them with `profile-engine attributes add NAME TYPE`)"
        )
    if id_index is None:
        problems.append(f"no id column {id_column!r} in the header")
    if problems:
        raise HeaderError("header: " + "; ".join(problems))
    assert id_index is not None
    return ImportColumns(
        list(header), id_index, header[id_index].strip(), resolved_type, tuple(traits)
    )


def import_event_id(file_digest: str, line: int) -> str:
    """Deterministic per (digest of the file content and event time, record line):
    re-imports are idempotent."""
    return f"{EVENT_ID_PREFIX}:{file_digest[:24]}:{line:010d}"


class RowConverter:
    """Turns the data records of one file into Identify events or Rejects."""

    def __init__(
        self,
        columns: ImportColumns,
        file_digest: str,
        timestamp_us: int,
        phone_region: str = DEFAULT_PHONE_REGION,
        window: EventTimeWindow = FILES_WINDOW,
    ) -> None:
        self.columns = columns
        self.file_digest = file_digest
        self.timestamp_us = timestamp_us
        self.phone_region = phone_region
        self.window = window
        self._width = len(columns.header)

    def _identifier(self, raw: str) -> Identifier | str:
        """The identifier judged by the rule book, or the rule it breaks."""
        if not raw.strip():
            return "identifier is empty"
        try:
            ident = identifier(self.columns.id_type, raw, self.phone_region)
        except ContractError as error:
            return str(error).partition(": ")[2]  # "identifiers.<type>: <rule>" -> the rule
        if ident is None:
            return f"{raw.strip()!r} is a placeholder, not an identifier"
        if not ident.valid:
            return f"{raw.strip()!r} is not a valid {self.columns.id_type}"
        return ident

    def convert(self, line: int, cells: list[str]) -> Identify | Reject:
        columns = self.columns
        if len(cells) != self._width:
            return Reject(line, cells, f"expected {self._width} columns, got {len(cells)}")
        errors: list[str] = []
        ident = self._identifier(cells[columns.id_index])
        if isinstance(ident, str):
            errors.append(f"column {columns.id_column}: {ident}")
        traits: dict[str, TraitScalar] = {}
        for index, name, parse in columns.traits:
            text = cells[index]
            if text == "":
                continue  # empty cell: not provided
            try:
                traits[name] = parse(text)
            except ValueError as error:
                errors.append(f"column {name}: {error}")
        if errors:
            return Reject(line, cells, "; ".join(errors))
        assert isinstance(ident, Identifier)
        try:
            return identify_event(
                import_event_id(self.file_digest, line),
                self.timestamp_us,
                (ident,),
                self.window,
                traits,
            )
        except ContractError as error:  # the rule book's verdict on the typed row
            return Reject(line, cells, _as_column_reason(str(error)))


def _as_column_reason(reason: str) -> str:
    """``traits.<name>: <rule>`` -> ``column <name>: <rule>``; other reasons as they are."""
    where, _, rule = reason.partition(": ")
    if where.startswith("traits."):
        return f"column {where.removeprefix('traits.')}: {rule}"
    return reason


class LineTap:
    """The lines a csv.reader reads, kept since the last ``clear()``: the raw text of a record
    the reader cannot parse, so that it reaches the rejects file whole."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self.taken: list[str] = []

    def __iter__(self) -> LineTap:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.taken.append(line)
        return line

    def clear(self) -> None:
        self.taken.clear()


class Malformed(NamedTuple):
    """A record the CSV reader could not parse: why, and its lines as read."""

    reason: str
    raw: str


def read_records(
    reader: Iterator[list[str]], tap: LineTap | None = None
) -> Iterator[tuple[int, list[str] | Malformed]]:
    """(first line of the record, cells) per record, or (line, Malformed).

    ``reader`` is a csv.reader (over ``tap``, when given: then a malformed record keeps its
    raw lines); a record may span lines (quoted newlines), so the line reported is where the
    record starts. Blank lines are skipped.
    """
    line_num = getattr(reader, "line_num", 0)
    while True:
        start = line_num + 1
        if tap is not None:
            tap.clear()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            line_num = getattr(reader, "line_num", line_num + 1)
            raw = "".join(tap.taken) if tap is not None else ""
            lines = f"line {start}" if line_num <= start else f"lines {start}-{line_num}"
            kept = f"; {lines} kept as read in the first column" if raw else ""
            yield start, Malformed(f"malformed CSV: {error}{kept}", raw)
            continue
        line_num = getattr(reader, "line_num", line_num + 1)
        if cells:
            yield start, cells


def malformed_reject(line: int, record: Malformed) -> Reject:
    """A malformed record's reject: its raw lines in the first column, nothing lost."""
    return Reject(line, [record.raw.rstrip("\r\n")] if record.raw else [], record.reason)


def convert_records(
    converter: RowConverter, records: Iterable[tuple[int, list[str] | Malformed]]
) -> Iterator[Identify | Reject]:
    for line, cells in records:
        if isinstance(cells, Malformed):
            yield malformed_reject(line, cells)
        else:
            yield converter.convert(line, cells)


def rejects_header(header: Sequence[str]) -> list[str]:
    """The rejects file keeps the original header plus a reason column."""
    return [*header, "reason"]


def reject_row(reject: Reject, width: int) -> list[str]:
    """Original cells (short rows padded to the header's width), then the reason."""
    cells = reject.cells + [""] * (width - len(reject.cells))
    return [*cells, reject.message]
