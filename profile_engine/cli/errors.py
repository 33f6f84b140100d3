"""The CLI's one error handler: an error's kind decides its exit code; the message is one line.

Edges translate library failures into ``ProfileEngineError`` kinds (see profile_engine.errors),
so nothing here inspects kafka-python or DuckDB classes. A failure that reaches this handler
without a kind is a bug: it keeps its traceback.
"""

from __future__ import annotations

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


def exit_code(error: ProfileEngineError) -> int:
    return EXIT_CODES[error.kind]


class HandledGroup(click.Group):
    """A click group whose commands' ProfileEngineErrors become one line and an exit code.

    Handled here (not around ``main``) so that click's test runner sees the same behaviour.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ProfileEngineError as error:
            click.echo(f"Error: {error}", err=True)
            ctx.exit(exit_code(error))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
