"""When the pipeline cuts a batch (consumers.pipeline.BatchCut, on a clock the test moves), and
what a batch holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from consumers.pipeline import (
    COMMIT_AMORTISATION,
    FIRST_BATCH_SIZE,
    BatchCut,
    FoldStats,
    Pipeline,
    PipelineOptions,
    Record,
    prepared_record,
)
from projections.store import ProjectionStore, TopicOffset
from tests.profile_engine.builders import track


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_full_batch_is_due_at_once_in_every_mode() -> None:
    for max_wait_s in (None, 1.0):
        cut = BatchCut(batch_size=10, max_wait_s=max_wait_s, clock=Clock())
        cut.started()
        assert not cut.due(9)
        assert cut.due(10)


def test_without_a_time_cut_only_size_makes_a_batch() -> None:
    clock = Clock()
    cut = BatchCut(batch_size=10, max_wait_s=None, clock=clock)
    cut.started()
    clock.now += 3600
    assert not cut.due(1)


def test_caught_up_a_batch_is_cut_max_wait_after_its_first_record() -> None:
    clock = Clock()
    cut = BatchCut(batch_size=1000, max_wait_s=1.0, clock=clock)
    cut.committed(30.0)  # however slow the last commit was
    cut.started()
    cut.caught_up()
    clock.now += 0.9
    assert not cut.due(5)
    clock.now += 0.1
    assert cut.due(5)


def test_behind_the_log_a_batch_waits_longer_than_the_last_commit_took() -> None:
    clock = Clock()
    cut = BatchCut(batch_size=100_000, max_wait_s=1.0, clock=clock)
    cut.committed(3.0)
    cut.started()  # records keep coming: the source is never idle
    clock.now += 1.0
    assert not cut.due(5_000)
    clock.now += COMMIT_AMORTISATION * 3.0 - 1.0 - 0.01
    assert not cut.due(20_000)
    clock.now += 0.01
    assert cut.due(20_000)


def test_behind_the_log_quick_commits_keep_the_one_second_cut() -> None:
    clock = Clock()
    cut = BatchCut(batch_size=100_000, max_wait_s=1.0, clock=clock)
    cut.committed(0.1)
    cut.started()
    clock.now += 1.0
    assert cut.due(1)


def test_a_new_batch_forgets_that_the_last_one_was_caught_up() -> None:
    clock = Clock()
    cut = BatchCut(batch_size=100_000, max_wait_s=1.0, clock=clock)
    cut.caught_up()
    cut.committed(5.0)
    cut.started()  # a burst arrives after the quiet spell
    clock.now += 1.0
    assert not cut.due(10)
    assert cut.wait_s() == COMMIT_AMORTISATION * 5.0


def test_a_runs_first_batches_grow_from_the_first_size_to_the_batch_size() -> None:
    cut = BatchCut(batch_size=100_000, max_wait_s=None, clock=Clock())
    sizes = []
    for _ in range(5):
        cut.started()
        sizes.append(cut.size())
        assert not cut.due(cut.size() - 1)
        assert cut.due(cut.size())
        cut.committed(1.0)
    assert sizes == [FIRST_BATCH_SIZE * 2**n for n in range(4)] + [100_000]


def test_a_batch_size_below_the_first_size_is_kept_from_the_start() -> None:
    cut = BatchCut(batch_size=FIRST_BATCH_SIZE // 4, max_wait_s=None, clock=Clock())
    cut.started()
    assert cut.size() == FIRST_BATCH_SIZE // 4


class ChunkedSource:
    """One partition's records in chunks of any size, as a Kafka source hands them over, and
    a read position past the last (a transaction marker after it, say)."""

    name = "topic"

    def __init__(self, chunks: list[list[Record]], position: int) -> None:
        self._chunks = chunks
        self._position = position

    def chunks(self) -> Iterator[list[Record] | None]:
        yield from self._chunks

    def positions(self) -> dict[int, int]:
        return {0: self._position}

    def lag(self, next_offsets: dict[int, int]) -> int:
        return 0

    def close(self) -> None:
        pass


def _records(first: int, count: int) -> list[Record]:
    return [
        prepared_record("topic", 0, n, None, track(n, eid=f"p-{n}", anonymous_id=f"a{n % 3}"))
        for n in range(first, first + count)
    ]


def test_a_chunk_larger_than_the_batch_size_is_committed_as_batches_of_that_size(
    tmp_path: Path,
) -> None:
    """The batch size is what one transaction holds, whatever the size of the source's
    chunks: each batch commits its own records' offsets, and only the last one the read
    position past them."""
    commits: list[tuple[list[int], int]] = []

    def after_commit(offsets: list[TopicOffset], stats: FoldStats) -> None:
        commits.append(([o.next_offset for o in offsets], stats.last_batch_size))

    source = ChunkedSource([_records(0, 7), _records(7, 2)], position=12)
    options = PipelineOptions(batch_size=3, max_wait_s=None, after_commit=after_commit)
    with ProjectionStore(tmp_path / "p.duckdb") as store:
        stats = Pipeline(store, store.fold_config(None), options).run(source)
    assert stats.folded == 9 and stats.batches == 3
    assert commits == [([3], 3), ([6], 3), ([12], 3)]
