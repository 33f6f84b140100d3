"""`attributes add|list`, `import FILE.csv` and `imports`: typed attributes and bulk CSV import."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from profile_engine.attributes import ATTRIBUTES_ENV, DEFAULT_ATTRIBUTES_FILE, TYPES
from profile_engine.cli.common import (
    UserError,
    bootstrap_option,
    delivery_timeout_option,
    format_option,
    print_rows,
    topic_option,
    waiting_notice,
)
from profile_engine.cli.keys import key_file_option, sealing_config
from profile_engine.errors import first_line
from profile_engine.events import ID_PRIORITY, datetime_to_us

if TYPE_CHECKING:
    from consumers.importer import CsvImport, ImportCounts
    from profile_engine.attributes import AttributeRegistry
    from profile_engine.csv_import import Reject

F = TypeVar("F", bound=Callable[..., Any])

# Printing a million reasons helps nobody: the rejects file has every one of them.
MAX_PRINTED_REJECTS = 50
# Below this many lines the import is over before a progress bar would say anything.
PROGRESS_MIN_LINES = 20_000
TABLE_HISTORY_COLUMNS = ("file", "started_at", "status", "accepted", "rejected", "seconds")


def attributes_option(func: F) -> F:
    return click.option(
        "--attributes",
        "attributes_path",
        envvar=ATTRIBUTES_ENV,
        default=DEFAULT_ATTRIBUTES_FILE,
        show_default=True,
        show_envvar=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="Attribute registry file (custom attributes; standard ones are built in). "
        "Import history is kept beside it.",
    )(func)


def load_registry(path: Path) -> AttributeRegistry:
    from profile_engine.attributes import AttributeRegistry

    try:
        return AttributeRegistry.load(path)
    except ValueError as error:
        raise UserError(str(error)) from None


# -- attributes -------------------------------------------------------------------------------


@click.group()
def attributes() -> None:
    """Register typed profile attributes (traits) and list them."""


@attributes.command("add")
@click.argument("name")
@click.argument("type_name", metavar="TYPE", type=click.Choice(TYPES))
@attributes_option
@click.option(
    "--db",
    "db_path",
    envvar="PROFILE_ENGINE_DB",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also refresh the typed profile_traits view of this projection database.",
)
def add(name: str, type_name: str, attributes_path: Path, db_path: Path | None) -> None:
    """Register custom attribute NAME with TYPE (re-adding the same type is a no-op).

    \b
    Types: string, boolean (true/false), long (64-bit integer), double (dot decimals),
    date (YYYY-MM-DD), datetime (YYYY-MM-DDTHH:MM:SS[Z], UTC), epoch (seconds >= 0).
    """
    registry = load_registry(attributes_path)
    before = registry.version
    try:
        attribute = registry.add(name, type_name)
    except ValueError as error:
        raise UserError(str(error)) from None
    if registry.version != before:
        registry.save()
        click.echo(f"registered {attribute.name} ({attribute.type}) in {registry.path}")
    else:
        click.echo(f"{attribute.name} ({attribute.type}) was already registered")
    if db_path is not None:
        _refresh_view(db_path, registry)
        click.echo(f"refreshed the profile_traits view in {db_path}")


def _refresh_view(db_path: Path, registry: AttributeRegistry) -> None:
    from projections.store import open_projection
    from projections.typed_traits import refresh_typed_traits_view

    con = open_projection(db_path)
    try:
        refresh_typed_traits_view(con, registry)
    finally:
        con.close()


@attributes.command("list")
@attributes_option
@format_option("table", "json", "csv")
def list_attributes(attributes_path: Path, output_format: str) -> None:
    """List standard and custom attributes with their types."""
    registry = load_registry(attributes_path)
    rows = [
        (a.name, a.type, a.kind, _range(a.minimum, a.maximum), a.sql_type, a.description)
        for a in registry.attributes()
    ]
    columns = ("name", "type", "kind", "range", "sql_type", "description")
    print_rows(columns, rows, output_format)


def _range(low: int | None, high: int | None) -> str | None:
    if low is None and high is None:
        return None
    return f"{'' if low is None else low}..{'' if high is None else high}"


# -- import -------------------------------------------------------------------------------------


def _parse_timestamp(text: str | None, file: Path) -> int:
    if text is None:
        # The file's time, not the clock's: importing the same file again, after a failure or
        # an interruption, sends the same events, which the fold deduplicates.
        return datetime_to_us(datetime.fromtimestamp(file.stat().st_mtime, UTC))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--timestamp: not an ISO-8601 date-time: {text!r}") from None
    if moment.tzinfo is None:
        raise UserError("--timestamp must carry a UTC offset (e.g. 2026-01-01T10:00:00Z)")
    return datetime_to_us(moment)


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--id-column", required=True, help="Header of the identifier column.")
@click.option(
    "--id-type",
    type=click.Choice(ID_PRIORITY),
    default=None,
    help="Identifier type of the id column [default: the column's name, e.g. email].",
)
@click.option(
    "--timestamp",
    default=None,
    help="Event time of every row (ISO-8601 with offset) [default: the file's last "
    "modification time].",
)
@click.option(
    "--phone-region",
    default="US",
    show_default=True,
    help="Region for phone numbers without a country code.",
)
@attributes_option
@bootstrap_option
@topic_option
@delivery_timeout_option
@key_file_option
def import_cmd(
    file: Path,
    id_column: str,
    id_type: str | None,
    timestamp: str | None,
    phone_region: str,
    attributes_path: Path,
    bootstrap_servers: str,
    topic: str,
    delivery_timeout: float,
    key_file: Path | None,
) -> None:
    """Import FILE (CSV) as identify events: one per row, traits typed by the registry.

    \b
    The header names the id column and registered attributes (case-insensitive); any
    unregistered attribute, duplicate column or missing id column refuses the whole file.
    An empty cell means "not provided" (the trait is left as it is). Each bad row is
    reported with its line, column and rule and kept in FILE.rejects.csv; the good rows
    still go through. Re-importing the same file is idempotent (event ids derive from the
    file content, the event time and the line; the event time is the file's modification
    time unless --timestamp says otherwise). Exits 1 if any row was rejected. When the
    broker confirms nothing for --delivery-timeout seconds (or refuses rows), the import
    stops and lists the lines it did not confirm (all in FILE.unconfirmed.txt); importing
    the file again is safe. Exit code 75 when a retry may succeed, 78 when the broker
    refused rows. With a master key (--key-file or PROFILE_ENGINE_MASTER_KEY) the events are
    sealed, as `publish` seals.
    """
    from consumers.importer import CsvImport, ImportRecord, append_history, history_path_for
    from profile_engine.csv_import import HeaderError

    registry = load_registry(attributes_path)
    timestamp_us = _parse_timestamp(timestamp, file)
    started_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    history = history_path_for(registry.path)

    def record(status: str, counts: ImportCounts | None = None, message: str | None = None) -> None:
        append_history(
            history,
            ImportRecord(
                file=str(file.resolve()),
                started_at=started_at,
                status=status,
                accepted=counts.accepted if counts else 0,
                rejected=counts.rejected if counts else 0,
                seconds=round(counts.seconds, 3) if counts else 0.0,
                id_type=id_type,
                topic=topic,
                rejects_file=str(counts.rejects_file) if counts and counts.rejects_file else None,
                message=message,
            ),
        )

    try:
        plan = CsvImport.open(file, registry, id_column, id_type)
    except HeaderError as error:
        record("refused", message=str(error))
        raise UserError(f"{file}: {error}; nothing was imported") from None
    id_type = plan.columns.id_type
    counts: ImportCounts | None = None
    try:
        sealing = sealing_config(key_file, bootstrap_servers, topic)
        counts = _send(
            plan, bootstrap_servers, topic, timestamp_us, phone_region, delivery_timeout, sealing
        )
        if not counts.complete:
            raise _unconfirmed(plan, counts)
    except Exception as error:
        record("failed", counts, first_line(error))
        raise
    plan.unconfirmed_path.unlink(missing_ok=True)  # a list from an earlier run is no longer true
    record("rejects" if counts.rejected else "ok", counts)
    _summarise(file, counts)
    if counts.rejected:
        sys.exit(1)


def _unconfirmed(plan: CsvImport, counts: ImportCounts) -> Exception:
    from consumers.batch_producer import unconfirmed_error

    if counts.rejects_file is not None:
        click.echo(f"rejected rows and reasons: {counts.rejects_file}", err=True)
    return unconfirmed_error(
        counts.delivery,
        counts.unread,
        list_path=plan.unconfirmed_path,
        resume=f"importing {plan.path} again is safe: event ids derive from the file's "
        "content and line",
        rejected=counts.rejected_lines,
    )


def _send(
    plan: CsvImport,
    bootstrap_servers: str,
    topic: str,
    timestamp_us: int,
    phone_region: str,
    delivery_timeout: float,
    sealing: Any = None,
) -> ImportCounts:
    from consumers.batch_producer import BatchProducer
    from consumers.key_store import producer_sealing

    printed = 0

    def show_reject(reject: Reject) -> None:
        nonlocal printed
        printed += 1
        if printed <= MAX_PRINTED_REJECTS:
            click.echo(f"{plan.path}: {reject.message}", err=True)

    with (
        producer_sealing(sealing) as (sealing_plan, key_sink),
        _progress(plan.total_lines) as on_progress,
        BatchProducer(
            bootstrap_servers, topic, delivery_timeout_s=delivery_timeout, on_wait=waiting_notice
        ) as sink,
    ):
        counts = plan.run(
            sink, timestamp_us, phone_region, on_progress, show_reject, sealing_plan, key_sink
        )
    if printed > MAX_PRINTED_REJECTS:
        click.echo(
            f"... and {printed - MAX_PRINTED_REJECTS} more rejected rows "
            "(every one is in the rejects file)",
            err=True,
        )
    return counts


@contextmanager
def _progress(total_lines: int) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr for large files; no bar for small ones."""
    if total_lines < PROGRESS_MIN_LINES:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as progress:
        task = progress.add_task("importing lines", total=total_lines)

        def advance(lines_read: int) -> None:
            progress.update(task, completed=lines_read)

        yield advance


def _summarise(file: Path, counts: ImportCounts) -> None:
    click.echo(
        f"{file}: {counts.accepted} accepted, {counts.rejected} rejected "
        f"in {counts.seconds:.2f} s ({counts.rows_per_s:,.0f} rows/s)"
    )
    if counts.rejects_file is not None:
        click.echo(f"rejected rows and reasons: {counts.rejects_file}")


# -- imports ------------------------------------------------------------------------------------


@click.command("imports")
@attributes_option
@format_option("table", "json", "csv")
def imports(attributes_path: Path, output_format: str) -> None:
    """List past imports (kept in profile-imports.jsonl beside the attribute registry)."""
    from consumers.importer import HISTORY_COLUMNS, history_path_for, read_history

    history = history_path_for(attributes_path)
    records = read_history(history)
    if not records and output_format == "table":
        click.echo(f"No imports yet ({history} records each `profile-engine import`).")
        return
    # A terminal table keeps to what fits; json and csv carry every field.
    columns = TABLE_HISTORY_COLUMNS if output_format == "table" else HISTORY_COLUMNS
    rows = [[getattr(r, column) for column in columns] for r in records]
    print_rows(columns, rows, output_format)


COMMANDS = [attributes, import_cmd, imports]
