"""The query commands through the real click group: formats, errors and exit codes."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner, Result

from profile_engine.cli.main import cli
from profile_engine.contract import parse_event
from tests.support.folding import fold_into_db
from tests.support.hostile import (
    HOSTILE_STATEMENTS,
    SECRET,
    Targets,
    file_digests,
    hostile_statements,
)

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)

LOG = [
    {"type": "identify", "identifiers": {"customer_id": "c1", "email": "Ann@Example.com"},
     "traits": {"first_name": "Ann"}},
    {"type": "track", "identifiers": {"customer_id": "c1"}, "event": "page_view"},
    {"type": "identify", "identifiers": {"customer_id": "c2", "phone": "+14155552671"}},
    {"type": "identify", "identifiers": {"anonymous_id": "anon-3", "push_token": "tok-3"}},
]  # fmt: skip


@pytest.fixture
def db(db_path: Path) -> str:
    events = [
        parse_event(
            {"event_id": f"e{n}", "timestamp": (T0 + timedelta(minutes=n)).isoformat(), **raw}
        )
        for n, raw in enumerate(LOG, start=1)
    ]
    fold_into_db(db_path, events)
    return str(db_path)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def table_rows(db: str, sql_text: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(db, read_only=True)
    try:
        return con.execute(sql_text).fetchall()
    finally:
        con.close()


# -- counts --------------------------------------------------------------------------------


def test_counts_json(db: str) -> None:
    result = run("counts", "--db", db, "--month", "2026-01", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "total": 3,
        "reachable_any": 2,
        "mau": 1,
        "month": "2026-01",
        "channels": {
            "email": {"reachable": 1, "unreachable": 2},
            "sms": {"reachable": 0, "unreachable": 3},
            "push": {"reachable": 1, "unreachable": 2},
        },
    }


def test_counts_channel_filter_and_default_month(db: str) -> None:
    result = run("counts", "--db", db, "--channel", "sms", "--format", "json")
    document = json.loads(result.output)
    assert list(document["channels"]) == ["sms"]
    assert document["month"] == datetime.now(UTC).strftime("%Y-%m")


def test_counts_csv_and_table(db: str) -> None:
    as_csv = run("counts", "--db", db, "--month", "2026-01", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert [(r["channel"], r["reachable"], r["unreachable"]) for r in rows] == [
        ("email", "1", "2"), ("sms", "0", "3"), ("push", "1", "2"), ("any", "2", "1"),
    ]  # fmt: skip
    as_table = run("counts", "--db", db, "--month", "2026-01")
    assert as_table.exit_code == 0
    assert "MAU 2026-01" in as_table.output and "email" in as_table.output


@pytest.mark.parametrize("month", ["January", "2026-13", "0000-01"])
def test_counts_bad_month_is_a_one_line_error(db: str, month: str) -> None:
    result = run("counts", "--db", db, "--month", month)
    assert result.exit_code == 1
    assert "YYYY-MM" in result.output and len(result.output.strip().splitlines()) == 1


def test_counts_as_of_a_day_of_year_one_names_its_month_in_four_digits(db: str) -> None:
    result = run("counts", "--db", db, "--as-of", "0001-01-01", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["month"] == "0001-01"  # strftime wrote "1-01"


def test_counts_on_a_missing_database_says_so(tmp_path: Path) -> None:
    result = run("counts", "--db", str(tmp_path / "nothing.duckdb"))
    assert result.exit_code == 78  # needs an operator: fold events first
    assert "no projection database" in result.output


# -- profile -------------------------------------------------------------------------------


def test_profile_json(db: str) -> None:
    result = run("profile", "--db", db, "email:ann@example.com", "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["traits"]["first_name"]["value"] == "Ann"
    assert document["reachable"] == {"email": True, "sms": False, "push": False}


def test_profile_table_has_every_section(db: str) -> None:
    result = run("profile", "--db", db, "customer_id:c1")
    assert result.exit_code == 0, result.output
    for section in ("Identifiers", "Traits", "Subscriptions", "Timeline", "Last Seen"):
        assert section in result.output


def test_profile_table_written_to_a_pipe_keeps_every_value_whole(db_path: Path) -> None:
    """Written to a file or a pipe (CliRunner's output is one) a table is as wide as its
    values need, not cut to 80 columns with "…" in every long value."""
    email = "a.very.long.mailbox.name.that.goes.on@subdomain.of.an.example.com"
    city = "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch"
    event = {"event_id": "e-long", "timestamp": T0.isoformat(), "type": "identify",
             "identifiers": {"email": email, "customer_id": "c-long"},
             "traits": {"city": city}}  # fmt: skip
    fold_into_db(db_path, [parse_event(event)])
    result = run("profile", "--db", str(db_path), "customer_id:c-long")
    assert result.exit_code == 0, result.output
    assert email in result.output and city in result.output
    assert "│ 2026-01-10T12:00:00Z" in result.output  # a last seen in its table, whole


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("sql", "SELECT '\udcff'"), "the statement is not valid UTF-8 text (at character 9)"),
        (("profile", "email:\udcff@x.com"), "the identifier is not valid UTF-8 text"),
        (("export", "--format", "csv", "--out", "x.csv", "--where", "email = '\udcff'"),
         "--where is not valid UTF-8 text"),
    ],
)  # fmt: skip
def test_arguments_that_are_not_utf8_are_one_line_errors(
    db: str, args: tuple[str, ...], message: str
) -> None:
    """Bytes that are not UTF-8 reach Python's arguments as lone surrogates (\\udcff for
    0xff); they were tracebacks."""
    result = run(args[0], "--db", db, *args[1:])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {message}" or message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_profile_not_found_exits_1(db: str) -> None:
    result = run("profile", "--db", db, "email:nobody@example.com")
    assert result.exit_code == 1
    assert "no profile found for email:nobody@example.com" in result.output


def test_profile_unknown_type_exits_1(db: str) -> None:
    result = run("profile", "--db", db, "fax:123")
    assert result.exit_code == 1
    assert "unknown identifier type 'fax'" in result.output


# -- sql -----------------------------------------------------------------------------------


def test_sql_formats(db: str) -> None:
    query = "SELECT channel, reachable FROM reachability_counts WHERE channel = 'email'"
    as_json = run("sql", "--db", db, query, "--format", "json")
    assert json.loads(as_json.output) == [{"channel": "email", "reachable": 1}]
    as_csv = run("sql", "--db", db, query, "--format", "csv")
    assert as_csv.output.splitlines() == ["channel,reachable", "email,1"]
    assert "email" in run("sql", "--db", db, query).output


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM profiles",
        "INSERT INTO settings VALUES ('ccpa_blocks.email', 'false')",
        "DROP VIEW profile_reachability",
        "COPY profiles TO 'x.csv'",
        "SELECT 1; DELETE FROM profiles",
    ],
)
def test_sql_refuses_writes_and_the_database_stays_unchanged(db: str, statement: str) -> None:
    before = table_rows(db, "SELECT count(*) FROM profiles")
    result = run("sql", "--db", db, statement)
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert table_rows(db, "SELECT count(*) FROM profiles") == before
    assert table_rows(db, "SELECT count(*) FROM settings") == [(0,)]
    assert table_rows(db, "SELECT count(*) FROM duckdb_views() WHERE view_name = "
                          "'profile_reachability'") == [(1,)]  # fmt: skip


def test_sql_error_is_one_line(db: str) -> None:
    result = run("sql", "--db", db, "SELECT nope FROM profiles")
    assert result.exit_code == 1
    assert "nope" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.fixture
def targets(tmp_path: Path) -> Targets:
    return Targets.create(tmp_path / "outside")


@pytest.mark.parametrize(
    "number", range(len(HOSTILE_STATEMENTS)), ids=[s[:60] for s in HOSTILE_STATEMENTS]
)
def test_sql_refuses_hostile_statements_and_touches_nothing(
    db: str, targets: Targets, number: int
) -> None:
    statement = hostile_statements(targets)[number]
    db_before = file_digests(Path(db))
    outside_before = targets.snapshot()
    result = run("sql", "--db", db, statement, "--format", "csv")
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith("Error: ")
    assert SECRET not in result.output  # nothing outside was read into the output
    assert file_digests(Path(db)) == db_before  # the database and its WAL, byte for byte
    assert targets.snapshot() == outside_before  # nothing outside written or created
    assert not targets.fresh.exists() and not targets.fresh_dir.exists()
    assert duckdb.connect(str(targets.canary_db), read_only=True).execute(
        "SELECT answer FROM kept"
    ).fetchall() == [(42,)]


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT count(*) AS n FROM profiles", "n\n3"),
        ("FROM profiles SELECT count(*) AS n", "n\n3"),
        ("SELECT mau FROM mau_for_month('2026-01')", "mau\n1"),
        ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3)"
         " SELECT sum(n) AS s FROM r", "s\n6"),
        ("SELECT count(*) AS n FROM range(4)", "n\n4"),
        ("SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = 'profiles'", "n\n1"),
        ("PRAGMA table_info('profiles')", "profile_id"),
        ("CALL pragma_version()", "library_version"),
        ("PRAGMA version", "library_version"),
        ("DESCRIBE profiles", "profile_id"),
        ("SHOW TABLES", "identifiers"),
        ("SUMMARIZE SELECT revenue FROM profiles", "revenue"),
        ("EXPLAIN SELECT * FROM profiles", "physical_plan"),
        ("EXPLAIN ANALYZE SELECT count(*) FROM profiles", "analyzed_plan"),
        ("SELECT 1 AS one; -- a trailing comment", "one\n1"),
    ],
)  # fmt: skip
def test_sql_still_runs_read_statements(db: str, statement: str, expected: str) -> None:
    result = run("sql", "--db", db, statement, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert expected in result.output


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        ("EXPLAIN ANALYZE COPY (SELECT 1) TO '{fresh}'", "only a SELECT may be explained"),
        ("WITH d AS (DELETE FROM profiles RETURNING *) SELECT 1", "DELETE statement"),
        ("SELECT * FROM read_text('{canary}')", "table function read_text()"),
        ("SELECT 1; SELECT 2", "exactly one SQL statement (got 2)"),
        ("PRAGMA enable_profiling", "not a read-only pragma"),
        ("CALL checkpoint()", "table function checkpoint()"),
        ("ATTACH '{canary_db}' AS x", "an ATTACH statement"),
    ],
)
def test_sql_refusals_name_the_rule(db: str, targets: Targets, statement: str, reason: str) -> None:
    filled = statement.format(canary=targets.canary, canary_db=targets.canary_db,
                              fresh=targets.fresh)  # fmt: skip
    result = run("sql", "--db", db, filled)
    assert result.exit_code == 1
    assert reason in result.output, result.output


# -- export --------------------------------------------------------------------------------


def test_export_csv_with_where(db: str, tmp_path: Path) -> None:
    out = tmp_path / "reachable.csv"
    result = run("export", "--db", db, "--where", "email_reachable", "--format", "csv",
                 "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [r["email"] for r in rows] == ["ann@example.com"]
    assert json.loads(rows[0]["identifiers"]) == ["customer_id:c1", "email:ann@example.com"]
    assert rows[0]["first_seen"] == "2026-01-10T12:01:00.000000Z"
    assert "exported 1 profiles" in result.output


def test_export_json_lines(db: str, tmp_path: Path) -> None:
    out = tmp_path / "all.jsonl"
    result = run("export", "--db", db, "--format", "json", "--out", str(out))
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3
    by_anon = next(r for r in records if "anonymous_id:anon-3" in r["identifiers"])
    assert (by_anon["push_reachable"], by_anon["reachable_any"]) == (True, True)


def test_export_bad_where_is_one_line(db: str, tmp_path: Path) -> None:
    out = tmp_path / "x.csv"
    result = run("export", "--db", db, "--where", "nope = 1", "--format", "csv",
                 "--out", str(out))  # fmt: skip
    assert result.exit_code == 1
    assert "nope" in result.output


HOSTILE_WHERE = [
    # the finding: close the WHERE, add rows read from a file
    "false) UNION ALL (SELECT content" + ", NULL" * 14 + " FROM read_text('{canary}')",
    "false) UNION ALL (SELECT * FROM read_csv('{canary}')",
    "true; COPY identifiers TO '{fresh}'",
    "1 FROM read_text('{canary}')",
    "(SELECT count(*) FROM read_text('{canary}')) > 0",
    "email IN (SELECT content FROM read_text('{canary}'))",
    "EXISTS (SELECT 1 FROM read_text('{canary}'))",
    "length(getenv('HOME')) > 0",
    "true) OR (SELECT true FROM read_text('{canary}')",
]


@pytest.mark.parametrize("number", range(len(HOSTILE_WHERE)), ids=[w[:50] for w in HOSTILE_WHERE])
def test_export_refuses_hostile_where_and_touches_nothing(
    db: str, tmp_path: Path, targets: Targets, number: int
) -> None:
    where = HOSTILE_WHERE[number].format(canary=targets.canary, fresh=targets.fresh)
    out = tmp_path / "out.csv"
    db_before = file_digests(Path(db))
    outside_before = targets.snapshot()
    result = run("export", "--db", db, "--where", where, "--format", "csv", "--out", str(out))
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "--where" in result.output
    assert not out.exists()
    assert SECRET not in result.output
    assert file_digests(Path(db)) == db_before
    assert targets.snapshot() == outside_before
    assert not targets.fresh.exists()


def test_export_where_with_quotes_functions_and_casts(db: str, tmp_path: Path) -> None:
    out = tmp_path / "some.jsonl"
    where = (
        "(lower(EMAIL) LIKE '%@example.com' OR list_contains(identifiers, 'customer_id:c2'))"
        " AND first_seen >= TIMESTAMP '2026-01-10 12:00:00' AND customer_id NOT IN ('it''s')"
    )
    result = run("export", "--db", db, "--where", where, "--format", "json", "--out", str(out))
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["customer_id"] for r in records) == ["c1", "c2"]


def test_export_where_must_be_a_condition(db: str, tmp_path: Path) -> None:
    result = run("export", "--db", db, "--where", "revenue * 2", "--format", "csv",
                 "--out", str(tmp_path / "x.csv"))  # fmt: skip
    assert result.exit_code == 1
    assert "must be a condition" in result.output


def test_export_help_lists_exactly_the_export_columns(db: str) -> None:
    help_text = " ".join(run("export", "--help").output.split())
    listed = help_text.split("Columns: ")[1].split(".")[0]
    names = [part.split("(")[0].strip() for part in listed.split(",")]
    view_columns = [row[0] for row in table_rows(db, "DESCRIBE profile_export")]
    assert names == view_columns


def test_export_json_lines_are_what_duckdb_copy_wrote(db: str, tmp_path: Path) -> None:
    out = tmp_path / "all.jsonl"
    assert run("export", "--db", db, "--format", "json", "--out", str(out)).exit_code == 0
    # what `export` wrote with COPY before the sandbox (a connection with file access)
    copied = tmp_path / "copied.jsonl"
    iso = ", ".join(
        f"strftime({c}, '%Y-%m-%dT%H:%M:%S.%fZ') AS {c}"
        for c in ("first_seen", "last_seen", "last_purchase_at")
    )
    con = duckdb.connect(db, read_only=True)
    try:
        con.execute(
            f"COPY (SELECT * REPLACE ({iso}) FROM profile_export) TO '{copied}' (FORMAT json)"
        )
    finally:
        con.close()
    # Rows come in no promised order (DuckDB scans in parallel): the same lines, byte for byte.
    assert sorted(out.read_bytes().splitlines()) == sorted(copied.read_bytes().splitlines())


def test_export_csv_keeps_null_and_types_apart(db: str, tmp_path: Path) -> None:
    out = tmp_path / "all.csv"
    assert run("export", "--db", db, "--format", "csv", "--out", str(out)).exit_code == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    header = next(csv.reader([lines[0]]))
    assert header == [row[0] for row in table_rows(db, "DESCRIBE profile_export")]
    by_customer = {r["customer_id"]: r for r in csv.DictReader(io.StringIO("\n".join(lines)))}
    ann = by_customer["c1"]
    assert (ann["email_reachable"], ann["order_count"], ann["phone"]) == ("true", "0", "")
    assert ann["last_purchase_at"] == ""  # NULL: an empty cell


def test_export_to_an_unwritable_place_is_one_line_and_leaves_nothing(
    db: str, tmp_path: Path
) -> None:
    out = tmp_path / "missing-dir" / "x.csv"
    result = run("export", "--db", db, "--format", "csv", "--out", str(out))
    assert result.exit_code == 1
    assert "cannot write" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "missing-dir").exists()


# -- settings ------------------------------------------------------------------------------


def test_settings_set_show_and_reset(db: str) -> None:
    assert run("settings", "set", "implicit_consent.sms", "true", "--db", db).exit_code == 0
    shown = json.loads(run("settings", "show", "--db", db, "--format", "json").output)
    sms = next(s for s in shown if s["key"] == "implicit_consent.sms")
    assert (sms["value"], sms["default"], sms["overridden"]) == (True, False, True)
    counts = json.loads(run("counts", "--db", db, "--format", "json").output)
    assert counts["channels"]["sms"]["reachable"] == 1  # moved at once
    assert run("settings", "reset", "implicit_consent.sms", "--db", db).exit_code == 0
    counts = json.loads(run("counts", "--db", db, "--format", "json").output)
    assert counts["channels"]["sms"]["reachable"] == 0


def test_settings_show_csv_and_table(db: str) -> None:
    as_csv = run("settings", "show", "--db", db, "--format", "csv").output.splitlines()
    assert as_csv[0] == "key,value,default,overridden,description"
    assert any(line.startswith('mau.excluded_events,"[""message_sent""]"') for line in as_csv)
    assert "soft_bounce_limit" in run("settings", "show", "--db", db).output


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("nope.key", "1", "unknown setting"), ("ccpa_blocks.sms", "maybe", "not a boolean")],
)
def test_settings_set_refuses_bad_input(db: str, key: str, value: str, message: str) -> None:
    result = run("settings", "set", key, value, "--db", db)
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert table_rows(db, "SELECT count(*) FROM settings") == [(0,)]


# -- a writer holds the database -----------------------------------------------------------


@pytest.fixture
def held_db(db: str) -> Iterator[str]:
    """The projection held open for writing by another process, like a running consumer."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True);"
         " sys.stdin.read()", db],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    yield db
    holder.communicate(input="", timeout=30)


@pytest.mark.parametrize(
    "args",
    [
        ["counts"],
        ["profile", "customer_id:c1"],
        ["sql", "SELECT 1"],
        ["export", "--format", "csv", "--out", "unused.csv"],
        ["settings", "show"],
        ["settings", "set", "bounce.soft_bounce_limit", "2"],
    ],
    ids=["counts", "profile", "sql", "export", "settings-show", "settings-set"],
)
def test_commands_say_when_another_process_holds_the_database(
    held_db: str, args: list[str]
) -> None:
    result = run(*args, "--db", held_db)
    assert result.exit_code == 75  # transient: retry when the writer lets go
    assert "is locked by process" in result.output
    assert "holds it for writing" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_database_without_the_query_views_says_how_to_get_them(tmp_path: Path) -> None:
    bare = tmp_path / "bare.duckdb"
    duckdb.connect(str(bare)).close()
    result = run("counts", "--db", str(bare))
    assert result.exit_code == 78
    assert "has no query views" in result.output


def test_the_query_commands_never_import_duckdb() -> None:
    """DuckDB's errors are translated inside projections/; the CLI sees only error kinds."""
    import ast

    import profile_engine.cli.query_cmd as module

    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert "duckdb" not in imported
