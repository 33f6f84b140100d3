"""Where a running server listens, recorded beside the database it holds.

DuckDB lets the serving process alone open the file, so the query commands find the server
through ``<db>.server.json`` (host, port, pid, token) and ask it instead. The server writes
the file once it listens and removes it when it stops cleanly; a file left by a process
that is gone (killed, crashed) is ignored. Standard library only: the CLI loads it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

SUFFIX = ".server.json"


@dataclass(frozen=True, slots=True)
class ServerInfo:
    host: str  # where clients connect: loopback when the server listens on every address
    port: int
    pid: int
    token: str | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def server_file(db_path: str | Path) -> Path:
    return Path(str(db_path) + SUFFIX)


def client_host(bound_host: str) -> str:
    """The address a local client uses to reach a server bound to ``bound_host``."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bound_host, bound_host)


def write_server_file(db_path: str | Path, info: ServerInfo) -> Path:
    """Record ``info`` atomically, readable by this user only (it may hold the token)."""
    target = server_file(db_path)
    scratch = target.with_name(target.name + f".{os.getpid()}.tmp")
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(asdict(info), handle)
    os.replace(scratch, target)
    return target


def remove_server_file(db_path: str | Path, pid: int) -> None:
    """Remove the record if it is this process's (never another server's)."""
    recorded = _read(server_file(db_path))
    if recorded is not None and recorded.pid == pid:
        server_file(db_path).unlink(missing_ok=True)


def running_server(db_path: str | Path) -> ServerInfo | None:
    """The server recorded for ``db_path`` if its process is alive, else None."""
    info = _read(server_file(db_path))
    if info is None or not _alive(info.pid):
        return None
    return info


def _read(path: Path) -> ServerInfo | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ServerInfo(
            host=str(data["host"]),
            port=int(data["port"]),
            pid=int(data["pid"]),
            token=data.get("token"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent, half-written by hand or from another version: not a server


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    with contextlib.suppress(OSError):
        # A zombie (exited, not yet reaped) is not a server.
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"
    return True
