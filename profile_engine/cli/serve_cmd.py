"""`serve`: the live engine — fold the log and answer over HTTP and a web page at once."""

from __future__ import annotations

from pathlib import Path

import click

from profile_engine.cli.attributes_cmd import attributes_option, load_registry
from profile_engine.cli.common import (
    bootstrap_option,
    db_option,
    dead_letter_topic_option,
    group_id_option,
    topic_option,
)
from profile_engine.cli.fold_cmd import _parse_limits, id_limit_option
from profile_engine.cli.keys import key_file_option, sealing_config


@click.command()
@db_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback requires a token.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8321,
    show_default=True,
    help="TCP port (0: any free port; the one chosen is recorded beside the database).",
)
@click.option(
    "--token",
    envvar="PROFILE_ENGINE_TOKEN",
    show_envvar=True,
    help="Require this token on every request (API: Authorization: Bearer; browser: a login "
    "page). Prefer the environment variable: options show in the process list.",
)
@bootstrap_option
@topic_option
@dead_letter_topic_option
@group_id_option
@id_limit_option
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=25_000,  # profile_engine.server.fold_adapter.SERVE_BATCH_SIZE (imported lazily)
    show_default=True,
    help="Events folded in memory before one DuckDB transaction. Smaller than consume's: "
    "readers see each batch as it commits, and wait less behind one.",
)
@click.option(
    "--fold-restarts",
    "max_restarts",
    type=click.IntRange(min=0),
    default=5,  # profile_engine.server.fold_adapter.DEFAULT_MAX_RESTARTS (imported lazily)
    show_default=True,
    envvar="PROFILE_ENGINE_FOLD_RESTARTS",
    show_envvar=True,
    help="When the fold's process dies (killed, out of memory), start it again from the "
    "committed offsets, after 1 s, then twice as long each time, up to this many times in a "
    "row (no batch committed, no minute of running between); then leave the fold failed. "
    "0: never.",
)
@attributes_option
@key_file_option
def serve(
    db_path: str,
    host: str,
    port: int,
    token: str | None,
    bootstrap_servers: str,
    topic: str,
    dead_letter_topic: str,
    group_id: str,
    id_limits: tuple[str, ...],
    batch_size: int,
    max_restarts: int,
    attributes_path: Path,
    key_file: Path | None,
) -> None:
    """Follow the log like `consume` and answer reads at the same time.

    One process holds the database: it folds exactly as `consume` does (same exactly-once
    effect, same dead letters) and serves the JSON API (/api/...), Prometheus metrics
    (/metrics), the OpenAPI description (/openapi.json) and a web page (/). While it runs,
    `counts`, `profile`, `sql`, `export` and `settings` on the same --db go through it.
    SIGTERM or Ctrl-C stop it cleanly. With a master key (--key-file or
    PROFILE_ENGINE_MASTER_KEY) it folds sealed events as `consume` does and its reads show
    sealed values in clear; a projection folded with a master key is served only with it.
    """
    from profile_engine.server.fold_adapter import FoldOptions
    from profile_engine.server.serve import ServeOptions
    from profile_engine.server.serve import serve as run_server

    options = ServeOptions(
        db_path=db_path,
        host=host,
        port=port,
        token=token or None,
        fold=FoldOptions(
            bootstrap_servers=bootstrap_servers,
            topic=topic,
            dead_letter_topic=dead_letter_topic,
            group_id=group_id,
            batch_size=batch_size,
            config=_parse_limits(id_limits),
            registry=load_registry(attributes_path),
            sealing=sealing_config(key_file, bootstrap_servers, topic),
            max_restarts=max_restarts,
        ),
    )

    def announce(url: str) -> None:
        click.echo(
            f"serving {db_path} at {url} (folding {topic}, consumer group {group_id}); "
            "Ctrl-C stops",
            err=True,
        )

    run_server(options, announce)
    click.echo("stopped", err=True)


COMMANDS = [serve]
