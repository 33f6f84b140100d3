"""Content fingerprints: a redelivery matches, any change of content does not."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from consumers.codec import AvroCodec
from profile_engine.contract import parse_event
from profile_engine.events import (
    FINGERPRINT_SIZE,
    Bounce,
    Ccpa,
    Consent,
    Identifier,
    Identify,
    ProfileEvent,
    Subscription,
    Track,
    event_fingerprint,
)

T0 = 1_767_261_600_123_456
EMAIL = Identifier("email", "ann@example.com")
PHONE = Identifier("phone", "+14155552671")


def events() -> list[ProfileEvent]:
    return [
        Identify(event_id="e1", timestamp_us=T0, identifiers=(EMAIL,), traits={"a": 1, "b": "x"}),
        Track(
            event_id="e2",
            timestamp_us=T0,
            identifiers=(EMAIL, Identifier("anonymous_id", "a1")),
            event="purchase",
            properties={"order_id": "o", "revenue": 9.5, "items": [{"sku": "S"}]},
        ),
        Consent(event_id="e3", timestamp_us=T0, identifiers=(PHONE,), channel="sms",
                status="opted_in"),
        Bounce(event_id="e4", timestamp_us=T0, identifiers=(EMAIL,), channel="email",
               bounce_type="hard"),
        Subscription(event_id="e5", timestamp_us=T0, identifiers=(EMAIL,), list_id="news",
                     channel="email", status="subscribed"),
        Ccpa(event_id="e6", timestamp_us=T0, identifiers=(EMAIL,), request="delete"),
    ]  # fmt: skip


def test_a_fingerprint_is_sixteen_bytes_and_pinned() -> None:
    # The canonical form is part of the log's meaning (stored fingerprints are compared with
    # new ones across restarts): a change of encoding must be deliberate, with a new version.
    fingerprint = event_fingerprint(events()[1])
    assert len(fingerprint) == FINGERPRINT_SIZE == 16
    canonical = (
        '[1,"e2","track",1767261600123456,[["email","ann@example.com"],["anonymous_id","a1"]],'
        '{"event":"purchase","properties":{"items":[{"sku":"S"}],"order_id":"o","revenue":9.5}}]'
    )
    assert fingerprint == hashlib.blake2b(canonical.encode(), digest_size=16).digest()
    assert fingerprint.hex() == "52b8151a6e2b28ce632adaf3872ba39d"


def test_logically_equal_events_have_equal_fingerprints() -> None:
    first = events()[1]
    assert isinstance(first, Track)
    reordered = dataclasses.replace(
        first, properties={"items": [{"sku": "S"}], "revenue": 9.5, "order_id": "o"}
    )
    assert event_fingerprint(reordered) == event_fingerprint(first)
    # Validity is derived from the value, so it is not content.
    relabelled = dataclasses.replace(first, identifiers=(Identifier("email", EMAIL.value, False),
                                                         first.identifiers[1]))  # fmt: skip
    assert event_fingerprint(relabelled) == event_fingerprint(first)


def test_the_same_event_from_json_and_from_avro_has_one_fingerprint() -> None:
    raw = {
        "event_id": "e-9",
        "type": "track",
        "timestamp": "2026-01-01T10:00:00.123456Z",
        "identifiers": {"anonymous_id": "a1", "email": " Ann@Example.com"},
        "event": "purchase",
        "properties": {"revenue": 9.5, "order_id": "o", "note": "café", "n": [1, 1.0, True]},
    }
    from_json = parse_event(raw)
    codec = AvroCodec()
    from_avro = codec.decode(codec.encode(from_json))
    assert event_fingerprint(from_avro) == event_fingerprint(from_json)


CHANGES: list[tuple[int, dict[str, Any]]] = [
    (0, {"event_id": "other"}),
    (0, {"timestamp_us": T0 + 1}),
    (0, {"identifiers": (PHONE,)}),
    (0, {"identifiers": (Identifier("email", "bob@example.com"),)}),
    (0, {"traits": {"a": 1.0, "b": "x"}}),  # 1 and 1.0 are different values
    (0, {"traits": {"a": True, "b": "x"}}),
    (0, {"traits": {"a": 1, "b": "x", "c": None}}),
    (1, {"event": "refund"}),
    (1, {"properties": {"order_id": "o", "revenue": 9.51, "items": [{"sku": "S"}]}}),
    (1, {"properties": {"order_id": "o", "revenue": 9.5, "items": [{"sku": "T"}]}}),
    (2, {"status": "opted_out"}),
    (3, {"bounce_type": "soft"}),
    (4, {"list_id": "weekly"}),
    (5, {"request": "opt_out"}),
]


@pytest.mark.parametrize(("index", "change"), CHANGES)
def test_any_change_of_content_changes_the_fingerprint(index: int, change: dict[str, Any]) -> None:
    original = events()[index]
    changed = dataclasses.replace(original, **change)
    assert event_fingerprint(changed) != event_fingerprint(original)


def test_the_type_is_content() -> None:
    consent, bounce = events()[2], events()[3]
    as_bounce = Bounce(event_id="e3", timestamp_us=T0, identifiers=(PHONE,), channel="sms",
                       bounce_type="hard")  # fmt: skip
    assert event_fingerprint(as_bounce) != event_fingerprint(consent)
    assert len({event_fingerprint(e) for e in events()}) == len(events())
    assert bounce.type == "bounce"
