"""Settings: parsing, storage, SQL defaults in sync, and counts that move without a rebuild."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from profile_engine.contract import parse_event
from profile_engine.reachability import DEFAULTS, SettingError, parse_value
from projections import queries
from projections.readonly import open_readonly
from projections.settings import list_settings, reset_setting, set_setting
from projections.store import open_projection
from tests.support.folding import fold_into_db


def test_sql_defaults_match_the_python_defaults(db_path: Path) -> None:
    con = open_projection(db_path)
    try:
        rows = con.execute("SELECT key, value FROM setting_defaults").fetchall()
    finally:
        con.close()
    assert {key: json.loads(value) for key, value in rows} == DEFAULTS


def test_the_documented_defaults() -> None:
    assert DEFAULTS == {
        "ccpa_blocks.email": True,
        "ccpa_blocks.sms": True,
        "ccpa_blocks.push": True,
        "implicit_consent.email": True,
        "implicit_consent.sms": False,
        "implicit_consent.push": True,
        "mau.excluded_events": ["message_sent"],
        "bounce.soft_bounce_limit": 0,
    }


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("ccpa_blocks.sms", "false", False),
        ("implicit_consent.sms", "TRUE", True),
        ("bounce.soft_bounce_limit", "3", 3),
        ("mau.excluded_events", '["message_sent", "sync"]', ["message_sent", "sync"]),
        ("mau.excluded_events", "message_sent, sync", ["message_sent", "sync"]),
        ("mau.excluded_events", "", []),
    ],
)
def test_values_parse_to_their_type(key: str, text: str, expected: object) -> None:
    assert parse_value(key, text) == expected


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("ccpa_blocks.fax", "true", "unknown setting 'ccpa_blocks.fax'"),
        ("ccpa_blocks.email", "yes", "is not a boolean"),
        ("bounce.soft_bounce_limit", "-1", "is not a whole number from 0 to 2,147,483,647"),
        ("bounce.soft_bounce_limit", "2.5", "is not a whole number from 0"),
        # Past what SQL reads as an integer: every count would fail until it was reset.
        ("bounce.soft_bounce_limit", "9223372036854775808", "is not a whole number from 0"),
        ("bounce.soft_bounce_limit", "2147483648", "is not a whole number from 0"),
        ("mau.excluded_events", "[1, 2]", "is not a list of non-empty names"),
        ("mau.excluded_events", '["\\ud800"]', "is not a list of non-empty names"),
        ("mau.excluded_events", "a\ud800", "is not a list of non-empty names"),
        ("mau.excluded_events", "a,,b", "empty name"),
    ],
)
def test_bad_keys_and_values_are_refused_in_one_line(key: str, text: str, message: str) -> None:
    with pytest.raises(SettingError, match=message) as caught:
        parse_value(key, text)
    assert "\n" not in str(caught.value)


def test_set_list_and_reset(db_path: Path) -> None:
    con = open_projection(db_path)
    try:
        set_setting(con, "bounce.soft_bounce_limit", 4)
        set_setting(con, "bounce.soft_bounce_limit", 5)  # replaces, never duplicates
        listed = {row.key: row for row in list_settings(con)}
        stored = con.execute("SELECT key, value FROM settings").fetchall()
        reset_setting(con, "bounce.soft_bounce_limit")
        after_reset = {row.key: row for row in list_settings(con)}
    finally:
        con.close()
    limit = "bounce.soft_bounce_limit"
    assert stored == [(limit, "5")]
    assert (listed[limit].value, listed[limit].default, listed[limit].overridden) == (5, 0, True)
    assert listed["ccpa_blocks.email"].overridden is False
    assert (after_reset[limit].value, after_reset[limit].overridden) == (0, False)


def test_a_settings_change_moves_the_counts_without_a_rebuild(db_path: Path) -> None:
    events = [
        parse_event(
            {"type": "identify", "event_id": "e1", "timestamp": "2026-01-02T00:00:00Z",
             "identifiers": {"customer_id": "c1", "phone": "+14155552671"}}
        )
    ]  # fmt: skip
    fold_into_db(db_path, events)
    before = _sms_reachable(db_path)
    con = duckdb.connect(str(db_path))
    set_setting(con, "implicit_consent.sms", True)
    con.close()
    assert (before, _sms_reachable(db_path)) == (0, 1)


def _sms_reachable(db_path: Path) -> int:
    con = open_readonly(str(db_path))
    try:
        return int(queries.counts(con, "2026-01")["channels"]["sms"]["reachable"])
    finally:
        con.close()
