"""The CLI's one error handler: an error's kind decides its exit code; the message is one line.

Edges translate library failures into ``ProfileEngineError`` kinds (see profile_engine.errors),
so nothing here inspects kafka-python or DuckDB classes. A failure that reaches this handler
without a kind is a bug: it keeps its traceback.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click

from profile_engine.errors import ErrorKind, ProfileEngineError

# sysexits(3)-style codes so scripts can tell "fix the input" from "retry" from "call someone".
EXIT_CODES: dict[ErrorKind, int] = {
    ErrorKind.BAD_INPUT: 1,
    ErrorKind.TRANSIENT: 75,  # EX_TEMPFAIL: try again later
    ErrorKind.NEEDS_OPERATOR: 78,  # EX_CONFIG: something must be fixed first
}
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process it ended


class Terminated(KeyboardInterrupt):
    """SIGTERM, stopping a command as Ctrl-C does (``consume`` and ``serve`` handle both
    themselves: they finish the batch in hand)."""


def exit_code(error: ProfileEngineError) -> int:
    return EXIT_CODES[error.kind]


class HandledGroup(click.Group):
    """A click group whose commands' ProfileEngineErrors become one line and an exit code.

    Handled here (not around ``main``) so that click's test runner sees the same behaviour.
    """

    def invoke(self, ctx: click.Context) -> Any:
        stops: list[int] = []
        try:
            with _stop_signals(stops):
                return super().invoke(ctx)
        except ProfileEngineError as error:
            click.echo(f"Error: {error}", err=True)
            ctx.exit(exit_code(error))
        except KeyboardInterrupt as stop:
            _stopped(ctx, isinstance(stop, Terminated))
        except Exception:
            # A signal that landed inside a library call (DuckDB turns Ctrl-C into its own
            # "interrupted" error) is still the user's stop, not a failure.
            if not stops:
                raise
            _stopped(ctx, stops[-1] == signal.SIGTERM)


def _stopped(ctx: click.Context, terminated: bool) -> None:
    click.echo("terminated" if terminated else "interrupted", err=True)
    ctx.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)


@contextmanager
def _stop_signals(stops: list[int]) -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt / Terminated (so ``finally`` blocks clean
    up) and are noted in ``stops``; the handlers before are restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        stops.append(signum)
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
