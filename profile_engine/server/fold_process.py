"""The live server's fold, in a process of its own (see projections/remote_connection.py).

The process runs exactly ``consume``'s pipeline (``consume_into``) with a ``ProjectionStore``
whose connection is a ``RemoteConnection`` to the server: every statement runs on the
server's DuckDB instance, in the server's transactions, so offsets and rows still commit
together. What the server needs to hear goes through the connection's hooks:

- ``progress`` (note): the fold's running counters;
- ``committed`` (call): a batch committed with these next offsets and these counters; the
  answer says whether the lookup indexes outgrew DuckDB's limit (the fold then stops after
  the batch);
- ``commit`` (context): around each COMMIT (the server readies its readers);
- ``finished`` (note): the last counters and, when the fold stopped on an error, its kind and
  its one-line text.

The server asks it to stop through ``stop`` (an event shared with it); Ctrl-C at a terminal
reaches the whole process group, so the process ignores SIGINT and waits for the server. A
server killed outright (SIGKILL) asks nothing: the process stops when it finds it has
another parent, or at its next statement.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import TYPE_CHECKING, cast

import duckdb

from consumers.consumer import ConsumeOptions, consume_into
from consumers.pipeline import FoldStats
from profile_engine.errors import ProfileEngineError, Transient, first_line
from projections.remote_connection import RemoteConnection, RemoteConnectionClosed
from projections.store import ProjectionStore, TopicOffset
from projections.typed_traits import refresh_typed_traits_view

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from profile_engine.server.fold_adapter import FoldOptions  # imports this module

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldJob:
    """What the fold process needs (picklable: it crosses to a spawned process)."""

    db_path: str
    options: FoldOptions
    niceness: int


@dataclass(frozen=True)
class FoldEnd:
    """How the fold process ended: its counters, and the error it stopped on (if any)."""

    stats: FoldStats | None
    error_kind: str | None = None  # "transient", "failed" (ProfileEngineError) or "bug"
    error: str | None = None


def run_fold_process(channel: Connection, job: FoldJob, stop: Event) -> None:
    """The process's entry point: fold until stopped, outgrown or failed, then say how."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        os.setpriority(os.PRIO_PROCESS, 0, job.niceness)  # its decoders inherit it
    remote = RemoteConnection(channel)
    server = os.getppid()
    outgrown = False
    current: FoldStats | None = None

    def progress(stats: FoldStats) -> None:
        nonlocal current
        current = stats
        remote.note("progress", stats)

    def after_commit(offsets: list[TopicOffset], stats: FoldStats) -> None:
        nonlocal outgrown
        if remote.call("committed", ({o.partition: o.next_offset for o in offsets}, stats)):
            outgrown = True

    end = FoldEnd(None)
    try:
        # The store is typed with DuckDB's connection; the remote one has the part it uses.
        con = cast(duckdb.DuckDBPyConnection, remote)
        store = ProjectionStore(job.db_path, con=con, around_commit=_commit_hook(remote))
        options = job.options
        if options.registry is not None:
            refresh_typed_traits_view(store.con, options.registry)
        stats = consume_into(
            store,
            options.bootstrap_servers,
            options.topic,
            options.dead_letter_topic,
            options.config,
            ConsumeOptions(
                batch_size=options.batch_size,
                progress=progress,
                # A server killed outright cannot say stop: this process then has a new parent.
                should_stop=lambda: stop.is_set() or outgrown or os.getppid() != server,
                after_commit=after_commit,
                sealing=options.sealing,
            ),
        )
        end = FoldEnd(stats)
    except RemoteConnectionClosed:
        return  # the server is gone: nobody to tell
    except Transient as error:
        end = FoldEnd(current, "transient", str(error))
    except ProfileEngineError as error:
        end = FoldEnd(current, "failed", str(error))
    except Exception as error:  # a bug: the server keeps serving reads and says what happened
        log.exception("the fold stopped")
        end = FoldEnd(current, "bug", f"{type(error).__name__}: {first_line(error)}")
    try:
        remote.note("finished", end)
    except RemoteConnectionClosed:
        pass  # the server went while this process was ending
    finally:
        remote.close()


def _commit_hook(remote: RemoteConnection) -> Callable[[], AbstractContextManager[None]]:
    return lambda: remote.context("commit")
