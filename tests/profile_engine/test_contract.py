"""The event contract at the edge: every rule of issue 2, with messages naming the field."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from profile_engine.contract import ContractError, event_to_json, parse_event, validate_event
from profile_engine.events import (
    Bounce,
    Ccpa,
    Consent,
    Identifier,
    Identify,
    Subscription,
    Track,
)

TS = "2026-01-01T10:00:00Z"
TS_US = 1_767_261_600_000_000
EMAIL = {"email": "ann@example.com"}


def event(type_: str, identifiers: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "timestamp": TS,
        "identifiers": EMAIL if identifiers is None else identifiers,
        **fields,
    }


def rejection(raw: Any, **kwargs: Any) -> str:
    with pytest.raises(ContractError) as caught:
        parse_event(raw, **kwargs)
    return str(caught.value)


# --- common fields -------------------------------------------------------------------------


def test_each_type_becomes_its_domain_event() -> None:
    cases = [
        (event("identify", traits={"first_name": "Ann"}), Identify),
        (event("track", event="page_view", properties={"path": "/"}), Track),
        (event("consent", channel="email", status="opted_in"), Consent),
        (event("bounce", channel="email", bounce_type="hard"), Bounce),
        (event("subscription", list_id="news", channel="email", status="subscribed"), Subscription),
        (event("ccpa", request="delete"), Ccpa),
    ]
    for raw, cls in cases:
        parsed = parse_event(raw)
        assert type(parsed) is cls
        assert parsed.timestamp_us == TS_US
        assert parsed.identifiers == (Identifier("email", "ann@example.com"),)


def test_event_id_is_kept_or_generated() -> None:
    assert parse_event({**event("ccpa", request="delete"), "event_id": "e-1"}).event_id == "e-1"
    generated = parse_event(event("ccpa", request="delete")).event_id
    assert str(uuid.UUID(generated)) == generated
    assert parse_event(event("ccpa", request="delete")).event_id != generated


def test_naive_timestamp_is_an_error() -> None:
    raw = {**event("ccpa", request="delete"), "timestamp": "2026-01-01T10:00:00"}
    assert rejection(raw) == (
        "timestamp: timestamp must carry a UTC offset (e.g. 2026-01-01T10:00:00Z)"
    )


def test_timestamp_offset_is_converted_to_utc_microseconds() -> None:
    raw = {**event("ccpa", request="delete"), "timestamp": "2026-01-01T12:00:00.000001+02:00"}
    assert parse_event(raw).timestamp_us == TS_US + 1


@pytest.mark.parametrize("timestamp", ["yesterday", "", None, 12.5e99])
def test_unparseable_or_missing_timestamp_names_the_field(timestamp: Any) -> None:
    assert rejection({**event("ccpa", request="delete"), "timestamp": timestamp}).startswith(
        "timestamp: "
    )


def test_missing_identifiers_is_an_error() -> None:
    raw = event("ccpa", request="delete")
    del raw["identifiers"]
    assert rejection(raw) == "identifiers: Field required"


@pytest.mark.parametrize("identifiers", [{}, {"email": "null"}, {"anonymous_id": " Guest "}])
def test_no_usable_identifier_is_an_error(identifiers: dict[str, Any]) -> None:
    assert rejection(event("ccpa", identifiers, request="delete")) == (
        "identifiers: at least one usable identifier is required"
    )


def test_junk_identifiers_are_dropped_and_the_rest_kept() -> None:
    raw = event(
        "ccpa", {"email": "undefined", "customer_id": "C7", "phone": "-1"}, request="opt_in"
    )
    assert parse_event(raw).identifiers == (Identifier("customer_id", "C7"),)


def test_identifiers_are_normalised() -> None:
    raw = event("ccpa", {"email": " Ann@Example.COM", "phone": "(415) 555-2671"}, request="opt_in")
    assert parse_event(raw).identifiers == (
        Identifier("email", "ann@example.com"),
        Identifier("phone", "+14155552671"),
    )


def test_phone_region_is_passed_through() -> None:
    raw = event("ccpa", {"phone": "020 7946 0018"}, request="opt_in")
    assert parse_event(raw, phone_region="GB").identifiers == (
        Identifier("phone", "+442079460018"),
    )


def test_invalid_identifiers_are_kept_but_marked() -> None:
    raw = event("ccpa", {"email": "ann@@example", "phone": "12"}, request="opt_in")
    assert parse_event(raw).identifiers == (
        Identifier("email", "ann@@example", False),
        Identifier("phone", "12", False),
    )


def test_numeric_customer_id_becomes_text() -> None:
    raw = event("ccpa", {"customer_id": 1234}, request="opt_in")
    assert parse_event(raw).identifiers == (Identifier("customer_id", "1234"),)


def test_unknown_identifier_type_is_an_error() -> None:
    assert rejection(event("ccpa", {"fax": "1"}, request="opt_in")) == (
        "identifiers.fax: Extra inputs are not permitted"
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not an object", "event: must be a JSON object"),
        ([1, 2], "event: must be a JSON object"),
        ({"timestamp": TS, "identifiers": EMAIL}, "type: field required"),
        (
            event("page"),
            "type: type must be one of identify, track, consent, bounce, subscription, ccpa",
        ),
        ({**event("ccpa", request="delete"), "colour": "red"}, "colour: Extra inputs are not "
         "permitted"),
    ],
)  # fmt: skip
def test_envelope_errors_name_the_field(raw: Any, message: str) -> None:
    assert rejection(raw) == message


# --- per-type rules ------------------------------------------------------------------------


def test_identify_traits_are_scalars_and_null_unsets() -> None:
    raw = event("identify", traits={"a": "x", "b": 1, "c": 1.5, "d": True, "e": None})
    parsed = parse_event(raw)
    assert isinstance(parsed, Identify)
    assert parsed.traits == {"a": "x", "b": 1, "c": 1.5, "d": True, "e": None}
    assert [type(v) for v in parsed.traits.values()] == [str, int, float, bool, type(None)]


@pytest.mark.parametrize("value", [{"nested": 1}, [1, 2]])
def test_identify_trait_must_be_a_scalar(value: Any) -> None:
    assert rejection(event("identify", traits={"shoe": value})).startswith("traits.shoe")


def test_trait_validator_checks_identify_traits_only() -> None:
    def strict(traits: dict[str, Any]) -> dict[str, Any]:
        if "bad" in traits:
            raise ContractError("traits.bad: not a registered attribute")
        return {name: str(value) for name, value in traits.items()}

    assert rejection(event("identify", traits={"bad": 1}), trait_validator=strict) == (
        "traits.bad: not a registered attribute"
    )
    parsed = parse_event(event("identify", traits={"age": 4}), trait_validator=strict)
    assert isinstance(parsed, Identify)
    assert parsed.traits == {"age": "4"}  # the validator's typed result is what is kept
    assert parse_event(event("ccpa", request="delete"), trait_validator=strict).type == "ccpa"


def test_track_needs_an_event_name() -> None:
    assert rejection(event("track", properties={})).startswith("event: ")
    assert rejection(event("track", event="")).startswith("event: ")


def test_track_properties_may_nest() -> None:
    properties = {"items": [{"sku": "S1", "tags": ["a"]}], "meta": {"k": None}}
    parsed = parse_event(event("track", event="view", properties=properties))
    assert isinstance(parsed, Track)
    assert parsed.properties == properties


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ({"revenue": 10}, "properties: a purchase needs properties.order_id (string or number)"),
        ({"order_id": "null", "revenue": 10},
         "properties: a purchase needs properties.order_id (string or number)"),
        ({"order_id": "o1"}, "properties: a purchase needs a numeric properties.revenue"),
        ({"order_id": "o1", "revenue": "10"},
         "properties: a purchase needs a numeric properties.revenue"),
        ({"order_id": "o1", "revenue": True},
         "properties: a purchase needs a numeric properties.revenue"),
    ],
)  # fmt: skip
def test_purchase_needs_order_id_and_numeric_revenue(
    properties: dict[str, Any], message: str
) -> None:
    assert rejection(event("track", event="purchase", properties=properties)) == message


def test_valid_purchase_is_accepted() -> None:
    properties = {"order_id": 17, "revenue": 9.99}
    parsed = parse_event(event("track", event="purchase", properties=properties))
    assert isinstance(parsed, Track)
    assert parsed.properties == properties


@pytest.mark.parametrize(
    ("channel", "identifiers", "needed"),
    [
        ("email", {"phone": "4155552671"}, "email"),
        ("sms", EMAIL, "phone"),
        ("push", EMAIL, "push_token"),
    ],
)
@pytest.mark.parametrize(
    ("type_", "fields"),
    [("consent", {"status": "opted_out"}), ("bounce", {"bounce_type": "soft"})],
)
def test_consent_and_bounce_need_the_channels_identifier(
    type_: str, fields: dict[str, str], channel: str, identifiers: dict[str, str], needed: str
) -> None:
    raw = event(type_, identifiers, channel=channel, **fields)
    assert rejection(raw) == (
        f"identifiers.{needed}: a {type_} event for channel {channel} must carry a usable {needed}"
    )


def test_channel_identifier_marked_invalid_still_counts() -> None:
    parsed = parse_event(
        event("bounce", {"email": "broken@@x"}, channel="email", bounce_type="hard")
    )
    assert parsed.identifiers == (Identifier("email", "broken@@x", False),)


def test_consent_statuses() -> None:
    for status in ("opted_in", "opted_out", "pending", "unknown"):
        parsed = parse_event(event("consent", channel="email", status=status))
        assert isinstance(parsed, Consent) and parsed.status == status
    assert rejection(event("consent", channel="email", status="maybe")).startswith("status: ")
    assert rejection(event("consent", channel="fax", status="opted_in")).startswith("channel: ")
    assert rejection(event("consent", status="opted_in")) == "channel: Field required"


def test_bounce_types() -> None:
    for bounce_type in ("hard", "soft", "complaint"):
        parsed = parse_event(event("bounce", channel="email", bounce_type=bounce_type))
        assert isinstance(parsed, Bounce) and parsed.bounce_type == bounce_type
    assert rejection(event("bounce", channel="email", bounce_type="x")).startswith("bounce_type: ")


def test_subscription_fields() -> None:
    for status in ("subscribed", "unsubscribed", "unconfirmed", "suspended"):
        raw = event("subscription", list_id="news", channel="sms", status=status)
        parsed = parse_event(raw)
        assert isinstance(parsed, Subscription) and parsed.status == status
    raw = event("subscription", list_id="", channel="email", status="subscribed")
    assert rejection(raw).startswith("list_id: ")
    raw = event("subscription", channel="email", status="subscribed")
    assert rejection(raw) == "list_id: Field required"
    raw = event("subscription", list_id="n", channel="email", status="gone")
    assert rejection(raw).startswith("status: ")


def test_ccpa_requests() -> None:
    for request in ("opt_out", "opt_in", "delete"):
        parsed = parse_event(event("ccpa", request=request))
        assert isinstance(parsed, Ccpa) and parsed.request == request
    assert rejection(event("ccpa", request="forget")).startswith("request: ")


def test_several_errors_are_all_named() -> None:
    message = rejection(event("consent", channel="fax", status="maybe"))
    assert "channel: " in message and "status: " in message


def test_event_to_json_is_the_inverse_of_parse_event() -> None:
    raws = [
        event("identify", traits={"first_name": "Ann", "vip": None}),
        event("track", event="purchase", properties={"order_id": "o", "revenue": 1}),
        event("subscription", list_id="news", channel="email", status="suspended"),
    ]
    for raw in raws:
        parsed = parse_event(raw)
        assert parse_event(event_to_json(parsed)) == parsed


def test_validate_event_keeps_raw_identifiers() -> None:
    model = validate_event(event("ccpa", {"email": " A@B.COM "}, request="delete"))
    assert model.identifiers.email == " A@B.COM "
