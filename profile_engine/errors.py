"""One root error with three kinds, so every edge and the CLI treat failures alike.

- ``BadInput``: this input can never succeed (an event that breaks the contract, a query that
  is refused, a user mistake). Terminal: the event becomes a dead letter, the line a reject,
  the command a one-line error. Retrying the same input gives the same answer.
- ``Transient``: the world may fix itself (the broker is down, the database is busy). Retry,
  or report how long we waited.
- ``NeedsOperator``: nothing fixes itself and retrying is pointless (a gap in the log, a
  projection built with other settings or from another topic, a missing topic, a full disk).

Library errors (kafka-python, DuckDB, OS) are translated into these at the edge that calls the
library; nothing above that edge looks at a library's exception classes or messages.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class ErrorKind(StrEnum):
    BAD_INPUT = "bad_input"
    TRANSIENT = "transient"
    NEEDS_OPERATOR = "needs_operator"


class ProfileEngineError(Exception):
    """The root of every error this project raises on purpose; str() is one line."""

    kind: ClassVar[ErrorKind] = ErrorKind.NEEDS_OPERATOR

    def __str__(self) -> str:
        text = super().__str__().strip()
        return text.splitlines()[0] if text else type(self).__name__


class BadInput(ProfileEngineError, ValueError):
    """Input that can never succeed as given: reject it, keep it, go on with the rest."""

    kind = ErrorKind.BAD_INPUT


class Transient(ProfileEngineError):
    """A dependency is unavailable for now: retry later."""

    kind = ErrorKind.TRANSIENT


class NeedsOperator(ProfileEngineError):
    """Something only a person can fix; retrying will not help."""

    kind = ErrorKind.NEEDS_OPERATOR


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's text, or its class name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
