"""Query commands: counts, profile, sql, export and settings, over the DuckDB projection.

All but `settings set/reset` open the database read-only, so DuckDB itself refuses writes,
and every command runs on a sandboxed connection (no other file, network or extension).
DuckDB's errors are translated inside projections/; this module never sees them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import click

from profile_engine.cli.common import (
    UserError,
    data_table,
    db_option,
    format_option,
    print_rows,
    table_console,
)
from profile_engine.cli.keys import key_file_option, key_ring
from profile_engine.errors import BadInput, ProfileEngineError
from profile_engine.reachability import CHANNELS, SETTINGS, parse_value


def _with_readonly(
    db_path: str,
    work: Callable[[Any], Any],
    remote: Callable[[Any], Any] | None = None,
    ring: Any = None,
) -> Any:
    """``work`` on a read-only sandboxed connection; when `serve` holds the database,
    ``remote`` asks the server (a ServerClient) for the same answer instead. ``ring``: the
    master key's, to read a keyed projection's sealed values (and give SQL pe_open)."""
    from projections.readonly import DatabaseBusy, read_projection

    try:
        return read_projection(db_path, work, ring)
    except DatabaseBusy as busy:
        return _through_server(db_path, remote, busy)


def _through_server(
    db_path: str, remote: Callable[[Any], Any] | None, busy: ProfileEngineError
) -> Any:
    """The database is busy: ask the server that holds it, if one does (else ``busy``)."""
    from profile_engine.server.client import ServerClient
    from profile_engine.server.discovery import running_server

    server = running_server(db_path)
    if remote is None or server is None:
        raise busy
    return remote(ServerClient(server))


def _current_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


# -- counts --------------------------------------------------------------------------------


@click.command()
@db_option
@click.option("--month", help="UTC month of the MAU figure, YYYY-MM.  [default: this month]")
@click.option("--channel", type=click.Choice(CHANNELS), help="Show only this channel.")
@click.option(
    "--as-of",
    "as_of",
    metavar="YYYY-MM-DD",
    help="Counts as they were at the end of this UTC day (today's settings; MAU of its month "
    "through that day).",
)
@click.option("--daily", is_flag=True, help="One row per UTC day from --from to --to.")
@click.option("--from", "first_day", metavar="YYYY-MM-DD", help="With --daily: first day.")
@click.option("--to", "last_day", metavar="YYYY-MM-DD", help="With --daily: last day.")
@click.option(
    "--chart",
    "chart_path",
    type=click.Path(dir_okay=False),
    help="With --daily: also draw the chart (customers and MAU over time) as a PNG file.",
)
@format_option("table", "json", "csv")
def counts(
    db_path: str,
    month: str | None,
    channel: str | None,
    as_of: str | None,
    daily: bool,
    first_day: str | None,
    last_day: str | None,
    chart_path: str | None,
    output_format: str,
) -> None:
    """Total, reachable and unreachable profiles per channel, and monthly active users.

    \b
    --as-of DAY: as they were at the end of that UTC day.
    --daily --from DAY --to DAY: one row per day (total, reachable and unreachable per
    channel and on any, MAU month to date); --chart FILE.png draws them.
    """
    from projections import queries

    if daily:
        _daily_counts(db_path, month, as_of, first_day, last_day, channel, chart_path,
                      output_format)  # fmt: skip
        return
    for flag, value in (("--from", first_day), ("--to", last_day), ("--chart", chart_path)):
        if value is not None:
            raise UserError(f"{flag} goes with --daily")
    if as_of is not None:
        result = _counts_as_of(db_path, month, as_of, channel)
    else:
        chosen_month = month or _current_month()
        result = _with_readonly(
            db_path,
            lambda con: queries.counts(con, chosen_month, channel),
            lambda server: server.counts(chosen_month, channel),
        )
    if output_format == "json":
        click.echo(json.dumps(result, indent=2))
    elif output_format == "csv":
        print_rows(*_counts_rows(result), "csv")
    else:
        _print_counts_table(result, as_of)


def _counts_as_of(
    db_path: str, month: str | None, as_of: str, channel: str | None
) -> dict[str, Any]:
    from projections import history

    if month is not None:
        raise UserError("--month and --as-of do not go together (as of a day: that month)")
    day = history.parse_day(as_of, "--as-of")
    result: dict[str, Any] = _with_readonly(
        db_path,
        lambda con: history.counts_as_of(con, day, channel),
        lambda server: server.counts(None, channel, as_of=day.isoformat()),
    )
    return result


def _daily_counts(
    db_path: str,
    month: str | None,
    as_of: str | None,
    first_day: str | None,
    last_day: str | None,
    channel: str | None,
    chart_path: str | None,
    output_format: str,
) -> None:
    from projections import history

    if month is not None or as_of is not None:
        raise UserError("--daily goes with --from and --to, not --month or --as-of")
    if first_day is None or last_day is None:
        raise UserError("--daily needs --from YYYY-MM-DD and --to YYYY-MM-DD")
    first = history.parse_day(first_day, "--from")
    last = history.parse_day(last_day, "--to")
    rows: list[dict[str, Any]] = _with_readonly(
        db_path,
        lambda con: history.daily_rows(con, first, last, channel),
        lambda server: server.counts_daily(first.isoformat(), last.isoformat(), channel),
    )
    if chart_path is not None:
        _write_chart(chart_path, rows, channel)
    columns = history.daily_columns(channel)
    print_rows(columns, [[_day_text(row[c]) for c in columns] for row in rows], output_format)


def _day_text(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _write_chart(chart_path: str, rows: list[dict[str, Any]], channel: str | None) -> None:
    from pathlib import Path

    from profile_engine.errors import NeedsOperator
    from profile_engine.history_chart import render_chart

    image = render_chart(rows, channel, view="both", image_format="png")
    try:
        Path(chart_path).write_bytes(image)
    except OSError as error:
        raise NeedsOperator(f"cannot write the chart to {chart_path}: {error.strerror}") from None
    click.echo(f"chart written to {chart_path}", err=True)


def _counts_rows(result: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    columns = ["month", "mau", "total", "channel", "reachable", "unreachable"]
    head = [result["month"], result["mau"], result["total"]]
    rows = [
        [*head, name, figures["reachable"], figures["unreachable"]]
        for name, figures in result["channels"].items()
    ]
    rows.append([*head, "any", result["reachable_any"], result["total"] - result["reachable_any"]])
    return columns, rows


def _print_counts_table(result: dict[str, Any], as_of: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if as_of is not None:
        console.print(f"[bold]As of the end of {as_of} (UTC)[/bold]")
    console.print(
        f"[bold]Profiles[/bold] {result['total']:,}   [bold]reachable on any channel[/bold] "
        f"{result['reachable_any']:,}   [bold]MAU {result['month']}[/bold] {result['mau']:,}"
    )
    table = Table("channel", "reachable", "unreachable")
    for name, figures in result["channels"].items():
        table.add_row(name, f"{figures['reachable']:,}", f"{figures['unreachable']:,}")
    console.print(table)


# -- profile -------------------------------------------------------------------------------


@click.command()
@db_option
@click.argument("lookup_key", metavar="TYPE:VALUE")
@click.option(
    "--as-of",
    "as_of",
    metavar="YYYY-MM-DD",
    help="The profile as it was at the end of this UTC day (identifiers, tags, traits, "
    "orders and timeline then).",
)
@format_option("table", "json")
@key_file_option
def profile(
    db_path: str, lookup_key: str, as_of: str | None, output_format: str, key_file: Any
) -> None:
    """One customer profile by an identifier (email:ann@example.com) or profile_id:ID.

    TYPE is customer_id, email, phone, push_token, anonymous_id or profile_id; a merged-away
    profile_id resolves to the profile it was merged into. A projection folded with a master
    key needs it (--key-file or PROFILE_ENGINE_MASTER_KEY); erased values read as null.
    """
    from projections import queries

    if as_of is not None:
        _profile_as_of(db_path, lookup_key, as_of, output_format)
        return
    ring = key_ring(key_file)

    def load(con: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        document = queries.profile_view(con, lookup_key, ring)
        if document is None or output_format == "json":
            return document, []
        pid, ccpa_opted_out = document["profile_id"], document["ccpa_opted_out"]
        return document, queries.identifier_rows(con, pid, ccpa_opted_out, ring)

    def ask(server: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        document = server.profile(lookup_key)
        if document is None or output_format == "json":
            return document, []
        return document, server.identifiers(lookup_key) or []

    document, identifiers = _with_readonly(db_path, load, ask)
    if document is None:
        raise UserError(f"no profile found for {lookup_key}")
    if output_format == "json":
        click.echo(json.dumps(document, indent=2))
    else:
        _print_profile(document, identifiers)


def _profile_as_of(db_path: str, lookup_key: str, as_of: str, output_format: str) -> None:
    from projections import history

    day = history.parse_day(as_of, "--as-of")

    def load(con: Any) -> Any:
        from projections.sealed import PLAIN, stored_keying

        if stored_keying(con) != PLAIN:
            # The history resolves identifiers by their plain keys and shows stored values.
            raise UserError("--as-of does not read a projection folded with a master key yet")
        return history.profile_and_identifiers_as_of(con, lookup_key, day)

    found = _with_readonly(
        db_path,
        load,
        lambda server: _ask_profile_as_of(server, lookup_key, day.isoformat()),
    )
    if found is None:
        raise UserError(f"no profile found for {lookup_key} as of {day}")
    document, identifiers = found
    if output_format == "json":
        click.echo(json.dumps(document, indent=2))
    else:
        from rich.console import Console

        Console().print(f"[bold]As of the end of {day} (UTC)[/bold]")
        _print_profile(document, identifiers)


def _ask_profile_as_of(
    server: Any, lookup_key: str, as_of: str
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    document = server.profile(lookup_key, as_of=as_of)
    if document is None:
        return None
    return document, server.identifiers(lookup_key, as_of=as_of) or []


def _yes_no(flag: bool | None) -> str:
    return "[green]yes[/green]" if flag else "[red]no[/red]"


def _print_profile(document: dict[str, Any], identifiers: list[dict[str, Any]]) -> None:
    sections = [
        (title, _section_table(title, columns, rows))
        for title, columns, rows in _profile_sections(document, identifiers)
    ]
    console = table_console(*(table for _, table in sections if table is not None))
    orders = document["orders"]
    average = "-" if orders["average"] is None else f"{orders['average']:,.2f}"
    reachable = "  ".join(f"{ch} {_yes_no(ok)}" for ch, ok in document["reachable"].items())
    console.print(f"[bold]Profile[/bold] {document['profile_id']}")
    console.print(
        f"first seen {document['first_seen']}   CCPA opted out "
        f"{_yes_no(document['ccpa_opted_out'])}   email hash number "
        f"{document['email_hash_number'] if document['email_hash_number'] is not None else '-'}"
    )
    console.print(f"reachable: {reachable}")
    console.print(
        f"orders {orders['count']}   lifetime value {orders['revenue']:,.2f}   average "
        f"{average}   last purchase {orders['last_purchase_at'] or '-'}"
    )
    for title, table in sections:
        console.print(f"[bold]{title}[/bold]: none" if table is None else table)


def _identifier_tags(record: dict[str, Any], ccpa_opted_out: bool) -> str:
    tags = []
    if record["is_last_seen"]:
        tags.append("Last Seen")
    if record["channel"] is not None:
        tags.append("Deliverable" if record["deliverable"] else "[red]Undeliverable[/red]")
        if ccpa_opted_out:
            tags.append("[red]CCPA Opt-out[/red]")
    return ", ".join(tags)


def _profile_sections(
    document: dict[str, Any], identifiers: list[dict[str, Any]]
) -> list[tuple[str, list[str], list[list[str]]]]:
    ccpa = bool(document["ccpa_opted_out"])
    id_rows = [
        [
            i["type"],
            i["value"],
            _identifier_tags(i, ccpa),
            i["consent"],
            "" if i["channel"] is None else ("eligible" if i["eligible"] else i["reason"]),
            i["last_seen"] or "",
        ]
        for i in identifiers
    ]
    trait_rows = [
        [name, json.dumps(t["value"]), t["updated_at"] or "", t["source"]]
        for name, t in document["traits"].items()
    ]
    subscription_rows = [
        [s["list_id"], s["channel"], s["status"], s["identifier"] or "", s["updated_at"] or ""]
        for s in document["subscriptions"]
    ]
    timeline_rows = [
        [e["timestamp"] or "", e["type"], e["event_name"] or "", _short(json.dumps(e["payload"]))]
        for e in document["timeline"]
    ]
    return [
        ("Identifiers", ["type", "value", "tags", "consent", "eligibility", "last seen"], id_rows),
        ("Traits", ["name", "value", "updated at", "source"], trait_rows),
        ("Subscriptions", ["list", "channel", "status", "identifier", "updated at"],
         subscription_rows),
        ("Timeline (latest first)", ["timestamp", "type", "event", "payload"], timeline_rows),
    ]  # fmt: skip


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _section_table(title: str, columns: list[str], rows: list[list[str]]) -> Any:
    """One section of the profile as a table, or None when it has no rows."""
    if not rows:
        return None
    table = data_table(columns, title=title, title_justify="left", title_style="bold")
    for row in rows:
        table.add_row(*row)
    return table


# -- sql -----------------------------------------------------------------------------------


@click.command()
@db_option
@click.argument("query")
@format_option("table", "json", "csv")
@key_file_option
def sql(db_path: str, query: str, output_format: str, key_file: Any) -> None:
    """Run one SQL statement that only reads the projections.

    \b
    Accepted: one SELECT (also FROM-first, VALUES, DESCRIBE, SHOW, SUMMARIZE), EXPLAIN
    [ANALYZE] of one, CALL/PRAGMA of a read-only table function (PRAGMA table_info('x')).
    Refused before it runs: anything that writes (also inside WITH), several statements,
    COPY/EXPORT/ATTACH/INSTALL/LOAD/SET, file and network readers (read_csv, glob, ...).
    The database is opened read-only and sandboxed: no other file, network or extension.

    Views for SQL users: profile_reachability, reachability_counts, identifier_reachability,
    identifier_status, monthly_active_users, mau_for_month('YYYY-MM'), effective_settings,
    profile_export, profile_traits. In a projection folded with a master key (given with
    --key-file or PROFILE_ENGINE_MASTER_KEY) personal columns hold sealed values; then
    identifiers_plain, traits_plain, subscriptions_plain, identity_conflicts_plain and
    events_plain show them in clear (NULL once erased), and pe_open(value, wrapped) opens one.
    """
    from projections import queries

    cut_short: list[int] = []
    columns, rows = _with_readonly(
        db_path,
        lambda con: queries.run_sql(con, query),
        lambda server: _ask_sql(server, query, cut_short),
        key_ring(key_file),
    )
    print_rows(columns, rows, output_format)
    if cut_short:
        from profile_engine.server.client import SQL_ROWS
        from projections.live import SQL_MAX_BYTES

        # Printed, but not the whole answer: a script must not take it for one.
        raise BadInput(
            f"the server answers a query with at most {SQL_ROWS:,} rows or "
            f"{SQL_MAX_BYTES // 2**20} MB of values; the {cut_short[0]:,} rows above are the "
            "first of more: narrow the query (LIMIT, fewer columns) or use `export`"
        )


def _ask_sql(server: Any, query: str, cut_short: list[int]) -> tuple[list[str], list[list[Any]]]:
    answer = server.sql(query)
    if answer["truncated"]:
        cut_short.append(len(answer["rows"]))
    return answer["columns"], answer["rows"]


# -- export --------------------------------------------------------------------------------


@click.command()
@db_option
@click.option(
    "--where",
    "where",
    help='One condition over the columns below, e.g. "email_reachable AND revenue > 100": '
    "comparisons, AND/OR/NOT, IS NULL, IN (constants), BETWEEN, LIKE/ILIKE, arithmetic, casts "
    "and a few functions (lower, upper, list_contains, date_trunc, ...); checked before it runs.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["csv", "json"]),
    required=True,
    help="csv (header row; identifiers as a JSON array) or json (JSON Lines: one object a line).",
)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="File.")
@key_file_option
def export(
    db_path: str, where: str | None, output_format: str, out_path: str, key_file: Any
) -> None:
    """Export profiles with their identifiers and reachability per channel (streamed).

    Columns: profile_id, first_seen, last_seen, ccpa_opted_out, customer_id, email, phone
    (the last-seen ones), identifiers (every one as type:value), email_reachable,
    sms_reachable, push_reachable, reachable_any, order_count, revenue, last_purchase_at.
    A projection folded with a master key needs it: values are written in clear (--where
    sees them sealed, so conditions on customer_id, email, phone and identifiers do not work).
    """
    from rich.console import Console

    from projections import queries

    console = Console(stderr=True)

    ring = key_ring(key_file)

    def write(con: Any) -> int:
        with console.status(f"exporting profiles to {out_path} ..."):
            return queries.export_profiles(con, out_path, output_format, where, ring)

    def ask(server: Any) -> int:
        with console.status(f"exporting profiles to {out_path} (through the server) ..."):
            written: int = server.export(output_format, where, out_path)
            return written

    written = _with_readonly(db_path, write, ask)
    console.print(f"exported {written:,} profiles to {out_path}")


# -- settings ------------------------------------------------------------------------------


@click.group()
def settings() -> None:
    """Reachability and MAU settings stored in the projection database."""


@settings.command("show")
@db_option
@format_option("table", "json", "csv")
def settings_show(db_path: str, output_format: str) -> None:
    """List every setting with its value, its default and whether it is overridden."""
    from projections.settings import list_settings

    rows = _with_readonly(
        db_path,
        list_settings,
        lambda server: [SimpleNamespace(**record) for record in server.settings()],
    )
    columns = ["key", "value", "default", "overridden", "description"]
    if output_format == "table":
        _print_settings_table(rows)
        return
    if output_format == "json":
        records = [[r.key, r.value, r.default, r.overridden, r.description] for r in rows]
    else:
        records = [
            [r.key, json.dumps(r.value), json.dumps(r.default), r.overridden, r.description]
            for r in rows
        ]
    print_rows(columns, records, output_format)


def _print_settings_table(rows: list[Any]) -> None:
    table = data_table(("key", "value", "default", "description"))
    table.columns[0].no_wrap = True
    for row in rows:
        value = json.dumps(row.value)
        shown = f"[bold yellow]{value}[/bold yellow]" if row.overridden else value
        table.add_row(row.key, shown, json.dumps(row.default), row.description)
    console = table_console(table)
    console.print(table)
    console.print("overridden values are shown in [bold yellow]yellow[/bold yellow]")


@settings.command("set")
@db_option
@click.argument("key", metavar="KEY")
@click.argument("value", metavar="VALUE")
def settings_set(db_path: str, key: str, value: str) -> None:
    """Change one setting; counts reflect it at once.

    \b
    Keys (type):
      ccpa_blocks.email|sms|push         true|false
      implicit_consent.email|sms|push    true|false
      mau.excluded_events                JSON array or comma-separated names ("" = none)
      bounce.soft_bounce_limit           non-negative integer (0 = off)
    """
    from projections.settings import set_setting

    typed = parse_value(key, value)
    _with_writable(
        db_path,
        lambda con: set_setting(con, key, typed),
        lambda server: server.set_setting(key, typed),
    )
    click.echo(f"{key} = {json.dumps(typed)}")


@settings.command("reset")
@db_option
@click.argument("key", metavar="KEY", type=click.Choice(list(SETTINGS)))
def settings_reset(db_path: str, key: str) -> None:
    """Put one setting back to its default."""
    from projections.settings import reset_setting

    _with_writable(
        db_path, lambda con: reset_setting(con, key), lambda server: server.reset_setting(key)
    )
    click.echo(f"{key} = {json.dumps(SETTINGS[key].default)} (default)")


def _with_writable(
    db_path: str, work: Callable[[Any], Any], remote: Callable[[Any], Any] | None = None
) -> Any:
    from projections.readonly import DatabaseBusy, write_projection

    try:
        return write_projection(db_path, work)
    except DatabaseBusy as busy:
        return _through_server(db_path, remote, busy)


COMMANDS = [counts, profile, sql, export, settings]
