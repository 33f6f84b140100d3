"""How the pages name a profile (first and last name, or an identifier) and show values."""

from __future__ import annotations

from profile_engine.server.pages import display_name, initials, sql_cell, summary_name


def test_a_direction_override_in_a_first_name_does_not_reverse_the_heading() -> None:
    """U+202E typed into a first name would show "Ann Lee" as "eeL nnA"."""
    row = {"first_name": "\u202eAnn", "last_name": "Lee", "identifiers": {}}
    assert summary_name(row) == "Ann Lee"
    document = {"traits": {"first_name": {"value": "\u2067Ann\u2069"}}, "identifiers": []}
    assert display_name(document) == "Ann"
    assert initials("\u202eAnn Lee") == "AL"


def test_without_a_name_the_last_seen_identifier_names_it() -> None:
    assert summary_name({"first_name": None, "last_name": None,
                         "identifiers": {"email": "a@x.io"}}) == "a@x.io"  # fmt: skip
    assert summary_name({"first_name": "", "last_name": None, "identifiers": {}}) == (
        "Anonymous visitor"
    )
    assert initials("a@x.io") == "AX"


def test_the_sql_page_shows_sql_values_not_python_ones() -> None:
    assert [sql_cell(v) for v in (True, False, b"x\x01", {"a": [1, "é"]}, [1, 2], 3.5)] == [
        "true", "false", "x\\x01", '{"a": [1, "é"]}', "[1, 2]", "3.5",
    ]  # fmt: skip
