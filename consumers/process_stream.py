"""Run a producer of chunks in a child process and stream its chunks back, with back-pressure.

Decoding (JSON parsing, validation, preparing events) costs about as much CPU as folding: in a
child process it runs on the other core while this one folds. The child pickles each chunk
into a pipe; a thread here drains the pipe into a bounded queue, so the child keeps working
while the fold does, and stops when the queue is full.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import pickle
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from profile_engine.errors import NeedsOperator

_CHUNK = "chunk"
_END = "end"
_ERROR = "error"

ChunkProducer = Callable[..., Iterator[Any]]


class ChildFailed(NeedsOperator):
    """The child process reported an error or died."""


def _send(conn: Connection, kind: str, payload: Any = None) -> None:
    conn.send_bytes(pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL))


def _child_main(producer: ChunkProducer, args: tuple[Any, ...], conn: Connection) -> None:
    # Ctrl-C reaches the whole process group; the parent decides when to stop and closes
    # the pipe, which ends this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Nothing here lives longer than a chunk: collections would only rescan chunks in flight.
    gc.disable()
    try:
        for chunk in producer(*args):
            _send(conn, _CHUNK, chunk)
            gc.collect(1)
        _send(conn, _END)
    except (BrokenPipeError, EOFError):
        return
    except Exception as error:  # reported to the parent, which raises it
        with contextlib.suppress(BrokenPipeError, OSError):
            _send(conn, _ERROR, f"{type(error).__name__}: {error}")
    finally:
        conn.close()


class ProcessStream:
    """Chunks produced by ``producer(*args)`` in a spawned child process, in order."""

    def __init__(self, producer: ChunkProducer, *args: Any, queued_chunks: int = 32) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_child_main, args=(producer, args, child_conn), name="decoder", daemon=True
        )
        self._process.start()
        child_conn.close()
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=queued_chunks)
        self._closed = threading.Event()
        self._pump = threading.Thread(target=self._drain_pipe, name="decoder-pipe", daemon=True)
        self._pump.start()

    def _drain_pipe(self) -> None:
        while not self._closed.is_set():
            try:
                message = pickle.loads(self._conn.recv_bytes())
            except (EOFError, OSError, TypeError, ValueError):
                if self._closed.is_set():
                    return  # closed by us (a stop mid-read): the end of the pipe is expected
                message = (_ERROR, "the decoding process stopped unexpectedly")
            while not self._closed.is_set():
                try:
                    self._queue.put(message, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if message[0] in (_END, _ERROR):
                return

    def __iter__(self) -> Iterator[Any]:
        while True:
            kind, payload = self._queue.get()
            if kind == _CHUNK:
                yield payload
            elif kind == _END:
                return
            else:
                raise ChildFailed(payload)

    def close(self) -> None:
        self._closed.set()
        self._conn.close()
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)
        self._pump.join(timeout=5)
