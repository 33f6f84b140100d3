"""`profile-engine attributes` with the names the seeds use (booleanField, LTV, ...), through
the typed view and `sql`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner, Result

from profile_engine.attributes import AttributeRegistry
from profile_engine.cli.main import cli
from profile_engine.contract import parse_event
from tests.support.folding import fold_into_db

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
SEED_ATTRIBUTES = {
    "booleanField": "boolean",
    "longField": "long",
    "LTV": "double",
    "most_viewed_category": "string",
}


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_seed_attribute_names_register_as_spelled(tmp_path: Path) -> None:
    registry = tmp_path / "attributes.json"
    for name, type_name in SEED_ATTRIBUTES.items():
        result = run("attributes", "add", name, type_name, "--attributes", str(registry))
        assert result.exit_code == 0, result.output
        assert f"registered {name} ({type_name})" in result.output
    again = run("attributes", "add", "ltv", "double", "--attributes", str(registry))
    assert again.exit_code == 0 and "LTV (double) was already registered" in again.output
    listed = json.loads(
        run("attributes", "list", "--attributes", str(registry), "--format", "json").output
    )
    custom = [row["name"] for row in listed if row["kind"] == "custom"]
    assert custom == ["booleanField", "longField", "LTV", "most_viewed_category"]


def test_a_retyped_or_reserved_name_in_another_case_is_refused(tmp_path: Path) -> None:
    registry = tmp_path / "attributes.json"
    assert run("attributes", "add", "LTV", "double", "--attributes", str(registry)).exit_code == 0
    retyped = run("attributes", "add", "ltv", "long", "--attributes", str(registry))
    assert retyped.exit_code == 1
    assert "already registered as double (as 'LTV')" in retyped.output
    reserved = run("attributes", "add", "Customer_Id", "string", "--attributes", str(registry))
    assert reserved.exit_code == 1 and "reserved" in reserved.output


def test_seed_attributes_are_typed_columns_for_sql(tmp_path: Path, db_path: Path) -> None:
    registry_path = tmp_path / "attributes.json"
    registry = AttributeRegistry.load(registry_path)
    for name, type_name in SEED_ATTRIBUTES.items():
        registry.add(name, type_name)
    registry.save()
    raw = {
        "event_id": "e1",
        "timestamp": (T0 + timedelta(minutes=1)).isoformat(),
        "type": "identify",
        "identifiers": {"customer_id": "c1"},
        # any case on the wire; stored under the registered spelling
        "traits": {"ltv": 250.5, "BooleanField": True, "most_viewed_category": "shoes"},
    }
    fold_into_db(db_path, [parse_event(raw, trait_validator=registry.validate_traits)])
    refreshed = run("attributes", "add", "longField", "long", "--attributes", str(registry_path),
                    "--db", str(db_path))  # fmt: skip
    assert refreshed.exit_code == 0, refreshed.output
    result = run("sql", "--db", str(db_path), "--format", "json",
                 "SELECT LTV, booleanField, longfield, most_viewed_category FROM profile_traits"
                 " WHERE ltv > 100 AND booleanfield")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {"LTV": 250.5, "booleanField": True, "longField": None, "most_viewed_category": "shoes"}
    ]
