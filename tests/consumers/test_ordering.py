"""The merged order of partitions depends on the log only, not on how fetches arrive."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumers.ordering import PartitionMerger
from consumers.records import RawRecord

partition_logs = st.dictionaries(
    st.integers(min_value=0, max_value=4),
    st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=15),  # timestamps
    min_size=1,
    max_size=4,
)


def _records(logs: dict[int, list[int]]) -> dict[int, list[RawRecord]]:
    return {
        p: [(p, offset, ts, None, f"{p}/{offset}".encode()) for offset, ts in enumerate(stamps)]
        for p, stamps in logs.items()
    }


def _merge(records: dict[int, list[RawRecord]], fetch_plan: list[int]) -> list[RawRecord]:
    """Feed the partitions in fetch-sized pieces, in an order chosen by ``fetch_plan``."""
    merger = PartitionMerger({p: len(r) for p, r in records.items()}, {p: 0 for p in records})
    pending = {p: list(r) for p, r in records.items()}
    out: list[RawRecord] = []
    step = 0
    while any(pending.values()):
        live = sorted(p for p, r in pending.items() if r)
        choice = fetch_plan[step % len(fetch_plan)] if fetch_plan else 0
        partition = live[choice % len(live)]
        size = 1 + choice % 3
        merger.add(partition, pending[partition][:size])
        del pending[partition][:size]
        out.extend(merger.drain())
        step += 1
    out.extend(merger.drain())
    assert merger.caught_up()
    return out


@given(logs=partition_logs, plan_a=st.lists(st.integers(0, 9)), plan_b=st.lists(st.integers(0, 9)))
def test_any_fetch_interleaving_gives_the_same_sequence(
    logs: dict[int, list[int]], plan_a: list[int], plan_b: list[int]
) -> None:
    records = _records(logs)
    first = _merge(records, plan_a)
    assert first == _merge(records, plan_b)
    assert sorted(first) == sorted(r for rs in records.values() for r in rs)  # nothing lost


def test_heads_are_released_by_timestamp_then_partition() -> None:
    records = _records({0: [5, 1], 1: [3], 2: [5]})
    order = [(r[0], r[1]) for r in _merge(records, [0])]
    # partition 1's head (ts 3) first; then ts 5 on partitions 0 and 2 by partition number;
    # partition 0's second record (ts 1) comes after its head: a partition keeps its order.
    assert order == [(1, 0), (0, 0), (0, 1), (2, 0)]


def test_nothing_is_released_while_a_partition_with_unread_data_has_none_buffered() -> None:
    merger = PartitionMerger({0: 1, 1: 1}, {0: 0, 1: 0})
    merger.add(0, [(0, 0, 10, None, b"a")])
    assert list(merger.drain()) == []
    merger.add(1, [(1, 0, 20, None, b"b")])
    assert [r[4] for r in merger.drain()] == [b"a", b"b"]
