"""`consume`, `rebuild` and `bench fold`: folding the log into DuckDB projections."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from profile_engine.cli.attributes_cmd import attributes_option, load_registry
from profile_engine.cli.common import (
    UserError,
    bootstrap_option,
    db_option,
    dead_letter_topic_option,
    group_id_option,
    topic_option,
)
from profile_engine.cli.keys import key_file_option, sealing_config
from profile_engine.events import ID_PRIORITY, datetime_to_us
from profile_engine.fold import FoldConfig
from profile_engine.rules import EventTimePolicy


def _parse_limits(values: tuple[str, ...]) -> FoldConfig | None:
    if not values:
        return None
    limits: dict[str, int] = {}
    for item in values:
        id_type, _, number = item.partition("=")
        if id_type not in ID_PRIORITY or not number.isdigit() or int(number) < 1:
            raise UserError(
                f"--id-limit {item!r}: expected TYPE=N with TYPE one of "
                f"{', '.join(ID_PRIORITY)} and N >= 1"
            )
        limits[id_type] = int(number)
    return FoldConfig(id_limits=limits)


def _parse_time_policy(earliest: str | None, ahead_hours: float | None) -> EventTimePolicy | None:
    if earliest is None and ahead_hours is None:
        return None
    defaults = EventTimePolicy()
    earliest_us = defaults.earliest_us
    if earliest is not None:
        try:
            moment = datetime.fromisoformat(earliest)
        except ValueError:
            raise UserError(f"--earliest-event-time {earliest!r}: expected YYYY-MM-DD") from None
        earliest_us = datetime_to_us(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    ahead_us = defaults.max_ahead_us if ahead_hours is None else int(ahead_hours * 3_600_000_000)
    return EventTimePolicy(earliest_us, ahead_us)


def time_window_options(func: Any) -> Any:
    """--earliest-event-time and --max-event-time-ahead: the event-time window's bounds."""
    func = click.option(
        "--max-event-time-ahead",
        "max_ahead_hours",
        type=click.FloatRange(min=0),
        metavar="HOURS",
        help="An event dated more than this after its Kafka record's timestamp is a dead "
        "letter [default: 24]. Fixed when a projection is created; a rebuild may change it.",
    )(func)
    return click.option(
        "--earliest-event-time",
        metavar="YYYY-MM-DD",
        help="An event dated before this is a dead letter [default: 2000-01-01]. Fixed when a "
        "projection is created; a rebuild may change it.",
    )(func)


id_limit_option = click.option(
    "--id-limit",
    "id_limits",
    multiple=True,
    metavar="TYPE=N",
    help="Identifiers of TYPE allowed per profile (default customer_id=1, others unlimited). "
    "Fixed when a projection is created; a rebuild may change it.",
)
batch_option = click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=100_000,  # consumers.consumer.DEFAULT_BATCH_SIZE (imported lazily: startup time)
    show_default=True,
    help="Events folded in memory before one DuckDB transaction.",
)


def _waiting_line(label: str, since: float, broker: str | None) -> str:
    from consumers.kafka_client import clock_time

    at = f" at {broker}" if broker else ""
    return f"{label}: waiting for the broker{at} since {clock_time(since)}"


@contextmanager
def _progress(label: str, broker: str | None = None) -> Iterator[Callable[[Any], None]]:
    """Live progress on stderr when it is a terminal, periodic lines otherwise."""
    from rich.console import Console

    console = Console(stderr=True)
    if console.is_terminal:
        with console.status(label) as status:

            def update(stats: Any) -> None:
                s = stats.as_dict()
                waiting = stats.waiting_since
                prefix = f"{_waiting_line(label, waiting, broker)}; " if waiting else f"{label}: "
                status.update(
                    f"{prefix}{s['consumed']:,} consumed, {s['folded']:,} folded, "
                    f"{s['dead_lettered']:,} dead-lettered, lag {s['lag']:,}, "
                    f"{s['events_per_s']:,.0f} events/s"
                )

            yield update
    else:
        # A log, not a terminal: one line every 10 committed batches, never while idle, and
        # one when the broker stops answering and when it answers again.
        printed_at = [0]
        waiting_since: list[float | None] = [None]

        def update(stats: Any) -> None:
            waiting = stats.waiting_since
            if waiting != waiting_since[0]:
                if waiting:
                    console.print(_waiting_line(label, waiting, broker), soft_wrap=True)
                else:
                    console.print(f"{label}: the broker answers again", soft_wrap=True)
                waiting_since[0] = waiting
            if stats.batches - printed_at[0] >= 10:
                printed_at[0] = stats.batches
                s = stats.as_dict()
                console.print(f"{label}: {s['consumed']:,} consumed, lag {s['lag']:,}")

        yield update


def _report(stats: Any, output_format: str) -> None:
    summary = stats.as_dict()
    if output_format == "json":
        click.echo(json.dumps(summary))
    else:
        click.echo(
            f"consumed {summary['consumed']:,} = folded {summary['folded']:,} + duplicates "
            f"{summary['duplicates']:,} + dead-lettered {summary['dead_lettered']:,} in "
            f"{summary['seconds']:.1f}s ({summary['events_per_s']:,.0f} events/s)"
        )


@contextmanager
def _running(label: str, broker: str | None = None) -> Iterator[Callable[[Any], None]]:
    """Progress for long work; failures go to the CLI's one error handler."""
    with _progress(label, broker) as progress:
        yield progress


summary_format = click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Summary format.",
)


@click.command()
@db_option
@bootstrap_option
@topic_option
@dead_letter_topic_option
@click.option(
    "--once",
    is_flag=True,
    help="Stop when caught up with the end of committed data (last stable offsets) at start.",
)
@click.option(
    "--give-up-after",
    type=click.FloatRange(min=0, min_open=True),
    envvar="PROFILE_ENGINE_GIVE_UP_AFTER",
    show_envvar=True,
    metavar="SECONDS",
    help="Fail (exit 75) when the broker has not answered for this long. "
    "Default: keep waiting, showing 'waiting for the broker since HH:MM:SS'.",
)
@group_id_option
@id_limit_option
@time_window_options
@batch_option
@attributes_option
@key_file_option
@summary_format
def consume(
    db_path: str,
    bootstrap_servers: str,
    topic: str,
    dead_letter_topic: str,
    once: bool,
    give_up_after: float | None,
    group_id: str,
    id_limits: tuple[str, ...],
    earliest_event_time: str | None,
    max_ahead_hours: float | None,
    batch_size: int,
    attributes_path: Path,
    key_file: Path | None,
    output_format: str,
) -> None:
    """Follow the log and fold it into the projection database at --db.

    Offsets are stored in the database with the rows they produced, so the consumer can be
    stopped or killed at any point and resumes exactly where the projections are. Only
    committed data is read (records of aborted transactions are skipped). SIGTERM or Ctrl-C
    stops it within seconds: the batch in hand commits, then it exits 0. With a master key
    (--key-file or PROFILE_ENGINE_MASTER_KEY) sealed events are opened with the key store, and
    a CCPA delete destroys the erased person's data keys before its batch commits.
    """
    from consumers.consumer import ConsumeOptions
    from consumers.consumer import consume as run_consume

    stop = threading.Event()
    # SIGTERM / Ctrl-C end a follower cleanly: the batch in hand commits, then it exits 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with _running("consume", bootstrap_servers) as progress:
        stats = run_consume(
            db_path,
            bootstrap_servers,
            topic,
            dead_letter_topic,
            config=_parse_limits(id_limits),
            registry=load_registry(attributes_path),
            options=ConsumeOptions(
                once=once,
                batch_size=batch_size,
                progress=progress,
                should_stop=stop.is_set,
                give_up_after=give_up_after,
                group_id=group_id or None,
                time_policy=_parse_time_policy(earliest_event_time, max_ahead_hours),
                sealing=sealing_config(key_file, bootstrap_servers, topic),
            ),
        )
    _report(stats, output_format)


@click.command()
@db_option
@bootstrap_option
@topic_option
@click.option(
    "--from-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Rebuild from a JSON Lines file (producer format) or an Avro container file "
    "written by `profile-engine archive`, without a broker.",
)
@id_limit_option
@time_window_options
@batch_option
@attributes_option
@click.option(
    "--force",
    is_flag=True,
    help="Replace a projection that was built from another topic.",
)
@key_file_option
@summary_format
def rebuild(
    db_path: str,
    bootstrap_servers: str,
    topic: str,
    from_file: str | None,
    id_limits: tuple[str, ...],
    earliest_event_time: str | None,
    max_ahead_hours: float | None,
    batch_size: int,
    attributes_path: Path,
    force: bool,
    key_file: Path | None,
    output_format: str,
) -> None:
    """Build fresh projections from the start of the log and swap them in atomically.

    The new database is written beside --db and renamed over it when caught up; the old
    file serves readers until then. Settings are carried over. With a master key the
    projection is keyed and sealed events are opened with the key store on Kafka
    (--bootstrap-servers; with --from-file too: an archive holds no keys).
    """
    from consumers.rebuild import rebuild_from_file, rebuild_from_kafka

    config = _parse_limits(id_limits)
    policy = _parse_time_policy(earliest_event_time, max_ahead_hours)
    registry = load_registry(attributes_path)
    sealing = sealing_config(key_file, bootstrap_servers, topic)
    with _running("rebuild") as progress:
        if from_file:
            stats = rebuild_from_file(
                db_path, from_file, batch_size, progress, config, registry, time_policy=policy,
                sealing=sealing,
            )  # fmt: skip
        else:
            stats = rebuild_from_kafka(
                db_path, bootstrap_servers, topic, batch_size, progress, config, registry, force,
                time_policy=policy, sealing=sealing,
            )  # fmt: skip
    _report(stats, output_format)


@click.group()
def bench() -> None:
    """Benchmarks that print their figures as JSON."""


@bench.command("fold")
@click.option("--events", "event_count", type=click.IntRange(min=1), default=1_000_000)
@click.option("--seed", type=int, default=1, show_default=True)
@bootstrap_option
@batch_option
def bench_fold(event_count: int, seed: int, bootstrap_servers: str, batch_size: int) -> None:
    """Publish a generated stream to a fresh topic, then measure raw read and fold rates.

    Prints one JSON object: events, raw_read_events_per_s, fold_events_per_s,
    fold_vs_raw, peak_rss_mb and the CPU an event costs in each.
    """
    from consumers.bench import run_fold_benchmark

    result = run_fold_benchmark(event_count, seed, bootstrap_servers, batch_size, sys.stderr)
    click.echo(json.dumps(result))


COMMANDS = [consume, rebuild, bench]
