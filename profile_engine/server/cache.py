"""Answers that change only when a batch commits or a setting changes, computed once per change.

Counts scan whole tables; eight clients asking at once would each scan them again and take CPU
from the fold beside them. Each answer is kept with the projection's change number it was
computed at and reused until the number moves. After a batch commits, the first asker
computes the new answer; whoever asks while it does gets the answer of the batch before
instead of waiting in line (an answer is never older than the last commit by more than the
time one computation takes). After a settings change nobody gets an older answer: the change
must show at once, so askers wait for the computation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
MAX_ENTRIES = 256  # answers of distinct arguments kept (months x channels in practice)


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

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
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
