"""Hostile statements and the files they aim at, for the tests of the query sandbox.

Each statement tries to read or write something beyond the projection: another file, another
DuckDB database, the network, an extension, a setting, or the projection itself. The targets
are files a test creates (``Targets``), so a test can tell afterwards that nothing was read
into an output and nothing was written or created.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import duckdb

SECRET = "canary-secret-4711"


@dataclass(frozen=True)
class Targets:
    """Files outside the projection that hostile statements aim at."""

    directory: Path
    canary: Path  # a text file whose content must never show up in an output
    canary_db: Path  # another DuckDB database that must keep opening
    fresh: Path  # a path that must not come to exist
    fresh_dir: Path  # likewise, a directory

    @classmethod
    def create(cls, directory: Path) -> Targets:
        directory.mkdir(parents=True, exist_ok=True)
        canary = directory / "canary.csv"
        canary.write_text(f"secret\n{SECRET}\n", encoding="utf-8")
        # a file only a directory listing (glob) would reveal
        (directory / f"listed-{SECRET}.txt").write_text("x", encoding="utf-8")
        canary_db = directory / "other.duckdb"
        con = duckdb.connect(str(canary_db))
        con.execute("CREATE TABLE kept AS SELECT 42 AS answer")
        con.close()
        return cls(directory, canary, canary_db, directory / "fresh.csv", directory / "exported")

    def snapshot(self) -> dict[str, str]:
        """Name -> digest of every file under the directory (what must not change)."""
        return {
            str(path.relative_to(self.directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(self.directory.rglob("*"))
            if path.is_file()
        }


# Templates: {canary}, {canary_db}, {fresh}, {fresh_dir} and {directory} are filled in.
HOSTILE_STATEMENTS: tuple[str, ...] = (
    # the findings
    "EXPLAIN ANALYZE COPY (SELECT * FROM identifiers) TO '{fresh}'",
    "EXPLAIN ANALYZE COPY (SELECT * FROM identifiers) TO '{canary_db}'",
    "EXPLAIN ANALYZE INSTALL httpfs",
    "SELECT * FROM read_text('{canary}')",
    "SELECT * FROM read_csv('{canary}')",
    "SELECT * FROM glob('{directory}/*')",
    # file and network readers
    "FROM read_text('{canary}')",
    "SELECT * FROM read_blob('{canary}')",
    "SELECT * FROM read_json_objects('{canary}')",
    "SELECT * FROM sniff_csv('{canary}')",
    "SELECT * FROM '{canary}'",
    "SELECT * FROM read_csv('https://example.com/x.csv')",
    "SELECT * FROM query('SELECT content FROM read_text(''{canary}'')')",
    "EXPLAIN ANALYZE SELECT * FROM read_text('{canary}')",
    "DESCRIBE SELECT * FROM read_text('{canary}')",
    "SELECT (SELECT max(content) FROM read_text('{canary}')) AS leaked",
    # writing files and other databases
    "COPY identifiers TO '{fresh}'",
    "COPY (SELECT 1) TO '{canary}'",
    "EXPORT DATABASE '{fresh_dir}'",
    "IMPORT DATABASE '{directory}'",
    "ATTACH '{canary_db}' AS other",
    "ATTACH '{fresh}' AS created",
    # extensions and settings
    "INSTALL httpfs",
    "LOAD httpfs",
    "EXPLAIN ANALYZE LOAD httpfs",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "SET profiling_output = '{fresh}'",
    "PRAGMA enable_profiling",
    "PRAGMA memory_limit = '1GB'",
    "PRAGMA import_database('{directory}')",
    # side effects through CALL and functions
    "CALL checkpoint()",
    "CALL force_checkpoint()",
    "CALL enable_logging()",
    "SELECT getenv('HOME')",
    "SELECT write_log('hello')",
    # writing CTEs (DuckDB parses them as SELECT statements)
    "WITH gone AS (DELETE FROM profiles RETURNING *) SELECT count(*) FROM gone",
    "WITH c AS (COPY (SELECT 1) TO '{fresh}') SELECT 1",
    "WITH i AS (INSERT INTO settings VALUES ('ccpa_blocks.email', 'false') RETURNING *) "
    "SELECT * FROM i",
    "WITH u AS (UPDATE profiles SET revenue = 0 RETURNING *) SELECT 1",
    # several statements, one hidden behind comments
    "SELECT 1; DELETE FROM profiles",
    "SELECT 1 /* ; */; DROP TABLE profiles",
    "SELECT 1 -- harmless\n; DELETE FROM identifiers",
    "CALL pragma_version(); DELETE FROM profiles",
    # plain writes
    "CREATE TABLE stolen AS SELECT * FROM read_text('{canary}')",
    "CREATE TEMP TABLE scratch AS SELECT 1",
    "INSERT INTO settings VALUES ('ccpa_blocks.email', 'false')",
    "DELETE FROM profiles",
    "DROP VIEW profile_reachability",
    "CHECKPOINT",
    "SET VARIABLE leaked = (SELECT content FROM read_text('{canary}'))",
)


def hostile_statements(targets: Targets) -> list[str]:
    """The statements with the targets' paths filled in."""
    paths = {
        "canary": targets.canary,
        "canary_db": targets.canary_db,
        "fresh": targets.fresh,
        "fresh_dir": targets.fresh_dir,
        "directory": targets.directory,
    }
    return [statement.format(**paths) for statement in HOSTILE_STATEMENTS]


def database_fingerprint(con: duckdb.DuckDBPyConnection) -> dict[str, object]:
    """Every user table's rows (sorted) and every view and macro name: what a write changes."""
    tables = [
        row[0]
        for row in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE NOT internal ORDER BY 1"
        ).fetchall()
    ]
    contents: dict[str, object] = {
        name: sorted(map(repr, con.execute(f'SELECT * FROM "{name}"').fetchall()))
        for name in tables
    }
    contents["views"] = con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1"
    ).fetchall()
    contents["macros"] = con.execute(
        "SELECT function_name FROM duckdb_functions() WHERE NOT internal ORDER BY 1"
    ).fetchall()
    return contents


def file_digests(db_path: Path) -> dict[str, str | None]:
    """sha256 of the database file and of its WAL (None when absent)."""
    result: dict[str, str | None] = {}
    for path in (db_path, db_path.with_name(db_path.name + ".wal")):
        result[path.name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    return result
