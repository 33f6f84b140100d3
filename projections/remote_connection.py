"""A DuckDB connection used from another process: the live server's fold runs in a process of
its own and writes through the server's connection (README "The fold in a process of its own").

DuckDB lets only the process that opened the file use it, so the server's readers and its fold
share one instance. In one process they also share one GIL, and the fold's own Python (identity
resolution, building a batch's Arrow columns) held it for most of each batch: a reader waited
for the fold to hand it over after every DuckDB call. Here the fold's Python runs in another
process and sends each statement to the server, whose fold thread runs it on the real
connection (DuckDB releases the GIL while it works).

- ``RemoteConnection`` (the fold's process) has the part of ``DuckDBPyConnection`` the batch
  writers use: ``execute`` (returning itself, as DuckDB's does), ``executemany``,
  ``fetchone``, ``fetchall``, ``to_arrow_table``, ``register``/``unregister`` of Arrow tables,
  and ``close``; plus ``call`` and ``note`` for the server's own hooks, and ``context`` for a
  server-side context manager entered and left around a block.
- ``ConnectionHost`` (the server) answers one such connection until the other side closes it.
  A statement's DuckDB error comes back as the same exception. When the other side goes away
  mid-transaction (it crashed or was killed), the host rolls the transaction back, leaves the
  contexts it entered and drops the tables it registered, so the connection is as before.

Arrow tables cross as Arrow IPC streams (no per-value work on either side); rows come back as
DuckDB's own ``fetchall`` makes them (pickled), so every value has the type it would have had.
"""

from __future__ import annotations

import contextlib
import pickle
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack
from multiprocessing.connection import Connection
from typing import Any

import duckdb
import pyarrow as pa

_OK = "ok"
_ERROR = "error"


class RemoteConnectionClosed(Exception):
    """The host went away (the server stopped or crashed)."""


def _to_ipc(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


class RemoteConnection:
    """The fold process's end: DuckDB's connection API, each call answered by the host."""

    def __init__(self, channel: Connection) -> None:
        self._channel = channel

    # -- DuckDB's connection API ----------------------------------------------------------

    def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> RemoteConnection:
        self._ask(("execute", sql, None if parameters is None else list(parameters)))
        return self

    def executemany(self, sql: str, parameters: Sequence[Sequence[Any]]) -> RemoteConnection:
        self._ask(("executemany", sql, [list(row) for row in parameters]))
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._ask(("fetchall",))
        return rows

    def fetchone(self) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._ask(("fetchone",))
        return row

    def to_arrow_table(self) -> pa.Table:
        return _from_ipc(self._ask(("to_arrow_table",)))

    def register(self, name: str, table: pa.Table | pa.RecordBatch) -> RemoteConnection:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        self._send(("register", name))
        try:
            self._channel.send_bytes(_to_ipc(table))
        except (OSError, EOFError) as error:
            raise RemoteConnectionClosed(f"the server's connection is gone: {error}") from None
        self._reply()
        return self

    def unregister(self, name: str) -> RemoteConnection:
        self._ask(("unregister", name))
        return self

    def close(self) -> None:
        self._channel.close()

    # -- the host's hooks -----------------------------------------------------------------

    def call(self, name: str, argument: Any = None) -> Any:
        """Run the host's hook ``name`` with ``argument`` and return what it returned."""
        return self._ask(("call", name, argument))

    def note(self, name: str, argument: Any = None) -> None:
        """Hand ``argument`` to the host's hook ``name`` without waiting for it."""
        self._send(("note", name, argument))

    @contextlib.contextmanager
    def context(self, name: str) -> Iterator[None]:
        """The host's context manager ``name``, entered for the block (on the host's side)."""
        self._ask(("enter", name))
        try:
            yield
        finally:
            self._ask(("exit", name))

    # -- the wire -------------------------------------------------------------------------

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            self._channel.send(message)
        except (OSError, EOFError) as error:
            raise RemoteConnectionClosed(f"the server's connection is gone: {error}") from None

    def _ask(self, message: tuple[Any, ...]) -> Any:
        self._send(message)
        return self._reply()

    def _reply(self) -> Any:
        try:
            status, value = self._channel.recv()
        except (OSError, EOFError) as error:
            raise RemoteConnectionClosed(f"the server's connection is gone: {error}") from None
        if status == _ERROR:
            raise value
        return value


class ConnectionHost:
    """The server's end: runs a ``RemoteConnection``'s requests on ``con``.

    ``calls``: hooks the other side may ``call`` (their return value is sent back) or
    ``note`` (not answered); ``contexts``: context-manager factories it may enter and leave.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        calls: dict[str, Callable[[Any], Any]] | None = None,
        contexts: dict[str, Callable[[], AbstractContextManager[Any]]] | None = None,
    ) -> None:
        self._con = con
        self._calls = calls or {}
        self._contexts = contexts or {}
        self._entered: dict[str, ExitStack] = {}
        self._registered: dict[str, pa.Table] = {}

    def serve(self, channel: Connection) -> None:
        """Answer requests until the other side closes its end."""
        try:
            while True:
                try:
                    message = channel.recv()
                except (EOFError, OSError):
                    return
                if message[0] == "note":
                    self._calls[message[1]](message[2])
                    continue
                try:
                    if message[0] == "register":
                        self._register(message[1], channel.recv_bytes())
                        value = None
                    else:
                        value = self._answer(message)
                except Exception as error:  # sent back; the other side decides
                    channel.send((_ERROR, _sendable(error)))
                else:
                    channel.send((_OK, value))
        finally:
            self._clean_up()

    def _answer(self, message: tuple[Any, ...]) -> Any:
        op = message[0]
        con = self._con
        if op == "execute":
            con.execute(message[1], message[2])
            return None
        if op == "fetchall":
            return con.fetchall()
        if op == "fetchone":
            return con.fetchone()
        if op == "to_arrow_table":
            with warnings.catch_warnings():  # DuckDB's note on the copy: small tables here
                warnings.simplefilter("ignore", UserWarning)
                return _to_ipc(con.to_arrow_table()).to_pybytes()
        if op == "executemany":
            con.executemany(message[1], message[2])
            return None
        if op == "unregister":
            con.unregister(message[1])
            self._registered.pop(message[1], None)
            return None
        if op == "call":
            return self._calls[message[1]](message[2])
        if op == "enter":
            stack = ExitStack()
            stack.enter_context(self._contexts[message[1]]())
            self._entered[message[1]] = stack
            return None
        if op == "exit":
            self._entered.pop(message[1]).close()
            return None
        raise ValueError(f"unknown request {op!r}")

    def _register(self, name: str, data: bytes) -> None:
        table = _from_ipc(data)
        self._con.register(name, table)
        self._registered[name] = table  # DuckDB scans it in place: keep it alive

    def _clean_up(self) -> None:
        """Leave the connection as the other side found it, whatever state it left in."""
        for stack in self._entered.values():
            with contextlib.suppress(Exception):
                stack.close()
        self._entered.clear()
        # No transaction open is the normal end: DuckDB then refuses the ROLLBACK.
        with contextlib.suppress(duckdb.Error):
            self._con.execute("ROLLBACK")
        for name in self._registered:
            with contextlib.suppress(duckdb.Error):
                self._con.unregister(name)
        self._registered.clear()


def _sendable(error: Exception) -> Exception:
    """``error`` if it survives pickling (DuckDB's do), else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error
