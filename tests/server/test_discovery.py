"""Where a server listens, recorded beside its database; a record of a dead process is ignored."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from profile_engine.server.discovery import (
    ServerInfo,
    client_host,
    remove_server_file,
    running_server,
    server_file,
    write_server_file,
)


def test_a_live_server_is_found_and_only_its_own_record_is_removed(db_path: Path) -> None:
    info = ServerInfo("127.0.0.1", 8321, os.getpid(), "t0ken")
    written = write_server_file(db_path, info)
    assert written == server_file(db_path) == Path(str(db_path) + ".server.json")
    assert oct(written.stat().st_mode & 0o777) == "0o600"
    assert running_server(db_path) == info
    remove_server_file(db_path, pid=os.getpid() + 1)  # another process's stop
    assert running_server(db_path) == info
    remove_server_file(db_path, pid=os.getpid())
    assert running_server(db_path) is None and not written.exists()


def test_a_record_left_by_a_dead_process_or_garbled_is_ignored(db_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    write_server_file(db_path, ServerInfo("127.0.0.1", 8321, int(finished.stdout)))
    assert running_server(db_path) is None
    server_file(db_path).write_text("{not json")
    assert running_server(db_path) is None
    server_file(db_path).write_text('{"host": "127.0.0.1"}')
    assert running_server(db_path) is None


def test_clients_reach_a_wildcard_bind_on_loopback() -> None:
    assert client_host("0.0.0.0") == "127.0.0.1"
    assert client_host("::") == "::1"
    assert client_host("10.1.2.3") == "10.1.2.3"
    assert ServerInfo("::1", 80, 1).url == "http://[::1]:80"
