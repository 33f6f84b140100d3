"""Answers computed once per change of the projection, and never older than the last change."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from profile_engine.server.cache import WARM_FOR_S, PerChangeCache


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


def _asked_while_computing(cache: PerChangeCache, blocker: threading.Event) -> tuple[str, float]:
    """Another asker's answer and wait while a first asker computes the new answer."""
    started = threading.Event()

    def slow() -> str:
        started.set()
        blocker.wait(5)
        return "new"

    first = threading.Thread(target=lambda: cache.get("k", slow))
    first.start()
    assert started.wait(5)
    asked = time.monotonic()
    threading.Timer(0.3, blocker.set).start()
    answer = cache.get("k", lambda: "computed twice")
    waited = time.monotonic() - asked
    first.join()
    return answer, waited


def test_after_a_batch_askers_get_the_last_answer_while_the_new_one_is_computed() -> None:
    version = [0]
    cache = PerChangeCache(lambda: version[0])
    assert cache.get("k", lambda: "old") == "old"
    version[0] = 1  # a batch committed

    answer, waited = _asked_while_computing(cache, threading.Event())

    assert answer == "old" and waited < 0.2  # not held behind the computation
    assert cache.get("k", lambda: "computed twice") == "new"


def test_after_a_settings_change_askers_wait_for_the_new_answer() -> None:
    version, exact_since = [0], [0]
    cache = PerChangeCache(lambda: version[0], lambda: exact_since[0])
    assert cache.get("k", lambda: "old") == "old"
    version[0] = exact_since[0] = 1  # a setting changed: the old answer is wrong now

    answer, waited = _asked_while_computing(cache, threading.Event())

    assert answer == "new" and waited >= 0.25


def test_after_a_change_the_answers_asked_for_lately_are_computed_before_anyone_asks() -> None:
    version = [0]
    cache = PerChangeCache(lambda: version[0])
    computed: list[tuple[str, int]] = []

    def answer(name: str) -> Callable[[], str]:
        def compute() -> str:
            computed.append((name, version[0]))
            return f"{name}@{version[0]}"

        return compute

    cache.get("counts", answer("counts"))
    cache.get("daily", answer("daily"))
    assert cache.refresh() == 0  # nothing changed
    version[0] = 1
    assert cache.refresh() == 2
    assert cache.get("counts", answer("counts")) == "counts@1"  # no computation left for it
    assert computed == [("counts", 0), ("daily", 0), ("counts", 1), ("daily", 1)]


def test_a_refused_request_is_not_kept_warm_and_a_failing_one_leaves_the_others_warm() -> None:
    """A month 2026-13 was computed, and refused, again after every batch; and one answer
    failing while kept warm stopped the others from being computed."""
    version = [0]
    cache = PerChangeCache(lambda: version[0])
    computed: list[str] = []

    def refused() -> str:
        computed.append("refused")
        raise ValueError("month '2026-13' is not YYYY-MM")

    def breaks_later() -> str:
        computed.append("later")
        if version[0]:
            raise RuntimeError("the database went away")
        return "fine"

    with pytest.raises(ValueError):
        cache.get("bad month", refused)
    cache.get("a", breaks_later)
    cache.get("b", lambda: computed.append("b") or "b")  # type: ignore[func-returns-value]
    version[0] = 1
    assert cache.refresh() == 2  # "a" and "b", not the refused one
    assert computed == ["refused", "later", "b", "later", "b"]
    version[0] = 2
    assert cache.refresh() == 1  # "a" failed: asked for again before it is kept warm again


def test_answers_nobody_asked_for_lately_are_left_cold() -> None:
    version = [0]
    cache = PerChangeCache(lambda: version[0])
    cache.get("counts", lambda: version[0])
    version[0] = 1
    asked_at = time.monotonic()
    assert cache.refresh(now=asked_at + WARM_FOR_S + 1) == 0
    assert cache.refresh(now=asked_at) == 1


def test_keep_warm_computes_the_new_answer_on_its_own_thread_after_a_change() -> None:
    version = [0]
    cache = PerChangeCache(lambda: version[0])
    threads: list[str] = []

    def compute() -> int:
        threads.append(threading.current_thread().name)
        return version[0]

    cache.get("counts", compute)
    stop = threading.Event()
    warm = threading.Thread(target=cache.keep_warm, args=(stop,), name="warm")
    warm.start()
    try:
        version[0] = 1
        deadline = time.monotonic() + 5
        while len(threads) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        warm.join()
    assert threads == [threading.current_thread().name, "warm"]
    assert cache.get("counts", compute) == 1 and len(threads) == 2
