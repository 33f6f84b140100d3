"""How the live server's reads begin and end their transactions beside a committing fold.

DuckDB begins and ends every transaction under the one lock its ``COMMIT`` holds while it
removes a batch's replaced rows from the lookup indexes: a read that begins, or ends, while
the fold commits waits for the whole commit (70-350 ms a batch of 25k events; the README's
"What the live server's readers wait for"). A transaction that has begun before the commit
reads on through it (MVCC: it sees the batch before). So:

- reads end their transactions on a thread of their own (``ReadCloser``): the answer goes
  out without waiting, and when a batch's commit leaves DuckDB index entries to clean up
  behind the reads it overlapped, the closing thread does that work, not a request;
- before each commit the fold begins a few read transactions (``PrimedReads``) and reads
  that arrive during the commit take one of them, so they see the batch before the commit
  as a read arriving a moment earlier would; right after the commit it begins a few more,
  which see the batch, for the reads that arrive while DuckDB cleans up after it. The fold
  primes them only when reads came since its last commit: an idle server's commits run with
  no transaction beside them, DuckDB's cheaper way.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable

import duckdb

# Reads a commit can start at once without waiting: the server's own concurrency is its
# worker threads, and a request makes one read at a time. Beyond these, a read arriving
# during the commit begins its own transaction and waits for the commit, as before.
PRIMED_READS = 16
# A statement that binds a table: DuckDB begins a transaction on a database at its first
# catalog access, not at BEGIN, so the primed transaction must make one before the commit.
_FIRST_ACCESS = "SELECT 1 FROM projection_meta LIMIT 0"


def begin_read(cursor: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """``cursor`` in a read-only transaction (one snapshot; DuckDB refuses writes in it)."""
    cursor.execute("BEGIN TRANSACTION READ ONLY")
    return cursor


class ReadCloser:
    """Closes readers' cursors, ending (rolling back) their transactions, on its own thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[duckdb.DuckDBPyConnection | threading.Event | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="read-closer", daemon=True)
        self._thread.start()

    def close_later(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._queue.put(cursor)

    def drain(self) -> None:
        """Return once every cursor handed over so far is closed."""
        closed = threading.Event()
        self._queue.put(closed)
        closed.wait()

    def stop(self) -> None:
        """Close what was handed over, then end the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if isinstance(item, threading.Event):
                item.set()
                continue
            # A cursor whose connection was closed under it has nothing left to end.
            with contextlib.suppress(duckdb.Error):
                item.close()


class PrimedReads:
    """Read transactions begun by the fold around its commit, for the reads that arrive then.

    Before the commit (``offer``): transactions that read the batch before it, for reads
    arriving during the commit. Right after it (``renew``): transactions that read the batch,
    for reads arriving while the transactions the commit overlapped end and DuckDB cleans up
    after the commit under the same lock (they are begun before any of those end, so they do
    not wait for it, and they do not hold the clean-up back: they began after the commit).
    Either replaces the transactions not taken, which the caller ends.
    """

    def __init__(self, new_cursor: Callable[[], duckdb.DuckDBPyConnection]) -> None:
        self._new_cursor = new_cursor
        self._lock = threading.Lock()
        self._ready: list[duckdb.DuckDBPyConnection] = []
        self._reads_since_offer = 0
        self._offered = False

    def offer(self) -> list[duckdb.DuckDBPyConnection]:
        """Begin read transactions for the commit about to start (on the fold's thread), if
        reads came since the last offer; returns the ones they replace."""
        with self._lock:
            wanted = PRIMED_READS if self._reads_since_offer else 0
            self._reads_since_offer = 0
        self._offered = wanted > 0
        return self._replace(wanted)

    def renew(self) -> list[duckdb.DuckDBPyConnection]:
        """After the commit: begin transactions that read it, if the commit had some offered
        beside it; returns the ones they replace (begun before the commit)."""
        return self._replace(PRIMED_READS if self._offered else 0)

    def withdraw(self) -> list[duckdb.DuckDBPyConnection]:
        """The primed transactions nobody took (for the caller to end); none are left."""
        with self._lock:
            left, self._ready = self._ready, []
        return left

    def take(self) -> duckdb.DuckDBPyConnection | None:
        """A primed transaction, or None (then begin one as usual)."""
        with self._lock:
            self._reads_since_offer += 1
            return self._ready.pop() if self._ready else None

    def _replace(self, wanted: int) -> list[duckdb.DuckDBPyConnection]:
        primed: list[duckdb.DuckDBPyConnection] = []
        # Priming only spares readers a wait: if DuckDB refuses it, the commit goes ahead
        # without (whatever failed here fails the reads or the commit with its own error).
        with contextlib.suppress(duckdb.Error):
            while len(primed) < wanted:
                primed.append(self._begun())
        with self._lock:
            left, self._ready = self._ready, primed
        return left

    def _begun(self) -> duckdb.DuckDBPyConnection:
        cursor = begin_read(self._new_cursor())
        cursor.execute(_FIRST_ACCESS).fetchall()
        return cursor
