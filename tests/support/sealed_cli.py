"""Running the CLI with a master key, shared by the end-to-end tests of sealed events."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from profile_engine.contract import event_to_json
from profile_engine.crypto import KeyRing
from profile_engine.events import ProfileEvent

MASTER = bytes(range(32))
MASTER_KEY = base64.b64encode(MASTER).decode()
RING = KeyRing.from_master(MASTER)


def cli_env(key: bool = True) -> dict[str, str]:
    """This process's environment without PROFILE_ENGINE_* settings; ``key``: the master key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROFILE_ENGINE_")}
    if key:
        env["PROFILE_ENGINE_MASTER_KEY"] = MASTER_KEY
    return env


def run_cli(*args: str, key: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "profile_engine.cli.main", *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=cli_env(key)
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def write_events(path: Path, events: list[ProfileEvent]) -> Path:
    path.write_text("".join(json.dumps(event_to_json(e)) + "\n" for e in events))
    return path


def key_file(directory: Path) -> Path:
    """The master key in a file only its owner may read (what --key-file accepts)."""
    path = directory / "master.key"
    path.write_text(MASTER_KEY + "\n")
    path.chmod(0o600)
    return path
