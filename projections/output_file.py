"""Where an export is written: complete or not at all where that can be, in place where not."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def output_file(out_path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write ``out_path``'s content into; OSError when it cannot be.

    A regular file (or a new one) appears complete or not at all: the content goes to a
    hidden sibling renamed over it at the end. A symbolic link keeps pointing where it did:
    its target is what gets replaced. Anything else that exists there (a named pipe,
    ``/dev/stdout``, a device) is written in place: renaming over it would put an ordinary
    file where it was.
    """
    target = Path(os.path.realpath(out_path))
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        with target.open("wb") as out:
            yield out
        return
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("wb") as out:
            yield out
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
