"""Garbage collection while folding: frozen batches, cycles still reclaimed in the end."""

from __future__ import annotations

import gc
import weakref

from consumers.consumer import paused_full_gc


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _garbage_cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_batches_are_frozen_and_a_full_collection_reclaims_cycles() -> None:
    with paused_full_gc() as fold_gc:
        assert not gc.isenabled()
        fold_gc.FULL_EVERY_EVENTS = 100
        cycle = _garbage_cycle()
        fold_gc.after_batch(60)
        assert gc.get_freeze_count() > 0  # survivors out of the collector's sight
        assert cycle() is not None  # no collection yet: below the threshold
        fold_gc.after_batch(60)
        assert cycle() is None  # threshold crossed: full collection
    assert gc.get_freeze_count() == 0  # everything handed back to the collector


def test_collection_is_restored_after_folding() -> None:
    assert gc.isenabled()
    with paused_full_gc():
        pass
    assert gc.isenabled()
