"""The typed traits view: one row per live profile, one SQL-typed column per attribute.

The fold stores traits long (``traits``: profile_id, name, value as text, value_type), which
needs no DDL when someone registers an attribute. This view pivots them wide with the
registered SQL types, so ``sql`` can compare and aggregate (``WHERE points > 100``,
``avg(ltv)``, ``signup_date >= DATE '2026-01-01'``). TRY_CAST makes a value stored before a
type was registered (or under a different one) read as NULL instead of failing every query.

Attribute names keep the case they were registered with (``LTV``, ``booleanField``) and are
quoted as columns; like SQL identifiers they match case-insensitively, so ``SELECT ltv`` works
and a trait stored as ``ltv`` (a CSV header in another case) reads in the column ``LTV``; when
one profile holds both spellings, the later value wins, as for any trait.

The view is derived from the registry, so it is re-created after every batch write and
rebuild and after ``attributes add``; it is cheap (a view, no data copied).
"""

from __future__ import annotations

import duckdb

from profile_engine.attributes import NAME_PATTERN, AttributeRegistry, name_key

VIEW_NAME = "profile_traits"


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def typed_traits_sql(registry: AttributeRegistry) -> str:
    """The CREATE OR REPLACE VIEW statement for the registry's attributes."""
    columns = ["p.profile_id"]
    for attribute in registry.attributes():
        # Names are validated on registration; checked again since they become SQL.
        if not NAME_PATTERN.match(attribute.name):
            raise ValueError(f"attribute name {attribute.name!r} cannot be a column")
        # Latest first by event time, then event id: the fold's last-writer-wins order.
        value = (
            "arg_max(t.value, (t.updated_at, t.source))"
            f" FILTER (WHERE t.name_key = {quote_literal(name_key(attribute.name))})"
        )
        columns.append(
            f"TRY_CAST({value} AS {attribute.sql_type}) AS {quote_identifier(attribute.name)}"
        )
    select_list = ",\n    ".join(columns)
    return (
        f"CREATE OR REPLACE VIEW {quote_identifier(VIEW_NAME)} AS\n"
        f"SELECT\n    {select_list}\n"
        "FROM profiles AS p\n"
        "LEFT JOIN (SELECT *, lower(name) AS name_key FROM traits) AS t\n"
        "    ON t.profile_id = p.profile_id\n"
        "GROUP BY p.profile_id"
    )


def refresh_typed_traits_view(con: duckdb.DuckDBPyConnection, registry: AttributeRegistry) -> None:
    """Create or replace ``profile_traits`` to match the registry."""
    con.execute(typed_traits_sql(registry))
