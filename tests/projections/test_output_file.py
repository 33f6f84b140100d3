"""Where an export goes: complete or absent in a file, in place in a pipe, through a link."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from projections.output_file import output_file


def test_a_file_appears_complete_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), output_file(target) as out:
        out.write(b"half")
        raise RuntimeError("the export failed")
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]
    with output_file(target) as out:
        out.write(b"new")
    assert target.read_bytes() == b"new" and sorted(tmp_path.iterdir()) == [target]


def test_a_symbolic_link_keeps_pointing_where_it_did(tmp_path: Path) -> None:
    real, link = tmp_path / "real.csv", tmp_path / "link.csv"
    real.write_bytes(b"old")
    link.symlink_to(real)
    with output_file(link) as out:
        out.write(b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_named_pipe_is_written_in_place_not_replaced_by_a_file(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()))
    reader.start()
    with output_file(pipe) as out:
        out.write(b"rows\n")
    reader.join(timeout=10)
    assert received == [b"rows\n"]
    assert pipe.is_fifo()


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError), output_file(tmp_path) as out:
        out.write(b"x")
