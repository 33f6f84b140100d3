"""`profile-engine generate`: write a deterministic synthetic event stream as JSON Lines."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import BinaryIO

import click

from profile_engine.cli.common import UserError
from profile_engine.events import datetime_to_us, iso_from_us
from profile_engine.rules import FILES_WINDOW
from profile_engine.synthetic import (
    DEFAULT_DAYS,
    DEFAULT_INVALID_RATE,
    DEFAULT_START_US,
    generate_line_bytes,
)

# Lines are joined and written in batches: one write call per batch, not per line.
BATCH_LINES = 8192
# Below this the run is too short for a progress bar to be worth drawing.
PROGRESS_MIN_EVENTS = 200_000


DAY_US = 86_400_000_000


def parse_start(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--start: not an ISO-8601 timestamp: {text!r}") from None
    if moment.tzinfo is None:
        raise UserError(f"--start: needs a UTC offset, e.g. 2026-01-01T00:00:00Z: {text!r}")
    return datetime_to_us(moment)


@contextmanager
def open_output(path: str | None) -> Iterator[BinaryIO]:
    if path is None or path == "-":
        sys.stdout.flush()
        yield sys.stdout.buffer
        return
    try:
        handle = open(path, "wb", buffering=1 << 20)  # noqa: SIM115
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None
    with handle:
        yield handle


def write_batches(
    lines: Iterator[bytes], out: BinaryIO, on_batch: Callable[[int], None] | None = None
) -> int:
    """Write every line, calling ``on_batch(count)`` after each batch; returns the total."""
    written = 0
    batch: list[bytes] = []
    for line in lines:
        batch.append(line)
        if len(batch) == BATCH_LINES:
            out.write(b"\n".join(batch) + b"\n")
            written += len(batch)
            batch.clear()
            if on_batch is not None:
                on_batch(BATCH_LINES)
    if batch:
        out.write(b"\n".join(batch) + b"\n")
        written += len(batch)
        if on_batch is not None:
            on_batch(len(batch))
    out.flush()
    return written


def write_with_progress(lines: Iterator[bytes], out: BinaryIO, total: int) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    console = Console(file=sys.stderr)
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("generating", total=total)
        return write_batches(lines, out, lambda count: progress.advance(task, count))


@click.command("generate")
@click.option(
    "--events",
    "-n",
    "event_count",
    type=click.IntRange(min=0),
    required=True,
    help="Number of lines to write (duplicates and invalid lines included).",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same bytes out.")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Output file (JSON Lines); stdout when omitted or '-'.",
)
@click.option(
    "--start",
    default=iso_from_us(DEFAULT_START_US),
    show_default=True,
    help="Start of the time window (ISO-8601 with a UTC offset).",
)
@click.option(
    "--days",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_DAYS,
    show_default=True,
    help="Length of the time window in days.",
)
@click.option(
    "--invalid-rate",
    type=click.FloatRange(0.0, 1.0),
    default=DEFAULT_INVALID_RATE,
    show_default=True,
    help="Share of deliberately invalid lines (bad timestamps, junk ids, non-JSON, ...).",
)
def generate(
    event_count: int,
    seed: int,
    out_path: str | None,
    start: str,
    days: float,
    invalid_rate: float,
) -> None:
    """Write a realistic synthetic event stream in the producer JSON Lines format.

    People browse anonymously and later identify, use several emails and phones, give and
    withdraw consent, bounce, subscribe to lists, buy things (now and then re-sending an
    order), make CCPA requests; a few events are exact duplicates, a few are invalid, and a
    few link one customer's email to another customer_id. Timestamps rise over the window
    with a few minutes of jitter. The output is deterministic for a given seed.
    """
    start_us = parse_start(start)
    window = FILES_WINDOW
    if start_us < window.earliest_us or start_us + round(days * DAY_US) > window.latest_us:
        first, last = iso_from_us(window.earliest_us), iso_from_us(window.latest_us)
        raise UserError(
            f"--start and --days: the events must fall between {first} and {last} (the "
            "event-time window of a file)"
        )
    lines = generate_line_bytes(event_count, seed, start_us, days, invalid_rate)
    target = "stdout" if out_path in (None, "-") else out_path
    started = time.perf_counter()
    try:
        with open_output(out_path) as out:
            if event_count >= PROGRESS_MIN_EVENTS and sys.stderr.isatty():
                written = write_with_progress(lines, out, event_count)
            else:
                written = write_batches(lines, out)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error; keep Python quiet at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except OSError as error:
        raise UserError(f"cannot write {target}: {error.strerror or error}") from None
    seconds = time.perf_counter() - started
    rate = written / seconds if seconds > 0 else 0.0
    click.echo(
        f"wrote {written:,} events to {target} in {seconds:.2f}s ({rate:,.0f} events/s)",
        err=True,
    )


COMMANDS = [generate]
