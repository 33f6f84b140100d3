"""Entry point of the ``profile-engine`` command."""

from __future__ import annotations

import importlib
import sys

import click

from profile_engine.cli.errors import HandledGroup

# Each module defines click commands and a ``COMMANDS`` list; imported lazily so that
# `profile-engine --help` stays fast and one broken extra cannot take the CLI down.
COMMAND_MODULES = (
    "profile_engine.cli.broker_cmd",
    "profile_engine.cli.log_cmd",
    "profile_engine.cli.generate_cmd",
    "profile_engine.cli.fold_cmd",
    "profile_engine.cli.query_cmd",
    "profile_engine.cli.attributes_cmd",
    "profile_engine.cli.serve_cmd",
    "profile_engine.cli.status_cmd",
)


@click.group(cls=HandledGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="profile-engine")
def cli() -> None:
    """Event-sourced customer profiles: a Kafka log folded into DuckDB projections."""


def _register() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        for command in getattr(module, "COMMANDS", []):
            cli.add_command(command)


_register()


def main() -> None:
    cli.main(standalone_mode=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
