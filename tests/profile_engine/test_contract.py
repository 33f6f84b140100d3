"""The event contract at the edge: every rule of issue 2, with messages naming the field."""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from profile_engine import contract, rules
from profile_engine.contract import (
    ContractError,
    _fast_timestamp_us,
    event_to_json,
    parse_event,
    parse_event_line,
    validate_event,
)
from profile_engine.events import (
    Bounce,
    Ccpa,
    Consent,
    Identifier,
    Identify,
    ProfileEvent,
    Subscription,
    Track,
    datetime_to_us,
)
from profile_engine.rules import EventTimeWindow
from profile_engine.synthetic import generate_events

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


@pytest.mark.parametrize(
    ("timestamp", "given"),
    [(1700000000, "a number"), ("1700000000", "a number"), (1.7e9, "a number"),
     ("1.7e12", "a number"), (True, "a boolean"), (None, "null"), ([2026], "a JSON array")],
)  # fmt: skip
def test_a_timestamp_that_is_not_iso_text_is_refused_not_read_as_epoch(
    timestamp: Any, given: str
) -> None:
    """The parser underneath reads numbers as seconds or milliseconds since the epoch,
    guessing which; the contract is ISO-8601 text with an offset."""
    assert rejection({**event("ccpa", request="delete"), "timestamp": timestamp}) == (
        "timestamp: timestamp must be ISO-8601 text with a UTC offset (e.g. "
        f"2026-01-01T10:00:00Z), not {given}"
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
        ({"revenue": 10}, "properties: a purchase needs properties.order_id (string or integer)"),
        ({"order_id": "null", "revenue": 10},
         "properties: a purchase needs properties.order_id (string or integer)"),
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


# --- the rule book on the JSON path ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (event("identify", traits={"score": math.nan}),
         "traits.score: must be a finite number (no NaN or Infinity)"),
        (event("track", event="purchase", properties={"order_id": "o", "revenue": 1e308}),
         "properties.revenue: a purchase's revenue must lie between -1e12 and 1e12"),
        (event("track", event="purchase", properties={"order_id": {"a": 1}, "revenue": 1}),
         "properties: a purchase needs properties.order_id (string or integer)"),
        (event("track", event="purchase", properties={"order_id": "o", "revenue": "lots"}),
         "properties: a purchase needs a numeric properties.revenue"),
        ({**event("ccpa", request="delete"), "timestamp": "9999-01-01T00:00:00Z"},
         "timestamp: 9999-01-01T00:00:00Z is outside the accepted event-time window "
         "2000-01-01T00:00:00Z to 2100-01-01T00:00:00Z"),
        (event("track", event="view", properties={"a": [1, math.inf]}),
         "properties.a.1: must be a finite number (no NaN or Infinity)"),
        (event("track", event="view", properties={"n": 2**64}),
         "properties.n: integer outside the 64-bit signed range"),
        (event("track", event="view", properties={"s": "\ud83d"}),
         "properties.s: must be valid Unicode (no lone surrogate halves)"),
        (event("track", event="view", properties={"s": "a\x00b"}),
         "properties.s: must not contain NUL characters"),
        (event("track", event="view", properties={"items": list(range(20_000))}),
         "properties: more than 10000 values"),
        (event("ccpa", {"email": True}, request="delete"),
         "identifiers.email: must be a string or an integer"),
        (event("ccpa", {"customer_id": 12.0}, request="delete"),
         "identifiers.customer_id: must be a string or an integer"),
    ],
)  # fmt: skip
def test_the_rule_book_refuses_with_the_field_and_the_rule(
    raw: dict[str, Any], reason: str
) -> None:
    assert rejection(raw) == reason


def test_deep_nesting_is_refused_not_crashed() -> None:
    deep: dict[str, Any] = {}
    for _ in range(300):
        deep = {"a": deep}
    assert rejection(event("track", event="view", properties=deep)) == (
        "properties: nested deeper than 32 levels"
    )

    def line(depth: int) -> str:
        properties = '{"a":' * depth + "1" + "}" * depth
        return json.dumps(event("track", event="view")).replace(
            '"event": "view"', '"event": "view", "properties": ' + properties
        )

    with pytest.raises(ContractError, match=r"^properties: nested deeper than 32 levels$"):
        parse_event_line(line(1000))
    # Too deep for any JSON reader to finish: refused as a line, still without a crash.
    with pytest.raises(ContractError, match=r"^event: nested deeper than 32 levels$"):
        parse_event_line(line(100_000))


def test_a_line_is_read_as_json_then_judged_by_the_rules() -> None:
    line = json.dumps(event("identify", traits={"score": 1.0})).replace("1.0", "NaN")
    with pytest.raises(ContractError, match=r"^traits\.score: must be a finite number"):
        parse_event_line(line.encode())
    with pytest.raises(ContractError) as caught:
        parse_event_line("{not json")
    assert str(caught.value) == (
        "event: not valid JSON (Expecting property name enclosed in double quotes at column 2)"
    )
    good = event("ccpa", request="delete") | {"event_id": "e-1"}
    assert parse_event_line(json.dumps(good)) == parse_event(good)


def test_the_window_is_a_parameter() -> None:
    raw = event("ccpa", request="delete")
    assert parse_event(raw, window=EventTimeWindow(TS_US, TS_US)).timestamp_us == TS_US
    with pytest.raises(ContractError, match=r"^timestamp: .* is outside"):
        parse_event(raw, window=EventTimeWindow(TS_US + 1, TS_US + 2))


# --- the fast shape check agrees with pydantic ------------------------------------------------

_TIMESTAMPS = st.one_of(
    st.sampled_from(
        [
            "2026-01-01T10:00:00Z",
            "2026-01-01T10:00:00.123Z",
            "2026-01-01T10:00:00.5+02:00",
            "2026-01-01T10:00:00.123456-05:30",
            "2026-02-29T10:00:00Z",
            "2028-02-29T10:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T10:00:60Z",
            "2026-01-01T10:00:00",
            "2026-01-01 10:00:00Z",
            "2026-01-01T10:00:00,5Z",
            "2026-01-01T10:00:00.Z",
            "2026-01-01T10:00:00+24:00",
            "2026-01-01T10:00:00+0200",
            "2026-01-01T10:00Z",
            "2026-01-01t10:00:00z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999-01:00",
            "2026-01-01T10:00:00.1234567Z",
            "yesterday",
            "",
            "2026-W01-1T10:00:00Z",
        ]
    ),
    st.builds(
        "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}{}{}".format,
        st.integers(0, 10_000),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 25),
        st.integers(0, 61),
        st.integers(0, 61),
        st.sampled_from(["", ".1", ".12", ".123", ".1234567", ".", ",5"]),
        st.sampled_from(["Z", "z", "+00:00", "-23:59", "+24:00", "+05:3", "", "+0530"]),
    ),
    st.integers(-(10**12), 10**12),
    st.none(),
)


@settings(max_examples=600, deadline=None)
@given(_TIMESTAMPS)
def test_the_fast_timestamp_reading_agrees_with_pydantic(text: Any) -> None:
    fast = _fast_timestamp_us(text) if isinstance(text, str) else None
    try:
        moment = TypeAdapter(datetime).validate_python(text)
    except PydanticValidationError:
        assert fast is None, text
        return
    if fast is not None:
        assert moment.tzinfo is not None
        assert fast == datetime_to_us(moment), text


_ID_VALUES = st.one_of(
    st.sampled_from(["ann@example.com", "B@X.org", "+1 415 555 2671", "a-1", "null", ""]),
    st.none(), st.integers(-3, 2**64), st.booleans(), st.floats(allow_nan=False),
    st.just({"a": 1}), st.text(max_size=6),
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**65), 2**65), st.floats(), st.text(max_size=4)
)
_ANY = st.recursive(_SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(
    st.text(max_size=3), c, max_size=3), max_leaves=8)  # fmt: skip
_FIELD_VALUES: dict[str, Any] = {
    "traits": st.dictionaries(st.text(max_size=4), _ANY, max_size=3) | _ANY,
    "event": st.sampled_from(["view", "purchase", ""]) | _SCALARS,
    "properties": st.one_of(
        st.fixed_dictionaries(
            {"order_id": _SCALARS | st.just("o-1"), "revenue": _SCALARS | st.just(9.5)}
        ),
        st.dictionaries(st.text(max_size=4), _ANY, max_size=3),
        _ANY,
    ),
    "channel": st.sampled_from(["email", "sms", "push", "fax"]) | _SCALARS,
    "status": st.sampled_from(["opted_in", "pending", "subscribed", "x"]) | _SCALARS,
    "bounce_type": st.sampled_from(["hard", "soft", "complaint", "x"]) | _SCALARS,
    "list_id": st.sampled_from(["news", ""]) | _SCALARS,
    "request": st.sampled_from(["opt_out", "opt_in", "delete", "x"]) | _SCALARS,
    "colour": _SCALARS,
}
_TYPE_FIELDS = {
    "identify": ["traits"],
    "track": ["event", "properties"],
    "consent": ["channel", "status"],
    "bounce": ["channel", "bounce_type"],
    "subscription": ["list_id", "channel", "status"],
    "ccpa": ["request"],
}


_VALID_FIELDS: dict[str, Any] = {
    "traits": st.dictionaries(
        st.sampled_from(["first_name", "vip", "score", "city"]), _SCALARS, max_size=3
    ),
    "event": st.sampled_from(["view", "purchase"]),
    "properties": st.one_of(
        st.fixed_dictionaries({"order_id": st.sampled_from(["o-1", 7]), "revenue": _SCALARS}),
        st.dictionaries(st.text(max_size=4), _ANY, max_size=3),
    ),
    "channel": st.sampled_from(["email", "sms", "push"]),
    "status": st.sampled_from(["opted_in", "pending", "subscribed", "unconfirmed"]),
    "bounce_type": st.sampled_from(["hard", "soft", "complaint"]),
    "list_id": st.sampled_from(["news", "weekly"]),
    "request": st.sampled_from(["opt_out", "opt_in", "delete"]),
}
_GOOD_IDS = st.fixed_dictionaries(
    {},
    optional={
        "email": st.sampled_from(["ann@example.com", "B@X.org", "not an email", "null"]),
        "phone": st.sampled_from(["+1 415 555 2671", "(415) 555-2671", "12", "020 7946 0018"]),
        "customer_id": st.sampled_from(["C1", "42"]) | st.integers(-2, 10**6),
        "anonymous_id": st.sampled_from(["a-1", "guest"]),
        "push_token": st.sampled_from(["tok"]),
    },
)
_GOOD_TIMESTAMPS = st.sampled_from(
    ["2026-01-01T10:00:00Z", "2026-01-01T10:00:00.123Z", "2026-03-01T12:00:00.5+02:00"]
)


@st.composite
def raw_events(draw: st.DrawFn) -> Any:
    """Well-formed events of every type, most with a few things changed or broken."""
    event_type = draw(st.sampled_from(list(_TYPE_FIELDS)))
    raw: dict[str, Any] = {
        "type": event_type,
        "timestamp": draw(_GOOD_TIMESTAMPS),
        "identifiers": draw(_GOOD_IDS),
    }
    if draw(st.booleans()):
        raw["event_id"] = draw(st.sampled_from(["e-1", "e-2"]))
    for name in _TYPE_FIELDS[event_type]:
        raw[name] = draw(_VALID_FIELDS[name])
    for _ in range(draw(st.integers(0, 2))):
        change = draw(st.sampled_from(["field", "drop", "extra", "timestamp", "id", "type"]))
        if change == "field":
            name = draw(st.sampled_from(list(_FIELD_VALUES)))
            raw[name] = draw(_FIELD_VALUES[name])
        elif change == "drop" and raw:
            del raw[draw(st.sampled_from(sorted(raw)))]
        elif change == "extra":
            raw[draw(st.sampled_from(["colour", "context", "traits", "event"]))] = draw(_SCALARS)
        elif change == "timestamp":
            raw["timestamp"] = draw(_TIMESTAMPS)
        elif change == "id":
            raw["identifiers"] = draw(
                st.dictionaries(
                    st.sampled_from(
                        ["email", "phone", "customer_id", "anonymous_id", "push_token", "fax"]
                    ),
                    _ID_VALUES,
                    max_size=3,
                )
                | _SCALARS
            )
        else:
            raw["type"] = draw(st.sampled_from(["page", "Track", ""]) | _SCALARS)
    return raw if draw(st.integers(0, 30)) < 30 else draw(_ANY)


def outcome(parse: Any, raw: Any) -> tuple[str, Any]:
    try:
        parsed = parse(raw)
    except ContractError as error:
        return "refused", str(error)
    if not (isinstance(raw, dict) and raw.get("event_id")):  # a generated uuid
        parsed = dataclasses.replace(parsed, event_id="generated")
    return "accepted", parsed


def pydantic_only(raw: Any) -> ProfileEvent:
    return contract._build(
        contract._model_shape(validate_event(raw)), "US", None, rules.FILES_WINDOW
    )


@settings(max_examples=1500, deadline=None)
@given(raw_events())
def test_the_fast_shape_check_gives_pydantics_verdict_and_text(raw: Any) -> None:
    assert outcome(parse_event, raw) == outcome(pydantic_only, raw)


def test_the_generated_stream_takes_the_fast_path() -> None:
    raws = [item for item in generate_events(2_000, 3) if isinstance(item, dict)]
    fast = [raw for raw in raws if contract._fast_fields(raw) is not None]
    assert len(fast) >= 0.99 * len(raws)
    for raw in raws[:300]:
        assert outcome(parse_event, raw) == outcome(pydantic_only, raw)
