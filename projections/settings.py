"""User settings stored in the projection table ``settings(key, value)`` as JSON text.

The query views read the table on every query, so a change moves the counts at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import duckdb

from profile_engine.reachability import (
    SETTINGS,
    SettingValue,
    decode_value,
    encode_value,
    setting,
)


@dataclass(frozen=True, slots=True)
class SettingRow:
    key: str
    value: SettingValue
    default: SettingValue
    overridden: bool
    description: str


def stored_settings(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """The raw JSON text of every known setting that is overridden in the table."""
    return known_overrides(con.execute("SELECT key, value FROM settings").fetchall())


def known_overrides(rows: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Known keys of ``rows`` (key, value) with their value; of a key stored twice, the
    greatest value, as the views read it (``max``)."""
    stored: dict[str, str] = {}
    for key, value in rows:
        if key in SETTINGS and (key not in stored or value > stored[key]):
            stored[key] = value
    return stored


def list_settings(con: duckdb.DuckDBPyConnection) -> list[SettingRow]:
    return setting_rows(stored_settings(con))


def setting_rows(stored: Mapping[str, str]) -> list[SettingRow]:
    rows = []
    for key, spec in SETTINGS.items():
        overridden = key in stored
        value = decode_value(key, stored[key]) if overridden else spec.default
        rows.append(SettingRow(key, value, spec.default, overridden, spec.description))
    return rows


def set_setting(con: duckdb.DuckDBPyConnection, key: str, value: SettingValue) -> None:
    """Store one setting (validated); replaces any earlier value atomically."""
    encoded = encode_value(key, value)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM settings WHERE key = ?", [key])
        con.execute("INSERT INTO settings VALUES (?, ?)", [key, encoded])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def reset_setting(con: duckdb.DuckDBPyConnection, key: str) -> None:
    """Back to the default: the row disappears, the views fall back to the default."""
    setting(key)  # unknown keys are an error, not a silent no-op
    con.execute("DELETE FROM settings WHERE key = ?", [key])


def effective_settings(con: duckdb.DuckDBPyConnection) -> dict[str, SettingValue]:
    """Every setting's value in force: the stored override, else the default."""
    return settings_in_force(stored_settings(con))


def settings_in_force(stored: Mapping[str, str]) -> dict[str, SettingValue]:
    return {row.key: row.value for row in setting_rows(stored)}
