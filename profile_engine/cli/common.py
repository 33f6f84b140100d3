"""Shared CLI options, output formats and error handling."""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_TOPIC = "profile-events"
DEFAULT_DEAD_LETTER_TOPIC = "profile-events-dead-letters"


class UserError(click.ClickException):
    """A mistake the user can fix: printed as one line, exit code 1, never a traceback."""


def bootstrap_option(func: F) -> F:
    return click.option(
        "--bootstrap-servers",
        envvar="PROFILE_ENGINE_BOOTSTRAP_SERVERS",
        default=DEFAULT_BOOTSTRAP,
        show_default=True,
        show_envvar=True,
        help="Kafka bootstrap servers (host:port[,host:port]).",
    )(func)


_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def checked_topic(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A legal Kafka topic name (Kafka's own rule), or a usage error naming it."""
    if value is None or (_TOPIC_NAME.fullmatch(value) and value not in (".", "..")):
        return value
    raise click.BadParameter(f"{value!r} is not a Kafka topic name (1 to 249 of A-Z a-z 0-9 . _ -)")


def checked_dead_letter_topic(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    """A legal topic name, or "" for none."""
    return value if value == "" else checked_topic(ctx, param, value)


def topic_option(func: F) -> F:
    return click.option(
        "--topic",
        envvar="PROFILE_ENGINE_TOPIC",
        default=DEFAULT_TOPIC,
        show_default=True,
        show_envvar=True,
        callback=checked_topic,
        help="Topic of profile events.",
    )(func)


def dead_letter_topic_option(func: F) -> F:
    return click.option(
        "--dead-letter-topic",
        envvar="PROFILE_ENGINE_DEAD_LETTER_TOPIC",
        default=DEFAULT_DEAD_LETTER_TOPIC,
        show_default=True,
        show_envvar=True,
        callback=checked_dead_letter_topic,
        help="Topic that receives messages that could not be folded.",
    )(func)


def delivery_timeout_option(func: F) -> F:
    return click.option(
        "--delivery-timeout",
        "delivery_timeout",
        envvar="PROFILE_ENGINE_DELIVERY_TIMEOUT",
        type=click.FloatRange(min=1),
        default=60.0,
        show_default=True,
        show_envvar=True,
        help="Seconds to wait while the broker confirms nothing before stopping; the lines "
        "it did not confirm are then listed by number.",
    )(func)


def waiting_notice(since: float) -> None:
    """Told once per stall: the broker has not answered for a while."""
    from datetime import datetime

    moment = datetime.fromtimestamp(since).strftime("%H:%M:%S")
    click.echo(f"waiting for the broker since {moment}", err=True)


def db_option(func: F) -> F:
    return click.option(
        "--db",
        "db_path",
        envvar="PROFILE_ENGINE_DB",
        required=True,
        show_envvar=True,
        type=click.Path(dir_okay=False),
        help="DuckDB projection database file.",
    )(func)


def format_option(*choices: str, default: str = "table") -> Callable[[F], F]:
    def decorate(func: F) -> F:
        return click.option(
            "--format",
            "output_format",
            type=click.Choice(choices),
            default=default,
            show_default=True,
            help="Output format.",
        )(func)

    return decorate


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def print_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]], output_format: str) -> None:
    """Print tabular data as a rich table, a JSON array of objects, or CSV."""
    if output_format == "json":
        records = [dict(zip(columns, row, strict=True)) for row in rows]
        click.echo(json.dumps(records, default=str, indent=2))
    elif output_format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_text(v) for v in row])
    else:
        table = data_table(columns)
        for row in rows:
            table.add_row(*[_text(v) for v in row])
        table_console(table).print(table)


def data_table(columns: Sequence[str], **options: Any) -> Any:
    """A rich table whose values fold onto a second line rather than being cut to "202…"
    where it is wider than the terminal."""
    from rich.table import Column, Table

    return Table(*(Column(name, overflow="fold") for name in columns), **options)


def table_console(*tables: Any) -> Any:
    """A console for printing ``tables``: in a terminal, the terminal's width; written to a
    file or a pipe (80 columns by default), as wide as the widest table needs."""
    from rich.console import Console

    console = Console()
    if console.is_terminal or not tables:
        return console
    unbounded = console.options.update_width(10**5)
    needed = max(console.measure(table, options=unbounded).maximum for table in tables)
    return Console(width=max(console.width, needed))


def group_id_option(func: F) -> F:
    return click.option(
        "--group-id",
        envvar="PROFILE_ENGINE_GROUP_ID",
        default="profile-engine",
        show_default=True,
        show_envvar=True,
        help="Kafka consumer group that mirrors the projection's offsets after each batch (for "
        "kafka-consumer-groups, Burrow, lag exporters); the database stays the truth. An empty "
        "value turns the mirror off.",
    )(func)
