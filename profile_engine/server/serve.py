"""`profile-engine serve`: open the projection once, fold in the background, answer over HTTP.

Order matters: listen first (a busy port fails before anything is opened), then open the
projection (a database held by another process fails next), start the fold, record where the
server listens beside the database, and serve until SIGTERM/Ctrl-C. On the way out: stop
answering, remove the record, let the fold commit what it holds, close the database.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn

from profile_engine.errors import BadInput, NeedsOperator, first_line
from profile_engine.server.api import SQL_TIMEOUT_S, Engine
from profile_engine.server.app import create_app
from profile_engine.server.discovery import (
    ServerInfo,
    client_host,
    remove_server_file,
    write_server_file,
)
from profile_engine.server.fold_adapter import ConsumerFoldRunner, FoldOptions
from profile_engine.server.security import TOKEN_ENV, is_loopback
from projections.connection import ProjectionLock
from projections.live import LiveProjection

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8321
FOLD_STOP_TIMEOUT_S = 60.0
# A reader's lookup makes several DuckDB calls, and after each it waits for the GIL behind the
# fold thread (pure Python) for up to the switch interval (5 ms by default).
SWITCH_INTERVAL_S = 0.001
GRACEFUL_SHUTDOWN_S = 10


class CannotListen(NeedsOperator):
    """The address is taken or not ours to bind."""


@dataclass(frozen=True)
class ServeOptions:
    db_path: str
    host: str
    port: int
    token: str | None
    fold: FoldOptions
    sql_timeout_s: float = SQL_TIMEOUT_S


def check_binding(host: str, token: str | None) -> None:
    """Anything but loopback needs a token: the API shows every profile."""
    if not is_loopback(host) and not token:
        raise BadInput(
            f"listening on {host} needs a token: pass --token or set {TOKEN_ENV} "
            "(loopback addresses need none)"
        )


def listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        raise CannotListen(f"cannot listen on {host}:{port}: {first_line(error)}") from error
    sock.set_inheritable(True)
    return sock


def quiet_logs() -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # kafka-python logs every failed connection attempt; /api/status and the page say once
    # that the broker is unreachable.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


def serve(options: ServeOptions, announce: Callable[[str], None]) -> None:
    """Run until SIGTERM/SIGINT; returns after a clean stop."""
    check_binding(options.host, options.token)
    quiet_logs()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    sock = listen(options.host, options.port)
    server: uvicorn.Server | None = None

    def request_stop(*_: Any) -> None:
        # Before uvicorn runs (and after it restores this handler and re-raises the signal
        # it caught) a signal only asks the server to stop.
        if server is not None:
            server.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    # Like consume: no rebuild swaps the file from under the server, no second writer starts.
    lock = ProjectionLock(options.db_path, "serve")
    try:
        lock.acquire()
        sealing = options.fold.sealing
        projection = LiveProjection(options.db_path, None if sealing is None else sealing.ring)
    except BaseException:
        lock.release()
        sock.close()
        raise
    runner = ConsumerFoldRunner(projection, options.fold)
    registry = options.fold.registry
    types = {a.name: a.type for a in registry.attributes()} if registry is not None else {}
    engine = Engine(projection, runner, options.sql_timeout_s, types)
    app = create_app(engine, options.token)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
    )
    server = uvicorn.Server(config)
    port = sock.getsockname()[1]
    info = ServerInfo(client_host(options.host), port, os.getpid(), options.token)
    # Everything alive now (modules, the app and its schemas) lives as long as the process.
    # Frozen out of the collector's sight, the collections walk only what came after: a
    # collection holds the GIL, and the readers wait for it, as long as it walks.
    gc.collect()
    gc.freeze()
    runner.start()
    warm_stop = threading.Event()
    warm = threading.Thread(
        target=engine.answers.keep_warm, args=(warm_stop,), name="keep-warm", daemon=True
    )
    warm.start()
    stopped = False
    try:
        write_server_file(options.db_path, info)
        announce(info.url)
        server.run(sockets=[sock])
    finally:
        remove_server_file(options.db_path, os.getpid())
        warm_stop.set()
        warm.join(FOLD_STOP_TIMEOUT_S)
        stopped = runner.stop(FOLD_STOP_TIMEOUT_S)
        if stopped:
            projection.close()
        else:
            # Closing DuckDB under a running commit is not safe; exiting is: the batch in
            # flight either committed or is re-read on the next start.
            log.warning("the fold did not stop within %.0f s; exiting", FOLD_STOP_TIMEOUT_S)
        lock.release()
        sock.close()
        gc.unfreeze()  # a serve run inside a longer process (the tests) leaves nothing frozen
