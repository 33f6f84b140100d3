"""The crypto-shredding primitives and the opening of sealed events, without a broker."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from consumers.codec import AvroCodec, DecodeError
from consumers.event_preparer import EventPreparer
from consumers.key_store import MemoryKeyStore, SealingConfig
from profile_engine.crypto import (
    ERASED,
    KeyMaterialError,
    KeyRing,
    SealError,
    identifier_field,
    key_ref,
    master_key_from_text,
    open_token,
    seal,
    token_ref,
)
from tests.profile_engine.builders import identify, track
from tests.support.sealed_folding import seal_events

MASTER = bytes(range(32))
OTHER = bytes(range(1, 33))
RING = KeyRing.from_master(MASTER)


def _token(value: bytes = b"ann@example.com") -> tuple[AESGCM, str, str]:
    aead = AESGCM(bytes(32))
    ref = key_ref(RING.blind_index("email", "ann@example.com"), b"\x00\x00\x00\x01")
    return aead, ref, seal(aead, ref, identifier_field("email", True), value, bytes(12))


def test_a_token_opens_to_its_value_and_names_its_key() -> None:
    aead, ref, token = _token()
    assert token_ref(token) == ref
    assert open_token(aead, token) == (identifier_field("email", True), b"ann@example.com")
    assert b"ann" not in token.encode()


@pytest.mark.parametrize("position", [-1, -20, 50])
def test_a_changed_character_fails_authentication(position: int) -> None:
    aead, _, token = _token()
    changed = token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1 :]
    with pytest.raises(SealError):
        open_token(aead, changed)


def test_a_token_moved_to_another_key_fails_authentication() -> None:
    aead, ref, token = _token()
    other_ref = key_ref(RING.blind_index("email", "bob@example.com"), b"\x00\x00\x00\x01")
    with pytest.raises(SealError, match="fails authentication"):
        open_token(aead, token.replace(ref, other_ref))


def test_a_data_key_unwraps_only_under_its_master_key_and_reference() -> None:
    _, ref, _ = _token()
    wrapped = RING.wrap(ref, bytes(32), bytes(12))
    assert RING.unwrap(ref, wrapped) == bytes(32)
    with pytest.raises(KeyMaterialError, match="another master key"):
        KeyRing.from_master(OTHER).unwrap(ref, wrapped)
    with pytest.raises(KeyMaterialError):
        RING.unwrap(ref[:-1] + "f", wrapped)


def test_blind_indexes_are_keyed() -> None:
    other = KeyRing.from_master(OTHER)
    assert RING.identifier_key("email", "a@x.io") != other.identifier_key("email", "a@x.io")
    assert RING.identifier_key("email", "a@x.io") == RING.identifier_key("email", "a@x.io")
    assert RING.check != other.check


def test_a_bad_master_key_is_named_without_being_shown() -> None:
    short = base64.b64encode(b"s3cr3t-but-short").decode()
    with pytest.raises(KeyMaterialError) as raised:
        master_key_from_text(short, "PROFILE_ENGINE_MASTER_KEY")
    assert "32 bytes" in str(raised.value) and short not in str(raised.value)
    with pytest.raises(KeyMaterialError, match="not base64"):
        master_key_from_text("not base64 !", "key file k")


def _preparer(keys: MemoryKeyStore) -> EventPreparer:
    return EventPreparer(SealingConfig(MASTER, "", "memory"), key_store=keys)


def test_a_sealed_event_opens_to_the_plaintext_events_keys() -> None:
    keys = MemoryKeyStore()
    event = identify(0, {"first_name": "Ann"}, eid="e1", email="ann@x.io", customer_id="C1")
    [(message_key, value)] = seal_events([event], MASTER, keys)
    assert b"ann@x.io" not in value and b"Ann" not in value and b"C1" not in message_key
    prepared = _preparer(keys).message(value)
    # The same identifier keys and fingerprint as the event in clear gets in a keyed fold.
    clear = _preparer(keys).event(event)
    assert (prepared.id_keys, prepared.fingerprint) == (clear.id_keys, clear.fingerprint)


def _swap_field(record: dict[str, Any], donor: dict[str, Any]) -> dict[str, Any]:
    swapped = dict(record)
    swapped["payload"] = donor["payload"]
    return swapped


def test_a_field_taken_from_another_event_of_the_person_is_refused() -> None:
    keys = MemoryKeyStore()
    events = [
        track(0, "page_viewed", {"page": "a"}, eid="e1", email="ann@x.io"),
        track(1, "page_viewed", {"page": "b"}, eid="e2", email="ann@x.io"),
    ]
    codec = AvroCodec()
    first, second = (codec.record(v) for _, v in seal_events(events, MASTER, keys))
    # Each token opens (same key, same field), but the event's keyed fingerprint no longer
    # matches what it says.
    with pytest.raises(DecodeError, match="fingerprint"):
        _preparer(keys).record(_swap_field(first, second))


def test_a_lost_key_is_a_dead_letter_and_an_erased_key_folds_unreadable() -> None:
    keys = MemoryKeyStore()
    event = identify(0, {"first_name": "Ann"}, eid="e1", email="ann@x.io")
    [(_, value)] = seal_events([event], MASTER, keys)
    with pytest.raises(DecodeError, match=r"no key for .* \(key store lost\?\)"):
        _preparer(MemoryKeyStore()).message(value)
    [ref] = list(keys._keys)
    keys.publish([(ref, ERASED)])
    prepared = _preparer(keys).message(value)
    assert prepared.wrapped_keys == (None,)
    assert "Ann" not in repr(prepared) and "ann@x.io" not in repr(prepared)


def test_an_erased_key_is_never_served_from_the_openers_values() -> None:
    keys = MemoryKeyStore()
    event = identify(0, {"first_name": "Ann"}, eid="e1", email="ann@x.io")
    [(_, value)] = seal_events([event], MASTER, keys)
    preparer = _preparer(keys)
    [ref] = list(keys._keys)
    wrapped = keys._keys[ref]
    assert preparer.message(value).wrapped_keys == (wrapped,)  # opened, and kept
    keys.publish([(ref, ERASED)])
    prepared = preparer.message(value)  # the same preparer, whose opener had the values
    assert prepared.wrapped_keys == (None,)
    assert "Ann" not in repr(prepared) and "ann@x.io" not in repr(prepared)
    assert preparer._opener is not None
    assert preparer._opener.verified(ref, wrapped) == {}  # nothing of the key is left


def test_a_value_kept_under_one_key_is_not_served_under_another_key_of_its_reference() -> None:
    keys = MemoryKeyStore()
    event = identify(0, {"first_name": "Ann"}, eid="e1", email="ann@x.io")
    [(_, value)] = seal_events([event], MASTER, keys)
    preparer = _preparer(keys)
    preparer.message(value)
    [ref] = list(keys._keys)
    keys.publish([(ref, RING.wrap(ref, bytes(32), bytes(12)))])  # the key store was tampered
    with pytest.raises(DecodeError, match="fails authentication"):
        preparer.message(value)


def test_a_kept_value_is_served_again_without_another_decryption() -> None:
    keys = MemoryKeyStore()
    events = [
        identify(0, {"plan": "pro"}, eid="e1", email="ann@x.io"),
        identify(1, {"plan": "pro"}, eid="e2", email="ann@x.io"),
    ]
    first, second = (v for _, v in seal_events(events, MASTER, keys))
    preparer = _preparer(keys)
    opener = preparer._opener
    assert opener is not None
    opened: list[str] = []
    real_open = opener.open
    opener.open = lambda token, wrapped: opened.append(token) or real_open(token, wrapped)  # type: ignore[method-assign]
    one, two = preparer.message(first), preparer.message(second)
    assert len(opened) == 2  # the email and the trait, once each
    assert (one.id_keys, one.detail) == (two.id_keys, two.detail)


def test_the_openers_values_stay_bounded_across_many_keys() -> None:
    keys = MemoryKeyStore()
    events = [identify(i, {"plan": "pro"}, eid=f"e{i}", email=f"p{i}@x.io") for i in range(12)]
    messages = [v for _, v in seal_events(events, MASTER, keys)]
    preparer = EventPreparer(SealingConfig(MASTER, "", "memory"), key_store=keys)
    opener = preparer._opener
    assert opener is not None
    opener._max_entries = 5
    for value in messages:
        preparer.message(value)
        held = sum(len(values) for _, values in opener._opened.values())
        assert held <= 5 and len(opener._opened) <= 5
