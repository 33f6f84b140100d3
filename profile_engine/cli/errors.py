"""Turn known infrastructure failures into one-line messages and non-zero exits."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


def describe(error: BaseException) -> str | None:
    """A one-line message for errors a user can act on, None for real bugs."""
    name = type(error).__name__
    text = str(error).strip().splitlines()[0] if str(error).strip() else name
    if name in {"KafkaConnectionError", "KafkaTimeoutError"}:
        return (
            f"cannot reach Kafka ({text}); is the broker running? try `profile-engine broker start`"
        )
    if "Could not set lock on file" in str(error) or "Conflicting lock" in str(error):
        return (
            "the database is locked by another process (DuckDB allows one writer; "
            "is `profile-engine consume` running on it?)"
        )
    if name in {"IOException", "FileNotFoundError", "PermissionError", "IsADirectoryError"}:
        return text
    return None


@contextmanager
def friendly_errors() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as error:  # the CLI's last line of defence
        message = describe(error)
        if message is None:
            raise
        sys.stderr.write(f"Error: {message}\n")
        sys.exit(1)
