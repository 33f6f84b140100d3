"""Answers computed once per change of the projection, and never older than the last change."""

from __future__ import annotations

import threading
import time

import pytest

from profile_engine.server.cache import PerChangeCache


def test_an_answer_is_reused_until_the_projection_changes() -> None:
    version = [0]
    cache = PerChangeCache(lambda: version[0])
    computed: list[int] = []

    def compute() -> int:
        computed.append(version[0])
        return version[0] * 10

    assert cache.get("counts", compute) == 0
    assert cache.get("counts", compute) == 0
    assert cache.get(("counts", "sms"), compute) == 0  # another key, its own answer
    version[0] = 1
    assert cache.get("counts", compute) == 10
    assert computed == [0, 0, 1]


def test_concurrent_askers_wait_for_one_computation() -> None:
    cache = PerChangeCache(lambda: 7)
    calls = []

    def slow() -> str:
        calls.append(1)
        time.sleep(0.2)
        return "answer"

    answers: list[str] = []
    threads = [threading.Thread(target=lambda: answers.append(cache.get("k", slow)))
               for _ in range(8)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == ["answer"] * 8 and len(calls) == 1


def test_an_answer_computed_before_a_change_is_not_served_after_it() -> None:
    version = [0]
    cache = PerChangeCache(lambda: version[0])

    def changes_midway() -> str:
        version[0] = 1  # a batch commits while the answer is computed
        return "old"

    assert cache.get("k", changes_midway) == "old"
    assert cache.get("k", lambda: "new") == "new"


def test_a_failed_computation_is_not_kept() -> None:
    cache = PerChangeCache(lambda: 0)

    def fails() -> str:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cache.get("k", fails)
    assert cache.get("k", lambda: "fine") == "fine"
