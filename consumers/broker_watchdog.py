"""Stop a broker when the process that started it dies.

A test session that is killed (timeout, Ctrl-C twice, CI cancel) never runs its teardown, and
a detached JVM would then live on holding ports and half a gigabyte. The session starts this
watchdog as its own child: once the watchdog's parent changes, its owner is gone, and it stops
the broker. It exits as soon as the broker exits by itself.

Usage: python -m consumers.broker_watchdog OWNER_PID BROKER_PID
"""

from __future__ import annotations

import os
import signal
import sys
import time

from consumers.broker_process import pid_alive

POLL_SECONDS = 0.5
GRACE_SECONDS = 20.0


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def watch(owner_pid: int, broker_pid: int) -> None:
    while pid_alive(broker_pid):
        if os.getppid() != owner_pid:
            _terminate(broker_pid)
            return
        time.sleep(POLL_SECONDS)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m consumers.broker_watchdog OWNER_PID BROKER_PID\n")
        return 2
    watch(int(argv[0]), int(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
