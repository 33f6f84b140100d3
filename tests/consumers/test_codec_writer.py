"""The envelope writer writes exactly what fastavro writes, for every shape of event."""

from __future__ import annotations

import copy
from io import BytesIO
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.codec import AvroCodec, EncodeError, load_standalone, to_record
from profile_engine.contract import ContractError, parse_event
from profile_engine.events import (
    Bounce,
    Ccpa,
    Consent,
    Identifier,
    Identify,
    ProfileEvent,
    Subscription,
    Track,
)
from profile_engine.synthetic import generate_events

CODEC = AvroCodec()
T0 = 1_767_225_600_000_000


def fastavro_message(codec: AvroCodec, event: ProfileEvent) -> bytes:
    buffer = BytesIO()
    buffer.write(b"\xc3\x01" + codec.fingerprint)
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(codec.schema), to_record(event))
    return buffer.getvalue()


def test_the_shipped_envelope_is_written_by_the_fast_writer() -> None:
    # Fails after a schema change the writer does not know: update EnvelopeWriter and its
    # WRITER_SHAPE (the codec meanwhile falls back to fastavro, correct but slower).
    assert CODEC.fast_encoding


def test_every_event_of_a_synthetic_stream_is_written_as_fastavro_writes_it() -> None:
    events = []
    for raw in generate_events(3_000, seed=11):
        try:
            events.append(parse_event(raw))
        except (ContractError, TypeError):
            continue  # the stream's deliberately invalid items
    assert {e.type for e in events} == {
        "identify", "track", "consent", "bounce", "subscription", "ccpa"
    }  # fmt: skip
    for event in events:
        assert CODEC.encode(event) == fastavro_message(CODEC, event), event


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
)
identifiers = st.lists(
    st.builds(
        Identifier,
        st.sampled_from(["customer_id", "email", "phone", "push_token", "anonymous_id"]),
        st.text(min_size=1),
        st.booleans(),
    ),
    min_size=1,
    max_size=4,
).map(tuple)
common = {
    "event_id": st.text(min_size=1),
    "timestamp_us": st.integers(-(2**62), 2**62),
    "identifiers": identifiers,
}
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text()),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
any_event = st.one_of(
    st.builds(Identify, traits=st.dictionaries(st.text(), scalars, max_size=6), **common),
    st.builds(
        Track,
        event=st.text(min_size=1),
        properties=st.dictionaries(st.text(), json_values, max_size=4),
        **common,
    ),
    st.builds(
        Consent,
        channel=st.sampled_from(["email", "sms", "push"]),
        status=st.sampled_from(["opted_in", "opted_out", "pending", "unknown"]),
        **common,
    ),
    st.builds(
        Bounce,
        channel=st.sampled_from(["email", "sms", "push"]),
        bounce_type=st.sampled_from(["hard", "soft", "complaint"]),
        **common,
    ),
    st.builds(
        Subscription,
        list_id=st.text(min_size=1),
        channel=st.sampled_from(["email", "sms", "push"]),
        status=st.sampled_from(["subscribed", "unsubscribed", "unconfirmed", "suspended"]),
        **common,
    ),
    st.builds(Ccpa, request=st.sampled_from(["opt_out", "opt_in", "delete"]), **common),
)


@settings(max_examples=200, deadline=None)
@given(any_event)
def test_any_event_is_written_as_fastavro_writes_it(event: ProfileEvent) -> None:
    try:
        expected = fastavro_message(CODEC, event)
    except ValueError:  # e.g. a lone surrogate that UTF-8 cannot carry
        with pytest.raises(EncodeError):
            CODEC.encode(event)
        return
    assert CODEC.encode(event) == expected


def test_an_integer_beyond_64_bits_is_an_encode_error_naming_the_trait() -> None:
    event = Identify(
        event_id="e1", timestamp_us=T0, identifiers=(Identifier("email", "a@b.c"),),
        traits={"huge": 2**63},
    )  # fmt: skip
    with pytest.raises(EncodeError, match=r"traits\.huge: integer outside the 64-bit range"):
        CODEC.encode(event)


def test_a_symbol_the_schema_does_not_know_is_an_encode_error() -> None:
    event = Consent(
        event_id="e2", timestamp_us=T0, identifiers=(Identifier("email", "a@b.c"),),
        channel="pigeon", status="opted_in",
    )  # fmt: skip
    with pytest.raises(EncodeError, match="consent event e2"):
        CODEC.encode(event)


def test_an_envelope_of_another_shape_is_written_by_fastavro() -> None:
    schema: dict[str, Any] = copy.deepcopy(load_standalone())
    schema["fields"].append({"name": "source", "type": "string", "default": "unknown"})
    codec = AvroCodec(schema)
    assert not codec.fast_encoding
    event = Ccpa(
        event_id="e3", timestamp_us=T0, identifiers=(Identifier("email", "a@b.c"),),
        request="delete",
    )  # fmt: skip
    message = codec.encode(event)
    assert message != CODEC.encode(event)  # the extra field is in the body
    assert codec.decode(message) == event
