"""Opening sealed events in one pass: what is still checked on the values as opened.

A producer that holds the master key (another program, an older or buggy publisher) can seal
anything: its tokens open and its keyed fingerprint matches, so only the checks made on the
opened values stand between it and the projection. Each of these events would be refused in
clear; sealed, it must be a dead letter too, with the rule book's reason.
"""

from __future__ import annotations

import pytest

from consumers.codec import DecodeError
from consumers.event_preparer import EventPreparer
from consumers.key_store import MemoryKeyStore, SealingConfig
from profile_engine.events import Identifier, Identify, ProfileEvent, Track
from profile_engine.rules import EventTimeWindow
from tests.profile_engine.builders import at, identify, track
from tests.support.sealed_folding import seal_events

MASTER = bytes(range(32))


def _open(event: ProfileEvent, window: EventTimeWindow | None = None) -> None:
    """Seal ``event`` as it is (no rule book on the way in) and open it as the reader does."""
    keys = MemoryKeyStore()
    [(_, value)] = seal_events([event], MASTER, keys)
    preparer = EventPreparer(SealingConfig(MASTER, "", "memory"), key_store=keys)
    if window is None:
        preparer.message(value)
    else:
        preparer.message(value, window)


def _identify(*identifiers: Identifier, traits: dict[str, object] | None = None) -> Identify:
    return Identify(event_id="e1", timestamp_us=at(0), identifiers=identifiers, traits=traits or {})


def test_an_identifier_sealed_before_normalisation_is_a_dead_letter() -> None:
    with pytest.raises(DecodeError, match=r"identifiers\.email: the sealed value is not an identi"):
        _open(_identify(Identifier("email", "  Ann@Example.COM ")))


def test_a_junk_identifier_sealed_beside_a_good_one_is_a_dead_letter() -> None:
    junk = Identifier("anonymous_id", "undefined")
    with pytest.raises(DecodeError, match=r"identifiers\.anonymous_id: the sealed value is not"):
        _open(_identify(Identifier("email", "ann@example.com"), junk))


def test_an_identifier_longer_than_the_limit_is_refused_with_the_rule_books_reason() -> None:
    with pytest.raises(DecodeError, match=r"once opened: identifiers\.customer_id: longer than"):
        _open(_identify(Identifier("customer_id", "c" * 1_001)))


def test_identifiers_out_of_priority_order_or_given_twice_are_dead_letters() -> None:
    email, customer = Identifier("email", "ann@example.com"), Identifier("customer_id", "C1")
    with pytest.raises(DecodeError, match="not as the rule book makes them"):
        _open(_identify(email, customer))
    with pytest.raises(DecodeError, match=r"identifiers\.email: given more than once"):
        _open(_identify(email, Identifier("email", "bob@example.com")))


def test_a_trait_the_rule_book_refuses_is_a_dead_letter_once_opened() -> None:
    event = _identify(Identifier("email", "ann@example.com"), traits={"score": 2**63})
    with pytest.raises(DecodeError, match=r"once opened: traits\.score: integer outside the 64"):
        _open(event)


def test_a_purchase_without_revenue_is_a_dead_letter_once_opened() -> None:
    event = Track(
        event_id="e1",
        timestamp_us=at(0),
        identifiers=(Identifier("email", "ann@example.com"),),
        event="purchase",
        properties={"order_id": "o-1"},
    )
    with pytest.raises(DecodeError, match=r"once opened: properties: a purchase needs a numeric"):
        _open(event)


def test_properties_nested_too_deep_are_a_dead_letter_once_opened() -> None:
    deep: dict[str, object] = {}
    for _ in range(40):
        deep = {"a": deep}
    with pytest.raises(DecodeError, match=r"once opened: properties: nested deeper than 32"):
        _open(track(0, "page_viewed", deep, eid="e1", email="ann@example.com"))


def test_an_event_outside_the_records_window_is_a_dead_letter() -> None:
    event = identify(0, {"plan": "pro"}, eid="e1", email="ann@example.com")
    window = EventTimeWindow(at(1), at(2))
    with pytest.raises(DecodeError, match=r"timestamp: .* is outside the accepted event-time"):
        _open(event, window)


def test_a_tampered_trait_token_fails_authentication() -> None:
    keys = MemoryKeyStore()
    event = identify(0, {"first_name": "Annabel"}, eid="e1", email="ann@example.com")
    [(_, value)] = seal_events([event], MASTER, keys)
    start = value.index(b"pe1:", value.index(b"first_name"))
    at_char = start + 60  # inside the token's base64 body, past its key reference
    flipped = b"A" if value[at_char : at_char + 1] != b"A" else b"B"
    tampered = value[:at_char] + flipped + value[at_char + 1 :]
    preparer = EventPreparer(SealingConfig(MASTER, "", "memory"), key_store=keys)
    with pytest.raises(DecodeError, match="fails authentication"):
        preparer.message(tampered)
    assert preparer.message(value).event_id == "e1"  # the untouched message still opens


@pytest.mark.parametrize("damage", [b"", b"\x01short", bytes(200)])
def test_a_damaged_key_record_makes_dead_letters_of_its_events_and_the_others_open(
    damage: bytes,
) -> None:
    """A key record that is no wrapped key at all (garbage in the key topic) is poison for
    the events sealed under it, not for the fold: they are dead letters that name the key."""
    keys = MemoryKeyStore()
    ann = identify(0, {}, eid="e1", email="ann@example.com")
    bob = identify(1, {}, eid="e2", email="bob@example.com")
    [(_, ann_value), (_, bob_value)] = seal_events([ann, bob], MASTER, keys)
    preparer = EventPreparer(SealingConfig(MASTER, "", "memory"), key_store=keys)
    ann_ref = ann_value[ann_value.index(b"pe1:") + 4 :].split(b":")[0].decode()
    keys.publish([(ann_ref, damage)])
    with pytest.raises(DecodeError, match=f"the data key {ann_ref} in the key store is damaged"):
        preparer.message(ann_value)
    assert preparer.message(bob_value).event_id == "e2"


def test_an_identifier_is_judged_once_per_token_and_then_served_from_the_opener() -> None:
    keys = MemoryKeyStore()
    events = [track(i, "page_viewed", {"n": i}, eid=f"e{i}", email="ann@example.com")
              for i in range(3)]  # fmt: skip
    messages = [v for _, v in seal_events(events, MASTER, keys)]
    preparer = EventPreparer(SealingConfig(MASTER, "", "memory"), key_store=keys)
    opener = preparer._opener
    assert opener is not None
    [ref] = list(keys._keys)
    prepared = [preparer.message(value) for value in messages]
    verified = opener.verified(ref, keys._keys[ref])
    assert list(verified.values()) == [Identifier("email", "ann@example.com")]
    assert len({p.id_keys for p in prepared}) == 1
    assert [p.event_id for p in prepared] == ["e0", "e1", "e2"]
