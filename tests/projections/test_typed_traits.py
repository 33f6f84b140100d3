"""The profile_traits view gives traits their registered SQL types."""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path

import duckdb
import pytest

from profile_engine.attributes import AttributeRegistry
from projections.typed_traits import refresh_typed_traits_view

NOW = dt.datetime(2026, 1, 1)


# Profile ids are UUIDs; these stand for three live profiles and one that is gone.
P1, P2, P3, GONE, Q1, Q2 = (f"00000000-0000-0000-0000-00000000000{n}" for n in range(1, 7))


def _profile(con: duckdb.DuckDBPyConnection, profile_id: str) -> None:
    con.execute(
        "INSERT INTO profiles (profile_id, created_at, created_event_id, event_count,"
        " ccpa_opted_out, order_count, revenue) VALUES (?, ?, 'e', 1, false, 0, 0)",
        [profile_id, NOW],
    )


def _trait(
    con: duckdb.DuckDBPyConnection, profile_id: str, name: str, value: str, value_type: str
) -> None:
    con.execute(
        "INSERT INTO traits VALUES (?, ?, ?, ?, ?, 'e')",
        [profile_id, name, value, value_type, NOW],
    )


@pytest.fixture
def registry(tmp_path: Path) -> AttributeRegistry:
    reg = AttributeRegistry.load(tmp_path / "attrs.json")
    for name, type_name in {
        "vip": "boolean",
        "points": "long",
        "ltv": "double",
        "signup_date": "date",
        "last_login": "datetime",
        "last_seen_epoch": "epoch",
    }.items():
        reg.add(name, type_name)
    return reg


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(str(tmp_path / "projection.duckdb"))
    connection.execute(resources.files("projections").joinpath("schema.sql").read_text())
    _profile(connection, P1)
    _profile(connection, P2)
    _profile(connection, P3)
    for name, value, value_type in [
        ("first_name", "Ada", "string"),
        ("birthday_day", "31", "long"),
        ("vip", "true", "boolean"),
        ("points", "9223372036854775807", "long"),
        ("ltv", "12.5", "double"),
        ("signup_date", "2024-02-29", "string"),
        ("last_login", "2026-01-02T03:04:05Z", "string"),
        ("last_seen_epoch", "1651676123", "long"),
    ]:
        _trait(connection, P1, name, value, value_type)
    _trait(connection, P2, "points", "7", "long")
    _trait(connection, P2, "ltv", "3", "long")
    _trait(connection, P2, "vip", "false", "boolean")
    # stored before the attribute was registered as a date: reads as NULL, does not fail
    _trait(connection, P3, "signup_date", "sometime", "string")
    # a trait of a profile that is no longer live is not shown
    _trait(connection, GONE, "points", "1", "long")
    return connection


def test_columns_carry_the_registered_sql_types(
    con: duckdb.DuckDBPyConnection, registry: AttributeRegistry
) -> None:
    refresh_typed_traits_view(con, registry)
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'profile_traits'"
        ).fetchall()
    )
    assert types["profile_id"] == "UUID"
    assert types["first_name"] == "VARCHAR"
    assert types["birthday_day"] == "BIGINT"
    assert types["vip"] == "BOOLEAN"
    assert types["points"] == "BIGINT"
    assert types["ltv"] == "DOUBLE"
    assert types["signup_date"] == "DATE"
    assert types["last_login"] == "TIMESTAMP"
    assert types["last_seen_epoch"] == "BIGINT"


def test_one_row_per_live_profile_with_typed_values(
    con: duckdb.DuckDBPyConnection, registry: AttributeRegistry
) -> None:
    refresh_typed_traits_view(con, registry)
    row = con.execute(
        "SELECT first_name, birthday_day, vip, points, ltv, signup_date, last_login,"
        " last_seen_epoch, city FROM profile_traits WHERE profile_id = '" + P1 + "'"
    ).fetchone()
    assert row == (
        "Ada",
        31,
        True,
        9223372036854775807,
        12.5,
        dt.date(2024, 2, 29),
        dt.datetime(2026, 1, 2, 3, 4, 5),
        1651676123,
        None,
    )
    ids = [
        r[0]
        for r in con.execute("SELECT profile_id::VARCHAR FROM profile_traits ORDER BY 1").fetchall()
    ]
    assert ids == [P1, P2, P3]


def test_typed_columns_compare_and_aggregate(
    con: duckdb.DuckDBPyConnection, registry: AttributeRegistry
) -> None:
    refresh_typed_traits_view(con, registry)
    # numeric comparison, not text: '7' > '10...' as text, 7 < 9.2e18 as BIGINT
    big = con.execute(
        "SELECT profile_id::VARCHAR FROM profile_traits WHERE points > 100"
    ).fetchall()
    assert big == [(P1,)]
    assert con.execute("SELECT sum(ltv) FROM profile_traits").fetchone() == (15.5,)
    assert con.execute("SELECT count(*) FROM profile_traits WHERE vip").fetchone() == (1,)
    assert con.execute(
        "SELECT count(*) FROM profile_traits WHERE signup_date >= DATE '2024-01-01'"
    ).fetchone() == (1,)


def test_a_mistyped_old_value_reads_as_null(
    con: duckdb.DuckDBPyConnection, registry: AttributeRegistry
) -> None:
    refresh_typed_traits_view(con, registry)
    row = con.execute(
        "SELECT signup_date FROM profile_traits WHERE profile_id = '" + P3 + "'"
    ).fetchone()
    assert row == (None,)


def test_refresh_picks_up_a_newly_registered_attribute(
    con: duckdb.DuckDBPyConnection, registry: AttributeRegistry
) -> None:
    refresh_typed_traits_view(con, registry)
    _trait(con, P2, "shoe_size", "44", "long")
    with pytest.raises(duckdb.BinderException):
        con.execute("SELECT shoe_size FROM profile_traits").fetchall()
    registry.add("shoe_size", "long")
    refresh_typed_traits_view(con, registry)
    assert con.execute(
        "SELECT shoe_size FROM profile_traits WHERE profile_id = '" + P2 + "'"
    ).fetchone() == (44,)


def test_view_survives_reopening_the_file(
    tmp_path: Path, con: duckdb.DuckDBPyConnection, registry: AttributeRegistry
) -> None:
    refresh_typed_traits_view(con, registry)
    con.close()
    again = duckdb.connect(str(tmp_path / "projection.duckdb"), read_only=True)
    assert again.execute("SELECT count(*) FROM profile_traits").fetchone() == (3,)


def _trait_at(
    con: duckdb.DuckDBPyConnection, profile_id: str, name: str, value: str, at: dt.datetime
) -> None:
    con.execute(
        "INSERT INTO traits VALUES (?, ?, ?, 'double', ?, 'e')", [profile_id, name, value, at]
    )


SEED_ATTRIBUTES = {
    "booleanField": "boolean",
    "longField": "long",
    "LTV": "double",
    "most_viewed_category": "string",
}


@pytest.fixture
def seed_registry(tmp_path: Path) -> AttributeRegistry:
    registry = AttributeRegistry.load(tmp_path / "seed.json")
    for name, type_name in SEED_ATTRIBUTES.items():
        registry.add(name, type_name)
    return registry


def test_seed_names_keep_their_case_and_their_types(
    con: duckdb.DuckDBPyConnection, seed_registry: AttributeRegistry
) -> None:
    _profile(con, Q1)
    _profile(con, Q2)
    _trait(con, Q1, "LTV", "99.5", "double")
    _trait(con, Q1, "booleanField", "true", "boolean")
    _trait(con, Q2, "longField", "7", "long")
    refresh_typed_traits_view(con, seed_registry)
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'profile_traits'"
        ).fetchall()
    )
    assert (types["LTV"], types["booleanField"], types["longField"]) == (
        "DOUBLE", "BOOLEAN", "BIGINT"
    )  # fmt: skip
    assert con.execute(
        'SELECT "LTV", booleanfield, LONGFIELD FROM profile_traits'
        " WHERE profile_id IN (?, ?) ORDER BY profile_id",
        [Q1, Q2],
    ).fetchall() == [(99.5, True, None), (None, None, 7)]
    assert con.execute(
        "SELECT profile_id::VARCHAR FROM profile_traits WHERE ltv > 50"
    ).fetchall() == [(Q1,)]


def test_a_trait_stored_in_another_case_reads_in_its_column_and_the_later_value_wins(
    con: duckdb.DuckDBPyConnection, seed_registry: AttributeRegistry
) -> None:
    _profile(con, Q1)
    _profile(con, Q2)
    _trait_at(con, Q1, "ltv", "1.5", NOW)  # e.g. from a CSV header written `ltv`
    _trait_at(con, Q2, "LTV", "2.5", NOW)
    _trait_at(con, Q2, "ltv", "3.5", NOW + dt.timedelta(seconds=1))
    refresh_typed_traits_view(con, seed_registry)
    rows = con.execute(
        "SELECT profile_id::VARCHAR, LTV FROM profile_traits WHERE profile_id IN (?, ?) ORDER BY 1",
        [Q1, Q2],
    ).fetchall()
    assert rows == [(Q1, 1.5), (Q2, 3.5)]
