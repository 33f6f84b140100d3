"""The rule book, one rule at a time: what every way in (JSON, CSV, Avro) must refuse."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profile_engine import rules
from profile_engine.events import Identifier, Track, datetime_to_us
from profile_engine.rules import (
    FILES_WINDOW,
    MAX_DEPTH,
    MAX_PAYLOAD_BYTES,
    MAX_VALUES,
    ContractError,
    EventTimeWindow,
)

T0 = datetime_to_us(datetime(2026, 1, 1, 10, tzinfo=UTC))
EMAIL = (Identifier("email", "ann@example.com"),)


def broken(check: Any, *args: Any) -> str:
    with pytest.raises(ContractError) as caught:
        check(*args)
    return str(caught.value)


def nested(depth: int) -> dict[str, Any]:
    """A properties object whose innermost object is at level ``depth`` (itself is level 1)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


# --- the event-time window -----------------------------------------------------------------


def test_the_file_window_runs_from_2000_to_2100_inclusive() -> None:
    assert FILES_WINDOW.earliest_us == datetime_to_us(datetime(2000, 1, 1, tzinfo=UTC))
    assert FILES_WINDOW.latest_us == datetime_to_us(datetime(2100, 1, 1, tzinfo=UTC))
    assert FILES_WINDOW.check(FILES_WINDOW.earliest_us) == FILES_WINDOW.earliest_us
    assert FILES_WINDOW.check(FILES_WINDOW.latest_us) == FILES_WINDOW.latest_us
    assert broken(FILES_WINDOW.check, FILES_WINDOW.earliest_us - 1) == (
        "timestamp: 1999-12-31T23:59:59.999999Z is outside the accepted event-time window "
        "2000-01-01T00:00:00Z to 2100-01-01T00:00:00Z"
    )


def test_a_year_9999_event_is_outside_every_default_window() -> None:
    year_9999 = datetime_to_us(datetime(9999, 1, 1, tzinfo=UTC))
    record_ms = T0 // 1000
    for window in (FILES_WINDOW, rules.window_for_record(record_ms), rules.window_at_publish(T0)):
        assert broken(window.check, year_9999).startswith(
            "timestamp: 9999-01-01T00:00:00Z is outside the accepted event-time window"
        )


def test_the_record_window_ends_one_day_after_the_records_own_timestamp() -> None:
    record_ms = T0 // 1000
    window = rules.window_for_record(record_ms)
    one_day = 86_400_000_000
    assert window == EventTimeWindow(rules.EARLIEST_US, T0 + one_day)
    window.check(T0 + one_day)
    with pytest.raises(ContractError):
        window.check(T0 + one_day + 1)
    # The bounds are parameters: a projection can store the ones it was built with.
    custom = rules.window_for_record(record_ms, earliest_us=T0, max_ahead_us=0)
    assert custom == EventTimeWindow(T0, T0)


def test_the_publish_window_is_the_producers_clock_plus_a_day() -> None:
    assert rules.window_at_publish(T0) == EventTimeWindow(rules.EARLIEST_US, T0 + 86_400_000_000)


def test_timestamps_no_datetime_can_hold_are_named_in_microseconds() -> None:
    assert broken(FILES_WINDOW.check, 2**62).startswith(
        f"timestamp: {2**62} microseconds since the epoch is outside"
    )
    assert broken(FILES_WINDOW.check, -(2**63)).startswith(f"timestamp: {-(2**63)} micro")


# --- identifiers ---------------------------------------------------------------------------


def test_identifier_validity_is_computed_from_the_value() -> None:
    assert rules.identifier("email", "NOT AN EMAIL") == Identifier("email", "not an email", False)
    assert rules.identifier("email", " Ann@Example.com ") == Identifier("email", "ann@example.com")
    assert rules.identifier("phone", "+1 415 555 2671") == Identifier("phone", "+14155552671")
    assert rules.identifier("anonymous_id", "guest") is None


@pytest.mark.parametrize("value", [True, 1.5, {"a": 1}, [1], b"x"])
def test_identifiers_are_strings_or_integers(value: object) -> None:
    assert broken(rules.identifier, "customer_id", value) == (
        "identifiers.customer_id: must be a string or an integer"
    )


def test_integer_identifiers_become_text_within_64_bits() -> None:
    assert rules.identifier("customer_id", 42) == Identifier("customer_id", "42")
    assert broken(rules.identifier, "customer_id", 2**63) == (
        "identifiers.customer_id: integer outside the 64-bit signed range"
    )


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("a\x00b", "must not contain NUL characters"),
        ("a\ud800b", "must be valid Unicode (no lone surrogate halves)"),
        ("x" * 1001, "longer than 1000 characters"),
    ],
)
def test_identifier_text_rules(value: str, rule: str) -> None:
    assert broken(rules.identifier, "anonymous_id", value) == f"identifiers.anonymous_id: {rule}"


def test_identifiers_from_pairs_order_by_priority_and_refuse_repeats() -> None:
    pairs = [("anonymous_id", "a1"), ("email", "A@B.com"), ("anonymous_id", "null")]
    assert rules.identifiers_from_pairs(pairs) == (
        Identifier("email", "a@b.com"),
        Identifier("anonymous_id", "a1"),
    )
    repeated = [("phone", "+14155552671"), ("email", "a@b.com"), ("phone", "+14155552672")]
    assert broken(rules.identifiers_from_pairs, repeated) == (
        "identifiers.phone: given more than once"
    )


# --- payload values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("traits", "reason"),
    [
        ({"score": math.nan}, "traits.score: must be a finite number (no NaN or Infinity)"),
        ({"score": math.inf}, "traits.score: must be a finite number (no NaN or Infinity)"),
        ({"n": 2**64}, "traits.n: integer outside the 64-bit signed range"),
        ({"city": "a\x00"}, "traits.city: must not contain NUL characters"),
        ({"city": "\udc80"}, "traits.city: must be valid Unicode (no lone surrogate halves)"),
        ({"city": {"a": 1}}, "traits.city: must be a string, number, boolean or null"),
        ({"a\x00": 1}, "traits: a trait name must not contain NUL characters"),
    ],
)
def test_trait_rules(traits: dict[str, Any], reason: str) -> None:
    assert broken(rules.check_traits, traits) == reason


def test_finite_traits_of_every_scalar_type_pass() -> None:
    traits = {"s": "é", "i": -(2**63), "f": 1e308, "b": False, "n": None}
    assert rules.check_traits(dict(traits)) == traits


@pytest.mark.parametrize(
    ("properties", "reason"),
    [
        ({"price": math.nan}, "properties.price: must be a finite number (no NaN or Infinity)"),
        ({"items": [{"price": -math.inf}]},
         "properties.items.0.price: must be a finite number (no NaN or Infinity)"),
        ({"big": [1, 2**70]}, "properties.big.1: integer outside the 64-bit signed range"),
        ({"note": "\ud800"}, "properties.note: must be valid Unicode (no lone surrogate halves)"),
        # A key that is not plain is quoted as JSON: a NUL shows as an escape, not as itself.
        ({"a": {"b\x00": 1}}, 'properties.a."b\\u0000": key must not contain NUL characters'),
        ({"a b": {"x" * 70: math.nan}}, 'properties."a b".' + f'"{"x" * 64}…"'
         ": must be a finite number (no NaN or Infinity)"),
        ({"a": {1: "x"}}, "properties.a.1: object keys must be strings"),
        ({"when": datetime(2026, 1, 1)},
         "properties.when: must be JSON: an object, array, string, number, boolean or null"),
    ],
)  # fmt: skip
def test_property_rules_name_the_path(properties: dict[str, Any], reason: str) -> None:
    assert broken(rules.check_properties, properties) == reason


def test_properties_nest_at_most_the_depth_limit() -> None:
    rules.check_properties(nested(MAX_DEPTH))
    assert broken(rules.check_properties, nested(MAX_DEPTH + 1)) == (
        f"properties: nested deeper than {MAX_DEPTH} levels"
    )
    assert broken(rules.check_properties, nested(300)).endswith("nested deeper than 32 levels")
    deep_list: list[Any] = []
    for _ in range(40):
        deep_list = [deep_list]
    assert broken(rules.check_properties, {"l": deep_list}).endswith("nested deeper than 32 levels")


def test_properties_hold_at_most_the_value_limit() -> None:
    rules.check_properties({"items": list(range(MAX_VALUES - 1))})  # the list counts as one
    assert broken(rules.check_properties, {"items": list(range(MAX_VALUES))}) == (
        f"properties: more than {MAX_VALUES} values"
    )
    huge = {"items": [0] * 1_000_000}
    assert broken(rules.check_properties, huge) == f"properties: more than {MAX_VALUES} values"


def test_payloads_are_at_most_the_size_limit_as_json() -> None:
    text = "x" * (MAX_PAYLOAD_BYTES - len('{"t":""}'))
    rules.check_properties({"t": text})
    rules.check_traits({"t": text})
    assert (
        broken(rules.check_properties, {"t": text + "x"})
        == "properties: larger than 512 KiB as JSON"
    )
    assert broken(rules.check_traits, {"t": text + "x"}) == "traits: larger than 512 KiB as JSON"
    # Escaped characters count as written: a control character takes six bytes.
    escaped = "\x01" * (MAX_PAYLOAD_BYTES // 6)
    assert broken(rules.check_properties, {"t": escaped}).endswith("larger than 512 KiB as JSON")


# --- purchases -----------------------------------------------------------------------------


@pytest.mark.parametrize("order_id", [None, "", "null", 0, -1, True, 1.5, {"a": 1}, ["o"]])
def test_a_purchase_needs_a_scalar_order_id(order_id: object) -> None:
    assert broken(rules.check_purchase, {"order_id": order_id, "revenue": 1}) == (
        "properties: a purchase needs properties.order_id (string or integer)"
    )


@pytest.mark.parametrize("revenue", [None, "9.99", True, [1], {"amount": 1}])
def test_a_purchase_needs_a_numeric_revenue(revenue: object) -> None:
    assert broken(rules.check_purchase, {"order_id": "o1", "revenue": revenue}) == (
        "properties: a purchase needs a numeric properties.revenue"
    )


@pytest.mark.parametrize("revenue", [1e308, -1e308, 1e12 + 1, 10**13])
def test_revenue_is_bounded_so_sums_cannot_overflow(revenue: float) -> None:
    assert broken(rules.check_purchase, {"order_id": "o1", "revenue": revenue}) == (
        "properties.revenue: a purchase's revenue must lie between -1e12 and 1e12"
    )


def test_purchases_within_the_rules_pass() -> None:
    for order_id, revenue in [("o1", 9.99), (17, 0), ("o2", -5), ("o3", 10**12)]:
        rules.check_purchase({"order_id": order_id, "revenue": revenue})


# --- whole events --------------------------------------------------------------------------


def test_every_builder_applies_the_common_rules() -> None:
    track = rules.track_event("e1", T0, EMAIL, FILES_WINDOW, "viewed", {"a": 1})
    assert track == Track(
        event_id="e1", timestamp_us=T0, identifiers=EMAIL, event="viewed", properties={"a": 1}
    )
    assert broken(rules.ccpa_event, "", T0, EMAIL, FILES_WINDOW, "delete") == (
        "event_id: must not be empty"
    )
    assert broken(rules.ccpa_event, "e\x00", T0, EMAIL, FILES_WINDOW, "delete") == (
        "event_id: must not contain NUL characters"
    )
    assert broken(rules.ccpa_event, "e", T0, (), FILES_WINDOW, "delete") == (
        "identifiers: at least one usable identifier is required"
    )
    assert broken(rules.ccpa_event, "e", 0, EMAIL, FILES_WINDOW, "delete").startswith(
        "timestamp: 1970-01-01T00:00:00Z is outside"
    )
    assert broken(rules.track_event, "e", T0, EMAIL, FILES_WINDOW, "", {}) == (
        "event: must not be empty"
    )
    assert (
        broken(rules.subscription_event, "e", T0, EMAIL, FILES_WINDOW, "", "email", "subscribed")
        == "list_id: must not be empty"
    )
    assert broken(rules.consent_event, "e", T0, EMAIL, FILES_WINDOW, "sms", "opted_in") == (
        "identifiers.phone: a consent event for channel sms must carry a usable phone"
    )


def test_a_purchase_event_applies_the_purchase_rules() -> None:
    assert (
        broken(rules.track_event, "e", T0, EMAIL, FILES_WINDOW, "purchase", {"order_id": "o"})
        == "properties: a purchase needs a numeric properties.revenue"
    )


# --- JSON text -----------------------------------------------------------------------------

_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\x00", '"', "\\"])),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_JSON_VALUES)
def test_json_text_is_read_exactly_as_pythons_json_reads_it(value: Any) -> None:
    text = json.dumps(value)  # NaN and Infinity included, as another producer might write
    expected = json.loads(text)
    loaded = rules.load_json_text(text, "properties")
    assert json.dumps(loaded) == json.dumps(expected)
    assert type(loaded) is type(expected)
    from_bytes = rules.load_json_text(text.encode("utf-8", "surrogatepass"), "properties")
    assert json.dumps(from_bytes) == json.dumps(expected)


@pytest.mark.parametrize(
    "text",
    ['{"a": NaN}', '{"a": 1e400}', '{"a": "\\ud800"}', f'{{"a": {2**64}}}', f'{{"a": -{2**70}}}'],
)
def test_json_that_orjson_reads_otherwise_is_read_as_python_does(text: str) -> None:
    assert repr(rules.load_json_text(text, "properties")) == repr(json.loads(text))


def test_unreadable_json_is_a_contract_error_naming_the_field() -> None:
    assert broken(rules.load_json_text, "{not json", "properties") == (
        "properties: not valid JSON (Expecting property name enclosed in double quotes at column 2)"
    )
    assert broken(rules.load_json_text, "[" * 5000 + "]" * 5000, "event") == (
        "event: nested deeper than 32 levels"
    )


_PROPERTIES = st.dictionaries(st.text(max_size=5), _JSON_VALUES, max_size=5)


@settings(max_examples=400, deadline=None)
@given(_PROPERTIES)
def test_properties_proven_from_their_text_keep_every_rule(properties: dict[str, Any]) -> None:
    text = json.dumps(properties, ensure_ascii=False)
    try:
        value, proven = rules.read_properties(text)
    except ContractError:
        return
    if proven:
        rules.check_properties(value)  # must not raise


def test_big_or_deep_properties_are_never_proven_from_their_text() -> None:
    assert rules.read_properties(json.dumps(nested(MAX_DEPTH + 1)))[1] is False
    assert rules.read_properties(json.dumps({"a": list(range(MAX_VALUES))}))[1] is False
    assert rules.read_properties('{"a": "\\u0000"}')[1] is False
    assert rules.read_properties('{"a": NaN}')[1] is False
    assert rules.read_properties('{"a": 1, "b": [true, null]}') == (
        {"a": 1, "b": [True, None]},
        True,
    )


def test_known_identifiers_take_only_judged_values_in_priority_order() -> None:
    rules.clear_caches()
    records = [{"id_type": "email", "value": "A@b.com", "valid": True},
               {"id_type": "anonymous_id", "value": "guest", "valid": True}]  # fmt: skip
    assert rules.known_identifiers(records) is None  # nothing judged yet
    judged = rules.identifiers_from_pairs([(r["id_type"], r["value"]) for r in records])
    assert judged == (Identifier("email", "a@b.com"),)
    assert rules.known_identifiers(records) == judged
    assert rules.known_identifiers(records[::-1]) is None  # out of order: judged in full
    assert rules.known_identifiers([records[0], records[0]]) is None  # repeated: judged
    assert rules.known_identifiers([{"id_type": "unrecognised", "value": "x"}]) is None
