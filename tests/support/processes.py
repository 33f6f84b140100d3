"""The CLI as a child process, its output collected as it comes."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from typing import IO


class RunningCli:
    """``profile-engine ARGS`` running; threads read its output so a test can wait for a line."""

    def __init__(self, *args: str) -> None:
        command = [sys.executable, "-m", "profile_engine.cli.main", *args]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=_collect, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.process.stdout, self.stdout_lines),
                (self.process.stderr, self.stderr_lines),
            )
        ]
        for reader in self._readers:
            reader.start()

    def wait_for_line(self, pattern: str, timeout: float) -> str:
        """The first stderr line matching ``pattern``; fails the test after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.stderr_lines):
                if re.search(pattern, line):
                    return line
            if self.process.poll() is not None and not self._readers[1].is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(
            f"no stderr line matched {pattern!r} within {timeout}s: {self.stderr_lines}"
        )

    def finish(self, timeout: float) -> tuple[int, str, str]:
        """Exit code, stdout and stderr once it ends; killed (and failed) after ``timeout``."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"still running after {timeout}s; stderr: {self.stderr_lines}"
            ) from None
        for reader in self._readers:
            reader.join(timeout=10)
        return (
            self.process.returncode,
            "\n".join(self.stdout_lines),
            "\n".join(self.stderr_lines),
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _collect(stream: IO[str], lines: list[str]) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))
