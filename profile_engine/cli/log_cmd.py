"""`profile-engine publish | topics create | archive`: the log side of the command line."""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from profile_engine.cli.common import (
    UserError,
    bootstrap_option,
    dead_letter_topic_option,
    delivery_timeout_option,
    topic_option,
    waiting_notice,
)
from profile_engine.cli.keys import key_file_option, sealing_config
from profile_engine.contract import TraitValidator
from profile_engine.identifiers import DEFAULT_PHONE_REGION

if TYPE_CHECKING:  # the CLI imports the Kafka side only when a command needs it
    from consumers.archive import Skipped

ATTRIBUTES_ENV = "PROFILE_ENGINE_ATTRIBUTES"
# Files smaller than this are done before a progress bar would tell anything.
PROGRESS_MIN_BYTES = 2 * 1024 * 1024


def load_trait_validator(attributes_path: Path | None) -> TraitValidator:
    """The attribute registry's trait check (module level: worker processes rebuild it)."""
    from profile_engine.attributes import AttributeRegistry

    return AttributeRegistry.load(attributes_path).validate_traits


def companion_path(source: str, suffix: str) -> Path:
    """``events.jsonl`` -> ``events.jsonl.<suffix>`` beside it; stdin -> ``stdin.<suffix>``."""
    if source == "-":
        return Path(f"stdin.{suffix}")
    path = Path(source)
    return path.with_name(f"{path.name}.{suffix}")


def _default_workers() -> int:
    # Validation (pydantic, phone and email checks) runs in workers while this process sends.
    return min(4, os.cpu_count() or 1)


class _Rejects:
    """Reports each invalid line on stderr and keeps its exact bytes in the rejects file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self.lines: set[int] = set()
        self._handle: IO[bytes] | None = None

    def __call__(self, reject: Any) -> None:
        self.count += 1
        self.lines.add(reject.line)
        click.echo(f"line {reject.line}: {reject.reason}", err=True)
        if self._handle is None:  # created on the first reject only
            self._handle = self.path.open("wb")
        self._handle.write(reject.raw + b"\n")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


@contextmanager
def _progress(total_bytes: int | None) -> Iterator[Callable[[int], None] | None]:
    """A rich bar on stderr for large inputs when stderr is a terminal; otherwise nothing."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal or (total_bytes is not None and total_bytes < PROGRESS_MIN_BYTES):
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [BarColumn(), DownloadColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress("[progress.description]{task.description}", *columns, console=console) as bar:
        task = bar.add_task("publishing", total=total_bytes)

        def advance(byte_count: int) -> None:
            bar.advance(task, byte_count)

        yield advance


def _open_input(source: str) -> tuple[IO[bytes], int | None]:
    if source == "-":
        return sys.stdin.buffer, None
    path = Path(source)
    if path.is_dir():
        raise UserError(f"{source}: is a folder, not a file of events")
    if not path.is_file():
        raise UserError(f"{source}: no such file")
    return path.open("rb"), path.stat().st_size


@click.command("publish")
@click.argument("file", metavar="FILE")
@bootstrap_option
@topic_option
@click.option(
    "--attributes",
    "attributes_path",
    envvar=ATTRIBUTES_ENV,
    default=None,
    show_envvar=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Attribute registry that identify traits are checked against "
    "[default: the registry's default location].",
)
@click.option(
    "--phone-region",
    envvar="PROFILE_ENGINE_PHONE_REGION",
    default=DEFAULT_PHONE_REGION,
    show_default=True,
    show_envvar=True,
    help="Region for phone numbers written without a country code.",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 64),
    default=None,
    help="Processes that validate and encode while this one sends "
    "[default: CPU count up to 4 for inputs over 4 MB, else 0 = in process].",
)
@delivery_timeout_option
@key_file_option
def publish(
    file: str,
    bootstrap_servers: str,
    topic: str,
    attributes_path: Path | None,
    phone_region: str,
    workers: int | None,
    delivery_timeout: float,
    key_file: Path | None,
) -> None:
    """Validate a JSON Lines FILE of events (- for stdin) and publish the valid ones.

    \b
    Each invalid line is reported on stderr as `line N: <field>: <rule>` and copied to
    FILE.rejects.jsonl; the exit code is 1 when any line was rejected. When the broker
    confirms nothing for --delivery-timeout seconds (or refuses a batch), publish stops and
    says how many lines were confirmed and which were not (all their numbers go to
    FILE.unconfirmed.txt); publishing the file again is safe, events are deduplicated by
    event_id. Exit code 75 when a retry may succeed, 78 when the broker refused lines.

    With a master key (--key-file or PROFILE_ENGINE_MASTER_KEY) every event is sealed:
    identifier values, traits and properties travel encrypted under per-identifier data
    keys kept in the topic's key store (<topic>-keys), so an erasure reaches the log.
    """
    from consumers.batch_producer import BatchProducer, unconfirmed_error
    from consumers.key_store import producer_sealing
    from consumers.publish import PARALLEL_MIN_BYTES, publish_lines

    try:
        load_trait_validator(attributes_path)  # a broken registry fails before anything is sent
    except ValueError as error:
        raise UserError(str(error)) from None
    handle, size = _open_input(file)
    if workers is None:
        large = size is None or size >= PARALLEL_MIN_BYTES
        workers = _default_workers() if large else 0
    rejects = _Rejects(companion_path(file, "rejects.jsonl"))
    sealing = sealing_config(key_file, bootstrap_servers, topic)
    try:
        with (
            producer_sealing(sealing) as (plan, key_sink),
            _progress(size) as on_progress,
            BatchProducer(
                bootstrap_servers,
                topic,
                delivery_timeout_s=delivery_timeout,
                on_wait=waiting_notice,
            ) as producer,
        ):
            result = publish_lines(
                handle,
                producer,
                validator_factory=partial(load_trait_validator, attributes_path),
                phone_region=phone_region,
                workers=workers,
                on_reject=rejects,
                on_progress=on_progress,
                sealing=plan,
                key_sink=key_sink,
            )
    finally:
        rejects.close()
        if handle is not sys.stdin.buffer:
            handle.close()
    if result.rejected:
        click.echo(f"rejected lines kept in {rejects.path}", err=True)
    elif result.unread is None:  # every line was checked: an earlier run's rejects are stale
        rejects.path.unlink(missing_ok=True)
    unconfirmed_path = companion_path(file, "unconfirmed.txt")
    if not result.complete:
        source = "the same input" if file == "-" else file
        not_confirmed = unconfirmed_error(
            result.delivery,
            result.unread,
            list_path=unconfirmed_path,
            resume=f"publishing {source} again is safe: events are deduplicated by event_id",
            rejected=rejects.lines,
        )
        if result.stopped_by is None:
            raise not_confirmed
        told = str(not_confirmed)
        click.echo(told[:1].upper() + told[1:], err=True)
    if result.stopped_by is not None:
        raise result.stopped_by  # "interrupted" or "terminated", once every line is told
    unconfirmed_path.unlink(missing_ok=True)  # a list from an earlier run is no longer true
    click.echo(
        f"published {result.published}, rejected {result.rejected} "
        f"in {result.seconds:.2f} s ({result.events_per_s:,.0f} events/s) to {topic}"
    )
    if result.rejected:
        sys.exit(1)


@click.group("topics")
def topics() -> None:
    """Manage the profile-events topic, its dead-letter topic and its key store."""


@topics.command("create")
@bootstrap_option
@topic_option
@dead_letter_topic_option
@click.option(
    "--partitions",
    type=click.IntRange(1, 10_000),
    default=6,
    show_default=True,
    help="Partitions of the events topic (the dead-letter topic has one).",
)
@click.option(
    "--replication-factor",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="Replicas of each partition.",
)
@key_file_option
def create(
    bootstrap_servers: str,
    topic: str,
    dead_letter_topic: str,
    partitions: int,
    replication_factor: int,
    key_file: Path | None,
) -> None:
    """Create the events topic and its dead-letter topic; with a master key (--key-file or
    PROFILE_ENGINE_MASTER_KEY) also its key store (<topic>-keys, a compacted topic for the
    data keys of sealed events). Existing ones are left as they are."""
    from consumers.topics import TopicError, create_topics
    from profile_engine.cli.keys import load_master_key

    sealed = load_master_key(key_file) is not None
    try:
        report = create_topics(
            bootstrap_servers, topic, dead_letter_topic, partitions, replication_factor,
            with_key_topic=sealed,
        )  # fmt: skip
    except TopicError as error:
        raise UserError(str(error)) from None
    for name in report.created:
        click.echo(f"created {name}")
    for name in report.existed:
        click.echo(f"already exists {name}")
    for name in report.configured:
        click.echo(f"set the key store's compaction settings on {name}")


@click.command("archive")
@bootstrap_option
@topic_option
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Avro Object Container File to write (replaced if it exists).",
)
def archive(bootstrap_servers: str, topic: str, out_path: Path) -> None:
    """Copy the whole topic (earliest offset up to the end at start) to an Avro file.

    The file replays with `profile-engine rebuild --from-file`.
    """
    from consumers.archive import ArchiveError, write_archive

    if not out_path.parent.exists():
        raise UserError(f"{out_path.parent}: no such directory")
    with _SkippedMessages(companion_path(str(out_path), "skipped.jsonl")) as skipped:
        try:
            with _record_progress() as on_progress:
                count = write_archive(
                    bootstrap_servers, topic, out_path, on_skip=skipped, on_progress=on_progress
                )
        except ArchiveError as error:
            raise UserError(str(error)) from None
    click.echo(f"archived {count} events from {topic} to {out_path}")
    if skipped.count:
        raise UserError(
            f"{skipped.count:,} message(s) of {topic} are no events and could not be archived "
            f"(a rebuild from the archive will not dead-letter them): kept in {skipped.path}"
        )


class _SkippedMessages:
    """The messages an archive leaves out, each named on stderr and kept whole in a JSON Lines
    file beside it (key and value in base64), written only when there are any."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._out: IO[str] | None = None

    def __enter__(self) -> _SkippedMessages:
        self.path.unlink(missing_ok=True)  # an earlier run's list is no longer true
        return self

    def __exit__(self, *exc: object) -> None:
        if self._out is not None:
            self._out.close()

    def __call__(self, message: Skipped) -> None:
        click.echo(
            f"skipped partition {message.partition} offset {message.offset}: {message.reason}",
            err=True,
        )
        if self._out is None:
            self._out = self.path.open("w", encoding="utf-8")
        self.count += 1
        record = {
            "partition": message.partition,
            "offset": message.offset,
            "key": None if message.key is None else base64.b64encode(message.key).decode(),
            "value": None if message.value is None else base64.b64encode(message.value).decode(),
            "reason": message.reason,
        }
        self._out.write(json.dumps(record) + "\n")


@contextmanager
def _record_progress() -> Iterator[Callable[[int, int], None] | None]:
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    from rich.progress import Progress

    with Progress(console=console) as bar:
        task = bar.add_task("archiving", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


COMMANDS = [publish, topics, archive]
