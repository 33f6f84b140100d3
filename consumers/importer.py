"""Bulk CSV import: validated rows go to the log as identify events, bad rows to a rejects file.

Two steps so that a refused file sends nothing: ``CsvImport.open`` reads the whole file once
(content hash for deterministic event ids, line count for progress, UTF-8 check) and checks
the header against the registry; only then does the caller open a producer and ``run``.

Import history is a JSON Lines file beside the attribute registry (``profile-imports.jsonl``):
it survives rebuilds of the projection, needs no DuckDB lock (imports can run while a
consumer holds the database) and is append-only, one line per import.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from consumers.batch_producer import Delivery
from consumers.codec import EncodeError
from consumers.producer import EventEncoder, now_ms
from consumers.record_batches import Batcher, BuiltBatch, KeyPartitioner, RecordTooLarge
from profile_engine.attributes import AttributeRegistry
from profile_engine.csv_import import (
    HeaderError,
    ImportColumns,
    LineTap,
    Malformed,
    Reject,
    RowConverter,
    malformed_reject,
    plan_columns,
    read_records,
    reject_row,
    rejects_header,
)
from profile_engine.errors import ProfileEngineError
from profile_engine.identifiers import DEFAULT_PHONE_REGION
from profile_engine.rules import window_at_publish
from profile_engine.sealing import Sealer, SealingPlan

HISTORY_FILE = "profile-imports.jsonl"
_CHUNK = 1 << 20
PROGRESS_EVERY = 5_000

ProgressCallback = Callable[[int], None]  # physical lines read so far
RejectCallback = Callable[[Reject], None]


class BatchSink(Protocol):
    """Where the import sends its record batches (consumers.batch_producer.BatchProducer)."""

    partitions: int
    max_batch_bytes: int
    delivery: Delivery

    def send(self, built: BuiltBatch) -> bool: ...

    def finish(self) -> Delivery: ...


def rejects_path_for(path: Path) -> Path:
    """``data/customers.csv`` -> ``data/customers.rejects.csv`` (beside the input)."""
    suffix = path.suffix if path.suffix else ""
    return path.with_name(path.name[: len(path.name) - len(suffix)] + ".rejects.csv")


def scan_file(path: Path) -> tuple[str, int]:
    """(sha256 hex of the bytes, number of lines); HeaderError if the file is not UTF-8."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 0
    offset = 0
    last = b""
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            lines += chunk.count(b"\n")
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                raise HeaderError(
                    f"the file is not UTF-8 text (bad byte at offset {offset + error.start})"
                ) from None
            offset += len(chunk)
            last = chunk[-1:]
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise HeaderError("the file is not UTF-8 text (it ends inside a character)") from None
    if last and last != b"\n":
        lines += 1
    return digest.hexdigest(), lines


@dataclass(slots=True)
class ImportCounts:
    accepted: int = 0  # valid rows (confirmed by the broker unless ``complete`` is False)
    rejected: int = 0
    seconds: float = 0.0
    rejects_file: Path | None = None
    first_rejects: list[str] = field(default_factory=list)
    rejected_lines: set[int] = field(default_factory=set)
    delivery: Delivery = field(default_factory=Delivery)
    # Lines never read because the producer gave up: (first, last).
    unread: tuple[int, int | None] | None = None

    @property
    def rows_per_s(self) -> float:
        total = self.accepted + self.rejected
        return total / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        return not self.delivery.unconfirmed and self.unread is None


class CsvImport:
    """One CSV file, checked and ready to send."""

    def __init__(self, path: Path, columns: ImportColumns, digest: str, total_lines: int) -> None:
        self.path = path
        self.columns = columns
        self.digest = digest
        self.total_lines = total_lines

    @classmethod
    def open(
        cls,
        path: Path,
        registry: AttributeRegistry,
        id_column: str,
        id_type: str | None = None,
    ) -> CsvImport:
        """Check the file and its header; HeaderError refuses the whole file."""
        digest, total_lines = scan_file(path)
        with path.open(encoding="utf-8-sig", newline="") as handle:
            try:
                header = next(csv.reader(handle, strict=True), [])
            except csv.Error as error:
                raise HeaderError(f"header: malformed CSV: {error}") from None
        columns = plan_columns(header, registry, id_column, id_type)
        return cls(path, columns, digest, total_lines)

    @property
    def rejects_path(self) -> Path:
        return rejects_path_for(self.path)

    @property
    def unconfirmed_path(self) -> Path:
        """``customers.csv`` -> ``customers.unconfirmed.txt``: lines the broker did not confirm."""
        return self.path.with_name(self.path.stem + ".unconfirmed.txt")

    def run(
        self,
        sink: BatchSink,
        timestamp_us: int,
        phone_region: str = DEFAULT_PHONE_REGION,
        on_progress: ProgressCallback | None = None,
        on_reject: RejectCallback | None = None,
        sealing: SealingPlan | None = None,
        key_sink: Callable[[list[tuple[str, bytes]]], object] | None = None,
    ) -> ImportCounts:
        """Send every valid row, write every invalid one to the rejects file, wait for the broker.

        Rows are built into record batches here and handed to ``sink`` every
        ``PROGRESS_EVERY`` rows; when the sink gives up, reading stops and the rest of the
        file is reported as unread. ``sealing`` seals every event; ``key_sink`` writes the
        data keys they need before their batches are sent.
        """
        counts = ImportCounts(delivery=sink.delivery)
        started = time.perf_counter()
        # The producer's edge check of the event time uses this machine's clock (now + 1 day).
        window = window_at_publish(time.time_ns() // 1000)
        sealer = Sealer(sealing) if sealing is not None else None
        # The event ids derive from the file and the event time: the same file at the same
        # time is the same events (a retry is deduplicated), at another time other events
        # (never an id reused with other content). Sealed, the ids must not carry a plain
        # hash of the file (for a file of one row, a hash of one person's values): keyed.
        basis = f"{self.digest}:{timestamp_us}".encode()
        digest = (
            hashlib.sha256(basis).hexdigest() if sealer is None else sealer.ring.content_id(basis)
        )
        converter = RowConverter(
            self.columns, digest.replace("-", ""), timestamp_us, phone_region, window
        )
        encoder = EventEncoder(sealer=sealer)
        send = _KeyedSend(sealer, key_sink)
        batcher = Batcher(KeyPartitioner(sink.partitions), sink.max_batch_bytes)
        clock = now_ms()
        sending = True
        with (
            self.path.open(encoding="utf-8-sig", newline="") as handle,
            _RejectsFile(self.rejects_path, self.columns.header) as rejects,
        ):
            tap = LineTap(handle)
            reader = csv.reader(tap, strict=True)
            next(reader)  # the header, already checked
            for done, (line, cells) in enumerate(read_records(reader, tap), start=1):
                result = self._row(converter, encoder, batcher, clock, line, cells)
                if result is None:
                    counts.accepted += 1
                else:
                    rejects.write(result)
                    counts.rejected += 1
                    counts.rejected_lines.add(result.line)
                    if on_reject is not None:
                        on_reject(result)
                if done % PROGRESS_EVERY == 0:
                    sending = send(batcher.take(), sink, counts.delivery)
                    clock = now_ms()
                    if on_progress is not None:
                        on_progress(reader.line_num)
                    if not sending:
                        if reader.line_num < self.total_lines:
                            counts.unread = (reader.line_num + 1, self.total_lines)
                        break
            if sending:
                send(batcher.take(), sink, counts.delivery)
                if on_progress is not None:
                    on_progress(reader.line_num)
            sink.finish()
        counts.rejects_file = self.rejects_path if counts.rejected else None
        counts.seconds = time.perf_counter() - started
        return counts

    @staticmethod
    def _row(
        converter: RowConverter,
        encoder: EventEncoder,
        batcher: Batcher,
        clock: int,
        line: int,
        cells: list[str] | Malformed,
    ) -> Reject | None:
        """None when the row joined a batch, else its Reject."""
        if isinstance(cells, Malformed):
            return malformed_reject(line, cells)
        result = converter.convert(line, cells)
        if isinstance(result, Reject):
            return result
        try:
            key, value, timestamp_ms = encoder.encode(result, clock)
            batcher.add(key, value, timestamp_ms, line)
        except EncodeError as error:
            return Reject(line, cells, str(error))
        except RecordTooLarge as error:
            return Reject(
                line,
                cells,
                f"the row's message takes {error.size:,} bytes, more "
                f"than the topic accepts (max.message.bytes {error.limit:,})",
            )
        return None

    @staticmethod
    def _send(batches: list[BuiltBatch], sink: BatchSink, delivery: Delivery) -> bool:
        """Queue the batches; False once the sink gave up (the rest are then unsent)."""
        for index, built in enumerate(batches):
            if not sink.send(built):
                for unsent in batches[index:]:
                    delivery.fail(unsent.lines, "not sent: the import stopped", True)
                return False
        return True


class _KeyedSend:
    """Sends batches, after writing the data keys their sealed events need (if any)."""

    def __init__(
        self,
        sealer: Sealer | None,
        key_sink: Callable[[list[tuple[str, bytes]]], object] | None,
    ) -> None:
        self.sealer = sealer
        self.key_sink = key_sink

    def __call__(self, batches: list[BuiltBatch], sink: BatchSink, delivery: Delivery) -> bool:
        if self.sealer is not None and self.key_sink is not None:
            keys = self.sealer.take_new_keys()
            try:
                if keys:
                    self.key_sink(keys)
            except ProfileEngineError as error:
                for unsent in batches:
                    delivery.fail(unsent.lines, f"not sent: the key store refused: {error}", True)
                return False
        return CsvImport._send(batches, sink, delivery)


class _RejectsFile:
    """The rejects CSV, created on the first reject only (original header + reason)."""

    def __init__(self, path: Path, header: list[str]) -> None:
        self.path = path
        self.header = header
        self._handle: TextIO | None = None
        self._writer: Any = None

    def write(self, reject: Reject) -> None:
        if self._writer is None:
            self._handle = self.path.open("w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._handle)
            self._writer.writerow(rejects_header(self.header))
        self._writer.writerow(reject_row(reject, len(self.header)))

    def __enter__(self) -> _RejectsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()
        elif self.path.exists():
            # A clean re-import must not leave the previous run's rejects looking current.
            self.path.unlink()


# -- import history -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportRecord:
    file: str
    started_at: str  # ISO-8601 UTC
    status: str  # ok | rejects | refused | failed
    accepted: int
    rejected: int
    seconds: float
    id_type: str | None = None
    topic: str | None = None
    rejects_file: str | None = None
    message: str | None = None


HISTORY_COLUMNS = (
    "file",
    "started_at",
    "status",
    "accepted",
    "rejected",
    "seconds",
    "id_type",
    "topic",
    "rejects_file",
    "message",
)


def history_path_for(registry_path: Path) -> Path:
    """The history lives beside the registry, so one --attributes names both."""
    return registry_path.parent / HISTORY_FILE


def append_history(path: Path, record: ImportRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(asdict(record), sort_keys=True) + "\n")


def read_history(path: Path) -> list[ImportRecord]:
    """Every recorded import, oldest first; a damaged line is skipped, not fatal."""
    if not path.exists():
        return []
    records = []
    names = set(HISTORY_COLUMNS)
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            raw = json.loads(line)
            records.append(ImportRecord(**{k: v for k, v in raw.items() if k in names}))
        except (ValueError, TypeError):
            continue
    return records
