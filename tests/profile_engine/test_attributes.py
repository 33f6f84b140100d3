"""The attribute registry: strict type rules for CSV text and JSON traits, and the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profile_engine.attributes import AttributeRegistry, default_registry_path
from profile_engine.contract import ContractError, parse_event
from profile_engine.events import Identify

CUSTOM = {
    "vip": "boolean",
    "points": "long",
    "ltv": "double",
    "signup_date": "date",
    "last_login": "datetime",
    "last_seen_epoch": "epoch",
    "favourite_colour": "string",
}


@pytest.fixture
def registry(tmp_path: Path) -> AttributeRegistry:
    reg = AttributeRegistry.load(tmp_path / "attrs.json")
    for name, type_name in CUSTOM.items():
        reg.add(name, type_name)
    return reg


# (attribute, text, expected value) -- from the seed's datatype tables and a few more
VALID_TEXT = [
    ("vip", "false", False),
    ("vip", "True", True),
    ("vip", "TRUE", True),
    ("points", "1", 1),
    ("points", "-2", -2),
    ("points", "9223372036854775807", 9223372036854775807),
    ("points", "-9223372036854775807", -9223372036854775807),
    ("points", "-9223372036854775808", -9223372036854775808),
    ("ltv", "1", 1.0),
    ("ltv", "-2.3", -2.3),
    ("ltv", "1e3", 1000.0),
    ("ltv", ".5", 0.5),
    ("signup_date", "2022-05-02", "2022-05-02"),
    ("signup_date", "1999-01-02", "1999-01-02"),
    ("signup_date", "2024-02-29", "2024-02-29"),
    ("last_login", "2022-05-02T10:10:59Z", "2022-05-02T10:10:59Z"),
    ("last_login", "1999-01-01T00:00:00", "1999-01-01T00:00:00Z"),
    ("last_login", "2022-05-02T23:59:59Z", "2022-05-02T23:59:59Z"),
    ("last_seen_epoch", "0", 0),
    ("last_seen_epoch", "1651676123", 1651676123),
    ("favourite_colour", "Height: 6'1\"", "Height: 6'1\""),
    ("favourite_colour", " spaced ", " spaced "),
    ("birthday_day", "1", 1),
    ("birthday_day", "31", 31),
    ("birthday_month", "12", 12),
]

# (attribute, text, a fragment of the rule in the error)
INVALID_TEXT = [
    ("vip", "0", "true or false"),
    ("vip", "1", "true or false"),
    ("vip", "y", "true or false"),
    ("vip", "n", "true or false"),
    ("vip", "yes", "true or false"),
    ("points", "foo", "integer"),
    ("points", "9223372036854775808", "64-bit"),
    ("points", "9223372036854775810", "64-bit"),
    ("points", "-9223372036854775809", "64-bit"),
    ("points", "1.5", "integer"),
    ("points", "1e3", "integer"),
    ("ltv", "foo", "dot decimal"),
    ("ltv", "2,3", "dot decimal"),
    ("ltv", "nan", "dot decimal"),
    ("ltv", "inf", "dot decimal"),
    ("ltv", "Infinity", "dot decimal"),
    ("ltv", "1e999", "out of range"),
    ("ltv", "0x10", "dot decimal"),
    ("signup_date", "2022-13-01", "real calendar date"),
    ("signup_date", "2022-02-30", "real calendar date"),
    ("signup_date", "2023-02-29", "real calendar date"),
    ("signup_date", "2022/05/02", "YYYY-MM-DD"),
    ("signup_date", "2022-5-2", "YYYY-MM-DD"),
    ("signup_date", "02-05-2022", "YYYY-MM-DD"),
    ("signup_date", "2022-05-02T10:10:59Z", "YYYY-MM-DD"),
    ("last_login", "2022-05-02", "YYYY-MM-DDTHH:MM:SS"),
    ("last_login", "2022/05/02T10:10:59Z", "YYYY-MM-DDTHH:MM:SS"),
    ("last_login", "2022-05-02 10:10:59", "YYYY-MM-DDTHH:MM:SS"),
    ("last_login", "2022-05-02t10:10:59z", "YYYY-MM-DDTHH:MM:SS"),
    ("last_login", "2022-05-02T10:10:59z", "YYYY-MM-DDTHH:MM:SS"),
    ("last_login", "2022-05-02T10:10:59+02:00", "YYYY-MM-DDTHH:MM:SS"),
    ("last_login", "2022-05-02T10:10:59.123Z", "YYYY-MM-DDTHH:MM:SS"),
    ("last_login", "2022-05-02T55:10:59Z", "real date and time"),
    ("last_login", "2022-05-02T10:60:00Z", "real date and time"),
    ("last_login", "2022-02-30T10:10:59Z", "real date and time"),
    ("last_seen_epoch", "2022-05-02", "non-negative integer"),
    ("last_seen_epoch", "2022-05-02T10:10:59Z", "non-negative integer"),
    ("last_seen_epoch", "-1651676123", "non-negative integer"),
    ("last_seen_epoch", "1.5", "non-negative integer"),
    ("birthday_day", "0", "between 1 and 31"),
    ("birthday_day", "32", "between 1 and 31"),
    ("birthday_month", "13", "between 1 and 12"),
    ("birthday_month", "March", "integer"),
]


@pytest.mark.parametrize(("name", "text", "expected"), VALID_TEXT)
def test_valid_text_parses_to_its_typed_value(
    registry: AttributeRegistry, name: str, text: str, expected: object
) -> None:
    value = registry.validate_text(name, text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(("name", "text", "rule"), INVALID_TEXT)
def test_invalid_text_is_refused_with_its_rule(
    registry: AttributeRegistry, name: str, text: str, rule: str
) -> None:
    with pytest.raises(ValueError, match=rule):
        registry.validate_text(name, text)


def test_unregistered_text_attribute_is_refused(registry: AttributeRegistry) -> None:
    with pytest.raises(ValueError, match="not a registered attribute"):
        registry.validate_text("shoe_size", "42")


# -- JSON traits ------------------------------------------------------------------------------

VALID_JSON = [
    ({"vip": True}, {"vip": True}),
    ({"points": 9223372036854775807}, {"points": 9223372036854775807}),
    ({"ltv": 3}, {"ltv": 3.0}),
    ({"ltv": -2.5}, {"ltv": -2.5}),
    ({"signup_date": "2024-02-29"}, {"signup_date": "2024-02-29"}),
    ({"last_login": "2022-05-02T10:10:59"}, {"last_login": "2022-05-02T10:10:59Z"}),
    ({"last_seen_epoch": 0}, {"last_seen_epoch": 0}),
    ({"first_name": "Ada", "birthday_month": 12}, {"first_name": "Ada", "birthday_month": 12}),
    ({"points": None, "vip": None}, {"points": None, "vip": None}),
]

INVALID_JSON = [
    ({"shoe_size": 42}, "traits.shoe_size: not a registered attribute"),
    ({"vip": "true"}, "traits.vip: boolean must be JSON true or false"),
    ({"vip": 1}, "traits.vip: boolean must be JSON true or false"),
    ({"points": True}, "traits.points: long must be a JSON integer, got boolean"),
    ({"points": 1.5}, "traits.points: long must be a JSON integer"),
    ({"points": "7"}, "traits.points: long must be a JSON integer, got string"),
    ({"points": 2**63}, "traits.points: long out of the 64-bit"),
    ({"ltv": False}, "traits.ltv: double must be a JSON number, got boolean"),
    ({"ltv": float("nan")}, "traits.ltv: double must be finite"),
    ({"ltv": "2.5"}, "traits.ltv: double must be a JSON number"),
    ({"signup_date": "2022-02-30"}, "traits.signup_date: date is not a real calendar date"),
    ({"signup_date": 20220202}, "traits.signup_date: must be a JSON string"),
    ({"last_login": "2022-05-02t10:10:59z"}, "traits.last_login: datetime must be"),
    ({"last_seen_epoch": -1}, "traits.last_seen_epoch: epoch must be non-negative"),
    ({"last_seen_epoch": 1.0}, "traits.last_seen_epoch: epoch must be a JSON integer"),
    ({"favourite_colour": 3}, "traits.favourite_colour: must be a JSON string"),
    ({"birthday_day": 32}, "traits.birthday_day: must be between 1 and 31"),
    ({"birthday_month": 0}, "traits.birthday_month: must be between 1 and 12"),
]


@pytest.mark.parametrize(("traits", "expected"), VALID_JSON)
def test_valid_json_traits_come_back_canonical(
    registry: AttributeRegistry, traits: dict, expected: dict
) -> None:
    result = registry.validate_traits(traits)
    assert result == expected
    assert [type(v) for v in result.values()] == [type(v) for v in expected.values()]


@pytest.mark.parametrize(("traits", "message"), INVALID_JSON)
def test_invalid_json_traits_raise_contract_error(
    registry: AttributeRegistry, traits: dict, message: str
) -> None:
    with pytest.raises(ContractError) as caught:
        registry.validate_traits(traits)
    assert str(caught.value).startswith(message)


def test_registry_plugs_into_parse_event_as_the_trait_validator(
    registry: AttributeRegistry,
) -> None:
    raw = {
        "type": "identify",
        "timestamp": "2026-01-01T00:00:00Z",
        "identifiers": {"email": "a@example.com"},
        "traits": {"ltv": 2, "last_login": "2026-01-01T00:00:00"},
    }
    event = parse_event(raw, trait_validator=registry.validate_traits)
    assert isinstance(event, Identify)
    assert event.traits == {"ltv": 2.0, "last_login": "2026-01-01T00:00:00Z"}
    with pytest.raises(ContractError, match=r"^traits\.colour: not a registered"):
        parse_event({**raw, "traits": {"colour": "red"}}, trait_validator=registry.validate_traits)


# -- the registry file --------------------------------------------------------------------------


def test_standard_attributes_are_always_present(tmp_path: Path) -> None:
    reg = AttributeRegistry.load(tmp_path / "missing.json")
    for name in ("first_name", "last_name", "gender", "city", "country", "time_zone"):
        attribute = reg.get(name)
        assert attribute is not None and attribute.type == "string"
        assert attribute.kind == "standard"
    birthday_day = reg.get("birthday_day")
    assert birthday_day is not None and birthday_day.rule() == "long 1-31"
    assert reg.get("vip") is None


def test_add_and_save_round_trip_through_a_versioned_file(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "attrs.json"
    reg = AttributeRegistry.load(path)
    reg.add("vip", "boolean")
    reg.add("points", "long")
    reg.save()
    document = json.loads(path.read_text())
    assert document == {
        "version": 2,
        "attributes": {"points": {"type": "long"}, "vip": {"type": "boolean"}},
    }
    again = AttributeRegistry.load(path)
    assert again.version == 2
    vip = again.get("vip")
    assert vip is not None and (vip.type, vip.kind) == ("boolean", "custom")
    assert again.names()[-2:] == ["points", "vip"]
    assert again.names()[0] == "first_name"


def test_re_adding_the_same_type_is_a_no_op(registry: AttributeRegistry) -> None:
    version = registry.version
    registry.add("vip", "boolean")
    assert registry.version == version


@pytest.mark.parametrize(
    ("name", "type_name", "rule"),
    [
        ("vip", "long", "already registered as boolean"),
        ("first_name", "string", "standard attribute"),
        ("email", "string", "reserved"),
        ("customer_id", "string", "reserved"),
        ("profile_id", "string", "reserved"),
        ("Profile_ID", "string", "reserved"),
        ("EMAIL", "string", "reserved"),
        ("First_Name", "string", "standard attribute"),
        ("VIP", "long", "already registered as boolean \\(as 'vip'\\)"),
        ("1shoe", "long", "must match"),
        ("_shoe", "long", "must match"),
        ("shoe-size", "long", "must match"),
        ("schuhgröße", "long", "must match"),
        ("\u212aelvin", "long", "must match"),  # the Kelvin sign, which lower-cases to k
        ("shoe size", "long", "must match"),
        ('shoe"; drop table x; --', "long", "must match"),
        ("a" * 65, "long", "must match"),
        ("shoe\n", "long", "must match"),
        ("shoe", "integer", "unknown attribute type"),
    ],
)
def test_add_refuses_bad_names_types_and_redefinitions(
    registry: AttributeRegistry, name: str, type_name: str, rule: str
) -> None:
    with pytest.raises(ValueError, match=rule):
        registry.add(name, type_name)


def test_a_corrupt_registry_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "attrs.json"
    path.write_text('{"version": 1, "attributes": {"x": {"type": "banana"}}}')
    with pytest.raises(ValueError, match="not a valid attribute registry"):
        AttributeRegistry.load(path)


def test_default_location_honours_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROFILE_ENGINE_ATTRIBUTES", raising=False)
    assert default_registry_path() == Path("profile-attributes.json")
    monkeypatch.setenv("PROFILE_ENGINE_ATTRIBUTES", str(tmp_path / "a.json"))
    assert AttributeRegistry.load().path == tmp_path / "a.json"


# -- names as the seeds spell them -------------------------------------------------------------

SEED_ATTRIBUTES = {
    "booleanField": "boolean",
    "longField": "long",
    "LTV": "double",
    "most_viewed_category": "string",
}


def test_names_keep_their_case_and_round_trip_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "attrs.json"
    reg = AttributeRegistry.load(path)
    for name, type_name in SEED_ATTRIBUTES.items():
        assert reg.add(name, type_name).name == name
    reg.save()
    assert json.loads(path.read_text())["attributes"] == {
        "booleanField": {"type": "boolean"},
        "longField": {"type": "long"},
        "LTV": {"type": "double"},
        "most_viewed_category": {"type": "string"},
    }
    again = AttributeRegistry.load(path)
    assert again.names()[-4:] == ["booleanField", "longField", "LTV", "most_viewed_category"]


def test_names_match_case_insensitively(tmp_path: Path) -> None:
    reg = AttributeRegistry.load(tmp_path / "attrs.json")
    for name, type_name in SEED_ATTRIBUTES.items():
        reg.add(name, type_name)
    for spelled in ("ltv", "Ltv", "LTV"):
        attribute = reg.get(spelled)
        assert attribute is not None and attribute.name == "LTV"
        assert spelled in reg
    version = reg.version
    assert reg.add("ltv", "double").name == "LTV"  # the same attribute: a no-op
    assert reg.version == version
    assert reg.validate_text("BOOLEANFIELD", "TRUE") is True
    assert reg.get("\u212atv") is None  # a non-ASCII look-alike is another name


def test_traits_carry_the_registered_spelling(tmp_path: Path) -> None:
    reg = AttributeRegistry.load(tmp_path / "attrs.json")
    for name, type_name in SEED_ATTRIBUTES.items():
        reg.add(name, type_name)
    traits = reg.validate_traits({"ltv": 12, "booleanfield": False, "First_Name": "Ann"})
    assert traits == {"LTV": 12.0, "booleanField": False, "first_name": "Ann"}
    same = r"^traits\.ltv: names the same attribute as traits\.LTV"
    with pytest.raises(ContractError, match=same):
        reg.validate_traits({"LTV": 1.0, "ltv": 2.0})


def test_a_registry_file_naming_one_attribute_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "attrs.json"
    path.write_text(
        '{"version": 2, "attributes": {"LTV": {"type": "double"}, "ltv": {"type": "double"}}}'
    )
    with pytest.raises(ValueError, match="name the same attribute"):
        AttributeRegistry.load(path)
    path.write_text('{"version": 1, "attributes": {"City": {"type": "string"}}}')
    with pytest.raises(ValueError, match="redefines a standard attribute"):
        AttributeRegistry.load(path)
