"""A fresh projection opens in DuckDB 1.x clients (most notebooks and BI tools ship 1.x).

The 1.x clients run in their own virtualenvs (``make duckdb-clients`` creates them under
``.cache/duckdb-clients/<version>``; this test creates a missing one from PyPI and skips,
saying why, when it cannot).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from profile_engine.attributes import AttributeRegistry
from projections.store import STORAGE_VERSION, ProjectionStore
from projections.typed_traits import refresh_typed_traits_view
from tests.projections.logs import fold

CLIENTS = Path(__file__).resolve().parents[2] / ".cache" / "duckdb-clients"
# The oldest release that reads storage v1.4.0, and the last 1.x release.
VERSIONS = ("1.4.4", "1.5.6")
README_QUERIES = [
    "SELECT * FROM reachability_counts ORDER BY channel",
    "SELECT * FROM mau_for_month('2026-01')",
    "SELECT channel, reason, count(*) FROM identifier_reachability WHERE NOT eligible "
    "GROUP BY ALL ORDER BY ALL",
    "SELECT p.profile_id, p.revenue FROM profiles p JOIN profile_reachability r "
    "USING (profile_id) WHERE r.email AND p.order_count >= 1 ORDER BY p.revenue DESC LIMIT 20",
    "SELECT birthday_month, count(*) FROM profile_traits GROUP BY ALL ORDER BY ALL",
]
# Every object, every README query: counted by the 1.x client and by this DuckDB.
PROBE = """
import json, sys
import duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
objects = con.execute(
    "SELECT table_name FROM duckdb_tables() UNION ALL "
    "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1"
).fetchall()
answers = {name: con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for (name,) in objects}
for query in json.loads(sys.argv[2]):
    answers[query] = [list(map(str, row)) for row in con.execute(query).fetchall()]
print(json.dumps({"version": duckdb.__version__, "answers": answers}))
"""


def projection(path: Path) -> Path:
    fold(
        path,
        {"type": "identify", "identifiers": {"customer_id": "c1", "email": "Ann@Example.com"},
         "traits": {"first_name": "Ann", "birthday_month": 4}},
        {"type": "consent", "identifiers": {"email": "ann@example.com"}, "channel": "email",
         "status": "opted_in"},
        {"type": "track", "identifiers": {"customer_id": "c1"}, "event": "purchase",
         "properties": {"order_id": "o1", "revenue": 12.5}},
        {"type": "identify", "identifiers": {"phone": "+14155552671", "anonymous_id": "a2"}},
        {"type": "bounce", "identifiers": {"phone": "+14155552671"}, "channel": "sms",
         "bounce_type": "hard"},
        {"type": "subscription", "identifiers": {"email": "ann@example.com"}, "list_id": "news",
         "channel": "email", "status": "subscribed"},
        {"type": "ccpa", "identifiers": {"anonymous_id": "a2"}, "request": "opt_out"},
    )  # fmt: skip
    with ProjectionStore(path) as store:
        refresh_typed_traits_view(store.con, AttributeRegistry(path.with_suffix(".json")))
    return path


def test_new_projections_are_created_in_the_storage_version_1x_reads(tmp_path: Path) -> None:
    path = projection(tmp_path / "fresh.duckdb")
    with duckdb.connect() as con:
        con.execute(f"ATTACH '{path}' AS p (READ_ONLY)")
        tags = con.execute("SELECT tags FROM duckdb_databases() WHERE database_name = 'p'")
        assert tags.fetchone()[0]["storage_version"].startswith(STORAGE_VERSION)  # type: ignore[index]


def client_python(version: str) -> Path:
    venv = CLIENTS / version
    python = venv / "bin" / "python"
    if python.exists():
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", f"duckdb=={version}"],
            check=True, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"cannot install DuckDB {version} from PyPI here: {error}")
    return python


def answers_of(python: str | Path, path: Path) -> dict[str, Any]:
    result = subprocess.run(
        [str(python), "-c", PROBE, str(path), json.dumps(README_QUERIES)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


@pytest.mark.parametrize("version", VERSIONS)
def test_a_duckdb_1x_client_reads_every_table_view_and_readme_query(
    tmp_path: Path, version: str
) -> None:
    path = projection(tmp_path / "fresh.duckdb")
    old = answers_of(client_python(version), path)
    assert old["version"] == version
    current = answers_of(sys.executable, path)
    assert old["answers"] == current["answers"]
    assert old["answers"]["profiles"] == 2 and old["answers"]["profile_traits"] == 2
