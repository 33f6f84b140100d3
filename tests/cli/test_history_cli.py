"""`counts --as-of`, `counts --daily` (with --chart) and `profile --as-of` on a small log."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from profile_engine import history_chart
from profile_engine.cli.main import cli
from tests.projections.logs import fold

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def db(db_path: Path) -> Path:
    # tests.projections.logs: event i at 2026-01-10 12:00 + i minutes, unless given.
    fold(
        db_path,
        {"type": "identify", "identifiers": {"email": "a@x.io"}, "traits": {"city": "Oslo"}},
        {"type": "track", "identifiers": {"email": "a@x.io"}, "event": "page_viewed",
         "timestamp": "2026-01-11T09:00:00Z"},
        {"type": "consent", "identifiers": {"email": "a@x.io"}, "channel": "email",
         "status": "opted_out", "timestamp": "2026-01-12T09:00:00Z"},
        {"type": "identify", "identifiers": {"email": "b@x.io"}, "traits": {},
         "timestamp": "2026-01-12T10:00:00Z"},
    )  # fmt: skip
    return db_path


def test_daily_csv_and_the_chart_come_from_the_same_rows(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[Any] = []
    real = history_chart.render_chart

    def spy(rows: Any, *args: Any, **kwargs: Any) -> bytes:
        drawn.append(rows)
        return real(rows, *args, **kwargs)

    monkeypatch.setattr(history_chart, "render_chart", spy)
    chart = tmp_path / "chart.png"
    result = run("counts", "--db", str(db), "--daily", "--from", "2026-01-09", "--to",
                 "2026-01-13", "--format", "csv", "--chart", str(chart))  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["day"] for r in printed] == [f"2026-01-{d:02d}" for d in range(9, 14)]
    assert [int(r["total"]) for r in printed] == [0, 1, 1, 2, 2]
    assert [int(r["email_reachable"]) for r in printed] == [0, 1, 1, 1, 1]
    assert [int(r["mau"]) for r in printed] == [0, 0, 1, 1, 1]
    image = chart.read_bytes()
    assert image.startswith(PNG_MAGIC) and len(image) > 10_000
    (rows,) = drawn
    assert [{k: str(v) for k, v in row.items()} for row in rows] == printed


def test_the_daily_table_keeps_its_days_and_column_names_whole(db: Path) -> None:
    """Eleven columns are wider than 80: written to a pipe the table takes the width it
    needs rather than cutting the days to "202…"."""
    result = run("counts", "--db", str(db), "--daily", "--from", "2026-01-09", "--to",
                 "2026-01-10", "--format", "table")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2026-01-09" in result.output and "2026-01-10" in result.output
    assert "email_unreachable" in result.output and "…" not in result.output


def test_counts_as_of_a_day_before_a_consent_change(db: Path) -> None:
    before = json.loads(run("counts", "--db", str(db), "--as-of", "2026-01-11",
                            "--format", "json").stdout)  # fmt: skip
    after = json.loads(run("counts", "--db", str(db), "--as-of", "2026-01-12",
                           "--format", "json").stdout)  # fmt: skip
    assert (before["total"], before["channels"]["email"]["reachable"]) == (1, 1)
    assert (after["total"], after["channels"]["email"]["reachable"]) == (2, 1)
    assert before["month"] == "2026-01" and before["mau"] == 1


def test_profile_as_of_shows_the_consent_then_and_not_found_before_it_existed(db: Path) -> None:
    then = json.loads(run("profile", "--db", str(db), "--as-of", "2026-01-11", "email:a@x.io",
                          "--format", "json").stdout)  # fmt: skip
    assert then["identifiers"][0]["consent"] == "unknown"
    assert then["traits"]["city"]["value"] == "Oslo"
    now = json.loads(run("profile", "--db", str(db), "email:a@x.io", "--format", "json").stdout)
    assert now["identifiers"][0]["consent"] == "opted_out"
    missing = run("profile", "--db", str(db), "--as-of", "2026-01-11", "email:b@x.io")
    assert missing.exit_code == 1
    assert "no profile found for email:b@x.io as of 2026-01-11" in missing.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--as-of", "2026-13-01"], "not a real date"),
        (["--as-of", "2026-01-01", "--month", "2026-01"], "do not go together"),
        (["--daily", "--from", "2026-01-01"], "needs --from"),
        (["--from", "2026-01-01"], "--from goes with --daily"),
        (["--daily", "--from", "2026-02-01", "--to", "2026-01-01"], "before"),
    ],
)
def test_bad_options_are_one_line_errors(db: Path, args: list[str], message: str) -> None:
    result = run("counts", "--db", str(db), *args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
