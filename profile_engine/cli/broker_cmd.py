"""`profile-engine broker fetch|start|stop|status`: the local Kafka broker run from Maven jars."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from consumers.broker import (
    DEFAULT_PORT,
    BrokerError,
    KafkaJars,
    LocalBroker,
    default_data_dir,
)
from profile_engine.cli.common import UserError

F = TypeVar("F", bound=Callable[..., Any])


def _data_dir_option(func: F) -> F:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="PROFILE_ENGINE_KAFKA_DIR",
        default=lambda: str(default_data_dir()),
        show_default=".kafka",
        show_envvar=True,
        help="Folder holding the broker's storage, configuration, pid file and logs.",
    )(func)


def _port_option(func: F) -> F:
    return click.option(
        "--port",
        type=click.IntRange(1, 65535),
        envvar="PROFILE_ENGINE_KAFKA_PORT",
        default=None,
        show_default=f"the data dir's last port, else {DEFAULT_PORT}",
        show_envvar=True,
        help="Client (PLAINTEXT) port on 127.0.0.1; the controller uses the next free one.",
    )(func)


def _fetch_with_progress(jars: KafkaJars) -> None:
    if jars.is_complete():
        return
    from rich.console import Console

    message = f"Fetching Apache Kafka {jars.version} jars with Maven (first run only)…"
    console = Console(stderr=True)
    if not console.is_terminal:  # CI logs get one plain line instead of a spinner
        click.echo(message, err=True)
        jars.fetch()
        return
    with console.status(message):
        jars.fetch()


@click.group()
def broker() -> None:
    """Run a local single-node Apache Kafka broker (KRaft) without Docker.

    Needs Java 17+ and, once, Maven to fetch the jars into $PROFILE_ENGINE_HOME
    (default ~/.cache/profile-engine).
    """


@broker.command()
def fetch() -> None:
    """Download the Kafka jars with Maven unless they are already cached."""
    jars = KafkaJars.default()
    try:
        was_complete = jars.is_complete()
        _fetch_with_progress(jars)
    except BrokerError as error:
        raise UserError(str(error)) from error
    state = "already cached" if was_complete else "fetched"
    click.echo(f"Kafka {jars.version} jars {state} in {jars.libs}")


@broker.command()
@_data_dir_option
@_port_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=90.0,
    show_default=True,
    help="Seconds to wait for the broker to answer.",
)
def start(data_dir: Path, port: int | None, timeout: float) -> None:
    """Start the broker in the background and wait until it answers."""
    local = LocalBroker(data_dir=data_dir, port=port)
    try:
        _fetch_with_progress(local.jars)
        result = local.start(timeout=timeout)
    except BrokerError as error:
        raise UserError(str(error)) from error
    if result.already_running:
        click.echo(f"broker already running (pid {result.pid}) at {result.bootstrap_servers}")
        return
    click.echo(
        f"broker started (pid {result.pid}) at {result.bootstrap_servers} in "
        f"{result.seconds:.1f}s; logs in {local.server_log}"
    )
    if local.port != DEFAULT_PORT:
        click.echo(
            f"use it with: export PROFILE_ENGINE_BOOTSTRAP_SERVERS={result.bootstrap_servers}"
        )


@broker.command()
@_data_dir_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Seconds to wait for a clean shutdown before killing the broker.",
)
def stop(data_dir: Path, timeout: float) -> None:
    """Stop the broker cleanly (SIGTERM, then SIGKILL after the timeout)."""
    local = LocalBroker(data_dir=data_dir)
    if local.stop(timeout=timeout):
        click.echo(f"broker stopped (data dir {local.data_dir})")
    else:
        click.echo(f"no broker was running for data dir {local.data_dir}")


@broker.command()
@_data_dir_option
def status(data_dir: Path) -> None:
    """Exit 0 only when the broker runs and answers a metadata request."""
    current = LocalBroker(data_dir=data_dir).status()
    if not current.healthy:
        raise UserError(current.describe())
    click.echo(current.describe())


COMMANDS = [broker]
