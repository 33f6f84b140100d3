"""Answers that change only when a batch commits or a setting changes, computed once per change.

Counts scan whole tables; eight clients asking at once would each scan them again and take CPU
from the fold beside them. Each answer is kept with the projection's change number it was
computed at and reused until the number moves. After a batch commits, the first asker
computes the new answer; whoever asks while it does gets the answer of the batch before
instead of waiting in line (an answer is never older than the last commit by more than the
time one computation takes). After a settings change nobody gets an older answer: the change
must show at once, so askers wait for the computation.

Kept warm (``keep_warm``, on a thread of the server's): after each change the answers asked for
lately are computed again at once, so the first asker after a commit finds the new answer or,
while it is computed, gets the one before, and no reader waits for a computation except the
first of its kind and after a settings change. A computation meets the fold's commits (DuckDB
makes readers wait while a commit changes the lookup indexes): the thread waits, not a reader.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

from profile_engine.errors import first_line

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_ENTRIES = 256  # answers of distinct arguments kept (months x channels in practice)
WARM_FOR_S = 120.0  # an answer is kept warm this long after it was last asked for
WATCH_EVERY_S = 0.05  # how often keep_warm looks for a change (a comparison of two numbers)


@dataclass(frozen=True, slots=True)
class _Entry:
    version: int
    value: Any


class PerChangeCache:
    def __init__(
        self, version: Callable[[], int], exact_since: Callable[[], int] = lambda: 0
    ) -> None:
        self._version = version
        # Answers computed before this change number are never served once it moved.
        self._exact_since = exact_since
        self._lock = threading.Lock()
        self._entries: dict[Hashable, _Entry] = {}
        self._flights: dict[Hashable, threading.Lock] = {}
        # key -> (its computation, when it was last asked for): what keep_warm recomputes
        self._asked: dict[Hashable, tuple[Callable[[], Any], float]] = {}

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        value = self._get(key, compute)
        # Kept warm only once it was answered: a request refused (a month 2026-13) would be
        # computed, and refused, again after every batch.
        with self._lock:
            if len(self._asked) >= MAX_ENTRIES:
                self._asked.clear()
            self._asked[key] = (compute, time.monotonic())
        return value

    def refresh(self, now: float | None = None) -> int:
        """Compute again every answer asked for in the last WARM_FOR_S that is not current;
        returns how many were computed (an answer being computed by an asker is waited for)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            asked = [(k, c) for k, (c, at) in self._asked.items() if now - at <= WARM_FOR_S]
        version = self._version()
        stale = [(k, c) for k, c in asked if self._fresh(k, version) is None]
        for key, compute in stale:
            try:
                self._get(key, compute)
            except Exception as error:  # the asker meets it again, with its answer
                with self._lock:
                    self._asked.pop(key, None)  # not computed again until asked again
                log.warning("keeping an answer warm failed: %s", first_line(error))
        return len(stale)

    def keep_warm(self, stop: threading.Event) -> None:
        """Until ``stop`` is set: after each change, refresh (runs on a thread of its own)."""
        seen = self._version()
        while not stop.wait(WATCH_EVERY_S):
            version = self._version()
            if version != seen:
                seen = version
                self.refresh()

    def _get(self, key: Hashable, compute: Callable[[], T]) -> T:
        version = self._version()  # read before computing: a later change invalidates it
        found = self._fresh(key, version)
        if found is not None:
            return found.value
        with self._lock:
            flight = self._flights.setdefault(key, threading.Lock())
            previous = self._entries.get(key)
        if not flight.acquire(blocking=False):
            if previous is not None and previous.version >= self._exact_since():
                return previous.value  # the batch before's, while another asker computes
            flight.acquire()
        try:
            found = self._fresh(key, version)  # computed while this thread waited
            if found is not None:
                return found.value
            value = compute()
            with self._lock:
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries.clear()
                    self._flights.clear()
                kept = self._entries.get(key)
                if kept is None or kept.version <= version:
                    self._entries[key] = _Entry(version, value)
            return value
        finally:
            flight.release()

    def _fresh(self, key: Hashable, version: int) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(key)
        return entry if entry is not None and entry.version >= version else None
