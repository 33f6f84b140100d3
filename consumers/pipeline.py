"""The one pipeline loop: a source of records -> batches -> fold -> one commit per batch.

Every way of folding (``consume`` from Kafka, ``rebuild`` from Kafka or a file, the tests'
in-memory lists, the benchmarks) runs this loop; only the source differs (consumers/sources.py).
A batch is cut by size, or by time in follow mode (``max_wait_s`` after its first record when
caught up, so a quiet topic's events reach the tables within about a second; longer while
behind the log, see BatchCut). Each batch:

1. pages in what it can reach from the projection (profile_engine.batch_fold.StoredWorld);
2. folds its events in the log's order; an event that raises is a dead letter, and the
   batch goes on as if it never came;
3. commits rows, dead letters and the source's offsets in ONE transaction (dead letters reach
   the dead-letter sink first: at-least-once there, exactly-once in the table).

A commit that DuckDB refuses for its data (a value it cannot store) is retried in halves until
the one record at fault is found and dead-lettered, so no input can stop the fold.
"""

from __future__ import annotations

import contextlib
import gc
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Protocol

from profile_engine.batch_fold import (
    REUSED_ID_REASON,
    BatchChanges,
    BatchFold,
    Outcome,
    Prepared,
    prepare,
)
from profile_engine.contract import event_to_json
from profile_engine.errors import BadInput
from profile_engine.events import ProfileEvent, iso_from_us
from profile_engine.fold import FoldConfig
from profile_engine.keys import IdentifierHashes
from projections.store import DeadLetter, ProjectionStore, TopicOffset

DEFAULT_BATCH_SIZE = 100_000
DEFAULT_MAX_WAIT_S = 1.0
# A run's first batch is cut at this size, and each next one at twice the last, up to the
# batch size: the fold starts once this many events are decoded instead of a whole batch,
# and the source decodes the next batch while the fold works on this one.
FIRST_BATCH_SIZE = 12_500


class Record(NamedTuple):
    """One message or line, in the source's deterministic order.

    ``event`` is the decoded event, prepared for the fold; ``letter`` says why there is none.
    A record with neither only moves a position forward (e.g. a transaction marker on Kafka).
    """

    partition: int | None  # Kafka position, or None for a file
    offset: int | None
    line: int | None  # line (or archive record) number in a file
    event: Prepared | None
    letter: DeadLetter | None


class Source(Protocol):
    """Where records come from. ``chunks`` yields lists of records, and ``None`` whenever it
    is caught up with the log (follow mode); it ends when there is nothing more to read."""

    name: str

    def chunks(self) -> Iterator[list[Record] | None]: ...

    def lag(self, next_offsets: dict[int, int]) -> int: ...

    def close(self) -> None: ...


DeadLetterSink = Callable[[Sequence[DeadLetter]], None]
ProgressCallback = Callable[["FoldStats"], None]


class KeyEraser(Protocol):
    """Destroys the data keys of erased identifiers (consumers.key_store.KeyStore)."""

    def erase_refs(self, refs: Iterable[str]) -> int: ...


@dataclass
class FoldStats:
    received: int = 0  # records taken from the source, committed or not
    consumed: int = 0
    folded: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    lag: int = 0
    last_batch_size: int = 0
    last_batch_at: float | None = None  # time.time() of the last commit
    waiting_since: float | None = None  # the broker's last answer while it does not answer
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def as_dict(self) -> dict[str, float | int]:
        secs = self.seconds
        return {
            "consumed": self.consumed,
            "folded": self.folded,
            "duplicates": self.duplicates,
            "dead_lettered": self.dead_lettered,
            "batches": self.batches,
            "lag": self.lag,
            "seconds": round(secs, 3),
            "events_per_s": round(self.consumed / secs, 1) if secs > 0 else 0.0,
        }


@dataclass(frozen=True)
class PipelineOptions:
    batch_size: int = DEFAULT_BATCH_SIZE
    max_wait_s: float | None = DEFAULT_MAX_WAIT_S  # None: cut batches by size only
    dead_letter_sink: DeadLetterSink | None = None
    progress: ProgressCallback | None = None
    should_stop: Callable[[], bool] = lambda: False
    # After each commit: the offsets committed and the running counters, which include the batch.
    after_commit: Callable[[list[TopicOffset], FoldStats], None] | None = None
    # A keyed projection: erasures destroy the erased identifiers' data keys before the
    # batch commits (like dead letters reach their topic first).
    key_eraser: KeyEraser | None = None


# Behind the log, a batch waits at least this many times as long as the last commit took,
# so that the fixed cost of a commit (joins that scan the stored tables) stays a small part
# of the fold's time however large the projection grows (see BatchCut).
COMMIT_AMORTISATION = 2.0


class BatchCut:
    """When the pending records make a batch: ``batch_size`` of them (fewer for a run's first
    batches, see FIRST_BATCH_SIZE), or, in follow mode, a time after the first of them.

    Caught up with the log, that time is ``max_wait_s``, so a quiet topic's events reach the
    tables within about a second. Behind it (the source has not been idle since the batch
    began), it is also at least COMMIT_AMORTISATION times the last commit: each commit
    costs about the same whatever its size on a large projection, and a time cut of one
    second there would spend most of the fold committing small batches and never catch up.
    """

    def __init__(
        self,
        batch_size: int,
        max_wait_s: float | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._first_at = 0.0
        self._idle = False
        self._last_commit_s = 0.0
        self._committed = 0

    def started(self) -> None:
        """The first record of a new batch arrived."""
        self._first_at = self._clock()
        self._idle = False

    def caught_up(self) -> None:
        """The source had nothing more to read for now."""
        self._idle = True

    def committed(self, seconds: float) -> None:
        self._last_commit_s = seconds
        self._committed += 1

    def size(self) -> int:
        """The size that makes the current batch: FIRST_BATCH_SIZE doubled per batch
        committed in this run, at most ``batch_size``."""
        return min(self.batch_size, FIRST_BATCH_SIZE << min(self._committed, 32))

    def wait_s(self) -> float | None:
        """How long after its first record the current batch is cut by time (None: never)."""
        if self.max_wait_s is None:
            return None
        if self._idle:
            return self.max_wait_s
        return max(self.max_wait_s, COMMIT_AMORTISATION * self._last_commit_s)

    def due(self, pending: int) -> bool:
        return pending >= self.size() or self.waited_out()

    def waited_out(self) -> bool:
        """The current batch waited as long as it may: all that is pending goes."""
        wait = self.wait_s()
        return wait is not None and self._clock() - self._first_at >= wait


class Pipeline:
    """Folds one source into one projection store, batch by batch."""

    def __init__(
        self, store: ProjectionStore, config: FoldConfig, options: PipelineOptions | None = None
    ) -> None:
        self.store = store
        self.config = config
        self.options = options or PipelineOptions()
        self.stats = FoldStats()
        self._next_offsets: dict[int, int] = {}
        self._erased_refs: set[str] = set()  # data keys this run's erasures destroyed

    def run(self, source: Source) -> FoldStats:
        with _collect_between_batches():
            return self._run(source)

    def _run(self, source: Source) -> FoldStats:
        options = self.options
        pending: list[Record] = []
        cut = BatchCut(options.batch_size, options.max_wait_s)
        try:
            for chunk in source.chunks():
                if chunk:
                    if not pending:
                        cut.started()
                    pending.extend(chunk)
                    self.stats.received += len(chunk)
                elif chunk is None:
                    cut.caught_up()
                waiting = getattr(source, "waiting_since", None)
                self.stats.waiting_since = waiting
                due = bool(pending) and cut.due(len(pending))
                if due and waiting is not None and _needs_the_broker(pending, options):
                    due = False  # its dead letters go to their topic before it commits
                if due:
                    pending = self._flush_due(source, pending, cut)
                if chunk is None and not pending:
                    self.stats.lag = 0
                if options.progress:
                    options.progress(self.stats)
                if options.should_stop():
                    break
            if pending:
                self._flush(source, pending)
        finally:
            source.close()
        self.stats.lag = source.lag(self._next_offsets)
        return self.stats

    def _flush_due(self, source: Source, pending: list[Record], cut: BatchCut) -> list[Record]:
        """Commit pending records as batches of the cut's size (a source's chunk may hold
        more, or end inside a batch), while that many are pending, or all of them when the
        cut is by time; returns what is left pending."""
        everything = cut.waited_out()
        while pending and (everything or len(pending) >= cut.size()):
            size = cut.size()
            whole = len(pending) <= size
            batch, pending = (pending, []) if whole else (pending[:size], pending[size:])
            started = time.monotonic()
            # The source's read positions go with the batch that ends what it gave.
            self._flush(source, batch, last=whole)
            cut.committed(time.monotonic() - started)
            _let_go_of(batch)
            # After the batch's records are gone, not while they are held: the young
            # generations are then a few thousand objects, not the batch's hundreds of
            # thousands, and the collection (which holds the GIL) is that much shorter.
            gc.collect(1)
        if pending:
            cut.started()
        return pending

    # -- one batch ------------------------------------------------------------------------

    def _flush(self, source: Source, records: list[Record], last: bool = True) -> None:
        """Fold and commit ``records``; ``last`` when nothing the source gave precedes them
        uncommitted, so the source's read positions may be stored with them."""
        try:
            self._fold_and_commit(source, records, last)
        except BadInput:
            if len(records) == 1:
                self._commit_as_dead_letter(source, records[0], last)
                return
            # A value the database refuses: find the record at fault by halves.
            middle = len(records) // 2
            self._flush(source, records[:middle], last=False)
            self._flush(source, records[middle:], last=last)
            return
        self.stats.lag = source.lag(self._next_offsets)

    def _fold_and_commit(self, source: Source, records: list[Record], last: bool) -> None:
        events = [r.event for r in records if r.event is not None]
        fold = BatchFold(self.config, self.store.stored_world(events, self.config))
        letters: list[DeadLetter] = []
        folded = duplicates = 0
        for record in records:
            if record.event is None:
                if record.letter is not None:
                    letters.append(replace(record.letter, position=fold.calls))
                continue
            event = record.event
            if event.key_refs and (self._erased_refs or fold.destroyed_refs):
                event = self._unreadable_if_erased(event, fold)
            position = fold.calls
            try:
                outcome = fold.fold(event)
            except Exception as error:  # any event that breaks the fold is a dead letter
                reason = f"cannot fold: {_describe(error)}"
                letters.append(_letter(source, record, reason, position))
                continue
            if outcome is Outcome.APPLIED:
                folded += 1
            elif outcome is Outcome.DUPLICATE:
                duplicates += 1
            else:
                letters.append(_letter(source, record, REUSED_ID_REASON, position))
        offsets = self._offsets_after(source, records, last)
        if letters and self.options.dead_letter_sink is not None:
            self.options.dead_letter_sink(letters)
        changes = fold.finish()
        if changes.erased and self.options.key_eraser is not None:
            self._destroy_keys(changes)
        self.store.commit_batch(changes, offsets, letters)
        self._count(records, folded, duplicates, len(letters), offsets)
        _take_apart(changes, fold)

    def _unreadable_if_erased(self, event: Prepared, fold: BatchFold) -> Prepared:
        """A sealed event under a key an erasure of this run destroyed folds as a rebuild
        (which cannot open it) folds it: see sealing.without_erased_keys."""
        from profile_engine.sealing import without_erased_keys

        erased_refs, erased_now = self._erased_refs, fold.destroyed_refs
        return without_erased_keys(event, lambda ref, _: ref in erased_refs or ref in erased_now)

    def _destroy_keys(self, changes: BatchChanges) -> None:
        """Erased markers over the data keys the erasures met (those of the erased profiles'
        identifiers stored in the projection, and those of the batch's events before each
        erasure), acknowledged by the key store before the batch that erased them commits."""
        from projections.sealed import identifier_keys_of, stored_refs_of

        assert self.options.key_eraser is not None
        stored = identifier_keys_of(self.store, changes.erased)
        changes.erased_keys |= stored
        changes.destroyed_refs |= stored_refs_of(self.store, stored)
        self.options.key_eraser.erase_refs(changes.destroyed_refs)
        self._erased_refs |= changes.destroyed_refs

    def _commit_as_dead_letter(self, source: Source, record: Record, last: bool) -> None:
        reason = "the projection database refused the event's values"
        letter = record.letter or _letter(source, record, reason)
        offsets = self._offsets_after(source, [record], last)
        if self.options.dead_letter_sink is not None:
            self.options.dead_letter_sink([letter])
        self.store.commit_batch(None, offsets, [letter])
        self._count([record], 0, 0, 1, offsets)

    def _offsets_after(
        self, source: Source, records: list[Record], last: bool
    ) -> list[TopicOffset]:
        moved = dict(self._next_offsets)
        if last:  # how far the source read, markers and aborted records included
            positions = getattr(source, "positions", None)
            for partition, offset in (positions() if positions else {}).items():
                if offset >= moved.get(partition, 0):  # every partition, even one still at 0
                    moved[partition] = offset
        for record in records:
            partition, offset = record.partition, record.offset
            if partition is not None and offset is not None and offset >= moved.get(partition, 0):
                moved[partition] = offset + 1
        return [TopicOffset(source.name, p, o) for p, o in sorted(moved.items())]

    def _count(
        self,
        records: list[Record],
        folded: int,
        duplicates: int,
        dead: int,
        offsets: list[TopicOffset],
    ) -> None:
        stats = self.stats
        stats.consumed += sum(1 for r in records if r.event is not None or r.letter is not None)
        stats.folded += folded
        stats.duplicates += duplicates
        stats.dead_lettered += dead
        stats.batches += 1
        stats.last_batch_size = len(records)
        stats.last_batch_at = time.time()
        self._next_offsets = {o.partition: o.next_offset for o in offsets}
        if self.options.after_commit is not None and offsets:
            self.options.after_commit(offsets, stats)

    def start_offsets(self, offsets: dict[int, int]) -> None:
        """Where the source starts, so a batch's offsets cover partitions it did not touch."""
        self._next_offsets = dict(offsets)


# How many of a committed batch's records are let go of at a time (see _let_go_of).
RELEASE_STEP = 2_000


def _let_go_of(records: list[Record]) -> None:
    """Empty a committed batch's list of records a slice at a time.

    Freeing objects is C code that keeps the GIL until the last one is freed: dropping a
    batch at once would keep the server's readers (threads of the same process) waiting for
    all of it. Between slices the interpreter can hand the GIL over.
    """
    while records:
        del records[-RELEASE_STEP:]


def _take_apart(*finished: object) -> None:
    """Drop the attributes of a finished batch's objects one at a time (an attribute that is
    itself an object with slots, the batch's HistoryLog, taken apart first), for the reason
    _let_go_of gives: freeing a BatchFold and its BatchChanges whole is one long stretch with
    the GIL held. Only references are dropped; no container is emptied."""
    for owner in finished:
        names = list(getattr(owner, "__dict__", ())) + list(getattr(type(owner), "__slots__", ()))
        for name in names:
            value = getattr(owner, name, None)
            if hasattr(value, "__slots__") and not isinstance(value, type):
                _take_apart(value)
            with contextlib.suppress(AttributeError):
                delattr(owner, name)
            del value


def _needs_the_broker(pending: list[Record], options: PipelineOptions) -> bool:
    return options.dead_letter_sink is not None and any(r.letter for r in pending)


@contextmanager
def _collect_between_batches() -> Iterator[None]:
    """No automatic garbage collection while folding; the young generations after each batch.

    A batch allocates millions of small objects that all die together when it is written;
    automatic collections would run during it, each one walking everything the batch still
    holds (measured: half the Python time of building a batch's rows). Folding makes no
    reference cycles of note, so reference counting frees the batch, and a young collection
    per batch catches the rest.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.collect()
        if was_enabled:
            gc.enable()


def prepared_record(
    source_name: str,
    partition: int | None,
    offset: int | None,
    line: int | None,
    event: ProfileEvent,
    raw: bytes | None = None,
    hashes: IdentifierHashes | None = None,
) -> Record:
    """A record of a decoded event, or of its dead letter when it cannot be prepared
    (``hashes``: the keyed identifier keys of a projection with a master key)."""
    try:
        return Record(partition, offset, line, prepare(event, hashes), None)
    except Exception as error:  # any event that cannot be prepared is a dead letter
        reason = f"cannot fold: {_describe(error)}"
        kept = raw if raw is not None else _event_text(event)
        letter = DeadLetter(source_name, partition, offset, line, None, kept, reason)
        return Record(partition, offset, line, None, letter)


def _prepared_text(prepared: Prepared) -> bytes:
    """A prepared event in the producer format (its payload holds its fields and identifiers)."""
    head = json.dumps(
        {"event_id": prepared.event_id, "type": prepared.type,
         "timestamp": iso_from_us(prepared.timestamp_us)}
    )  # fmt: skip
    return f"{head[:-1]}, {prepared.payload[1:]}".encode()


def _event_text(event: ProfileEvent) -> bytes | None:
    """The producer-format JSON of an event for a dead letter, when it can be written."""
    try:
        return json.dumps(event_to_json(event), default=str).encode()
    except (ValueError, TypeError, RecursionError):
        return None


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _letter(source: Source, record: Record, reason: str, position: int | None = None) -> DeadLetter:
    """A dead letter for a decoded event the fold refused: its producer-format JSON is kept
    (the original bytes stay in the log at the recorded position)."""
    event = record.event
    raw = None if event is None else _prepared_text(event)
    return DeadLetter(
        source.name, record.partition, record.offset, record.line, None, raw, reason,
        position=position, id_keys=() if event is None else event.id_keys,
    )  # fmt: skip
