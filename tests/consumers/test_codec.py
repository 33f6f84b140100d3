"""Avro single-object encoding: round trips, header bytes, decode errors, schema evolution."""

from __future__ import annotations

import copy
import json
import math
import random
import struct
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import parse_schema, to_parsing_canonical_form
from hypothesis import example, given, settings
from hypothesis import strategies as st

from consumers.codec import (
    HEADER_SIZE,
    SCHEMA_DIR,
    AvroCodec,
    DecodeError,
    EncodeError,
    from_record,
    history_schemas,
    load_standalone,
    schema_fingerprint,
    to_record,
)
from profile_engine.contract import event_to_json, parse_event
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
    event_fingerprint,
)
from profile_engine.rules import ContractError, window_for_record

NEXT_SCHEMA_PATH = Path(__file__).parent / "schemas" / "ProfileEvent.next.avsc"
T0 = 1_767_261_600_123_456  # 2026-01-01T10:00:00.123456Z, sub-millisecond on purpose


def sample_events() -> list[ProfileEvent]:
    """One event of every type, with every trait scalar type and odd but valid shapes."""
    email = Identifier("email", "ann@example.com")
    phone = Identifier("phone", "+14155552671")
    push = Identifier("push_token", "tok-1")
    return [
        Identify(
            event_id="e-identify",
            timestamp_us=T0,
            identifiers=(Identifier("customer_id", "C1"), email, Identifier("anonymous_id", "a1")),
            traits={"first_name": "Ann", "age": 41, "score": 0.75, "vip": True, "city": None},
        ),
        Identify(event_id="e-identify-empty", timestamp_us=T0, identifiers=(email,), traits={}),
        Track(
            event_id="e-track",
            timestamp_us=T0 + 1,
            identifiers=(Identifier("anonymous_id", "a1"),),
            event="purchase",
            properties={
                "order_id": "o-1",
                "revenue": 12.5,
                "items": [{"sku": "S1", "qty": 2, "tags": ["a", "b"]}, {"sku": "S2"}],
                "coupon": None,
                "gift": False,
                "note": "caf\u00e9 \u2615",
            },
        ),
        Consent(
            event_id="e-consent",
            timestamp_us=T0 + 2,
            identifiers=(Identifier("email", "ann@@example", valid=False), phone),
            channel="sms",
            status="pending",
        ),
        Bounce(
            event_id="e-bounce",
            timestamp_us=T0 + 3,
            identifiers=(Identifier("email", "broken@@example", valid=False),),
            channel="email",
            bounce_type="complaint",
        ),
        Subscription(
            event_id="e-subscription",
            timestamp_us=T0 + 4,
            identifiers=(push,),
            list_id="weekly-news",
            channel="push",
            status="unconfirmed",
        ),
        Ccpa(event_id="e-ccpa", timestamp_us=T0 + 5, identifiers=(phone,), request="delete"),
    ]


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec()


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.event_id)
def test_every_event_type_round_trips(codec: AvroCodec, event: ProfileEvent) -> None:
    decoded = codec.decode(codec.encode(event))
    assert decoded == event
    assert type(decoded) is type(event)


def test_trait_scalar_types_survive_exactly(codec: AvroCodec) -> None:
    event = sample_events()[0]
    assert isinstance(event, Identify)
    decoded = codec.decode(codec.encode(event))
    assert isinstance(decoded, Identify)
    # bool must not come back as long, nor 1.0 as 1: the union branch carries the type.
    assert [type(v) for v in decoded.traits.values()] == [str, int, float, bool, type(None)]


def test_invalid_marked_identifiers_stay_marked(codec: AvroCodec) -> None:
    consent = sample_events()[3]
    decoded = codec.decode(codec.encode(consent))
    assert decoded.identifiers == (
        Identifier("email", "ann@@example", False),
        Identifier("phone", "+14155552671", True),
    )


def test_record_round_trip_is_the_archive_form() -> None:
    for event in sample_events():
        assert from_record(to_record(event)) == event


def test_decode_many_keeps_bad_messages_in_place(codec: AvroCodec) -> None:
    good = [codec.encode(e) for e in sample_events()[:2]]
    results = codec.decode_many([good[0], b"junk", good[1]])
    assert results[0] == sample_events()[0]
    assert isinstance(results[1], DecodeError)
    assert results[2] == sample_events()[1]


def test_integer_trait_beyond_64_bits_is_an_encode_error(codec: AvroCodec) -> None:
    event = Identify(
        event_id="big",
        timestamp_us=T0,
        identifiers=sample_events()[1].identifiers,
        traits={"huge": 2**70},
    )
    with pytest.raises(EncodeError, match=r"traits\.huge: integer outside the 64-bit range"):
        codec.encode(event)


# --- the single-object header --------------------------------------------------------------


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO exactly as the Avro specification writes it (independent of fastavro)."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_crc64_matches_the_avro_specification_vectors() -> None:
    # Fingerprints from Avro's own schema test data (signed 64-bit, as Java prints them).
    assert struct.unpack("<q", struct.pack("<Q", crc64_avro(b'"null"')))[0] == (7195948357588979594)
    assert struct.unpack("<q", struct.pack("<Q", crc64_avro(b'"boolean"')))[0] == (
        -6970731678124411036
    )


def test_header_is_magic_then_little_endian_fingerprint_of_canonical_form(
    codec: AvroCodec,
) -> None:
    message = codec.encode(sample_events()[0])
    canonical = to_parsing_canonical_form(parse_schema(load_standalone()))
    assert message[:2] == b"\xc3\x01"
    assert message[2:HEADER_SIZE] == struct.pack("<Q", crc64_avro(canonical.encode()))
    assert codec.fingerprint == message[2:HEADER_SIZE]


def test_body_is_plain_avro_binary_of_the_envelope(codec: AvroCodec) -> None:
    event = sample_events()[2]
    message = codec.encode(event)
    schema = parse_schema(load_standalone())
    record = fastavro.schemaless_reader(BytesIO(message[HEADER_SIZE:]), schema, None, True)
    assert record["event_id"] == "e-track"
    assert record["type"] == "track"
    assert record["payload"][0] == "profile_engine.Track"
    assert json.loads(record["payload"][1]["properties_json"]) == event.properties  # type: ignore[attr-defined]


def test_shipped_files_resolve_to_one_standalone_schema() -> None:
    schema = load_standalone()
    # Shared named types are defined once and referenced by name afterwards.
    text = json.dumps(schema)
    assert text.count('"name": "Channel"') == 1
    assert text.count('"profile_engine.Channel"') == 2  # Bounce and Subscription refer to it
    # fastavro's own loader (named types from sibling files) agrees with ours.
    loaded = fastavro.schema.load_schema(
        str(Path(__file__).parents[2] / "schemas" / "profile_engine.ProfileEvent.avsc")
    )
    assert to_parsing_canonical_form(loaded) == to_parsing_canonical_form(parse_schema(schema))


# --- decode errors -------------------------------------------------------------------------


def test_bad_magic_is_rejected(codec: AvroCodec) -> None:
    message = codec.encode(sample_events()[0])
    with pytest.raises(DecodeError, match="bad magic"):
        codec.decode(b"\x00\x01" + message[2:])
    with pytest.raises(DecodeError, match="bad magic"):
        codec.decode(b'{"type": "identify"}')
    with pytest.raises(DecodeError, match="bad magic"):
        codec.decode(b"\xc3\x01\x00")


def test_unknown_fingerprint_is_rejected(codec: AvroCodec) -> None:
    message = codec.encode(sample_events()[0])
    forged = message[:2] + b"\x01\x02\x03\x04\x05\x06\x07\x08" + message[HEADER_SIZE:]
    with pytest.raises(DecodeError, match="unknown fingerprint") as caught:
        codec.decode(forged)
    assert "0102030405060708" in caught.value.reason


def test_truncated_body_is_rejected(codec: AvroCodec) -> None:
    message = codec.encode(sample_events()[0])
    for cut in (1, 5, len(message) - HEADER_SIZE - 1):
        with pytest.raises(DecodeError, match="corrupt body"):
            codec.decode(message[:-cut])


def test_trailing_bytes_are_rejected(codec: AvroCodec) -> None:
    message = codec.encode(sample_events()[5])
    with pytest.raises(DecodeError, match="trailing bytes"):
        codec.decode(message + b"\x00")


def foreign_message(codec: AvroCodec, record: dict[str, Any]) -> bytes:
    """What another producer could write: valid Avro of our schema, whatever its content."""
    buffer = BytesIO()
    buffer.write(b"\xc3\x01" + codec.fingerprint)
    fastavro.schemaless_writer(buffer, parse_schema(codec.schema), record)
    return buffer.getvalue()


def _record(**changes: Any) -> dict[str, Any]:
    record = to_record(sample_events()[3])  # a consent on sms with email and phone
    record.update(changes)
    return record


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"identifiers": []}, "identifiers: at least one usable identifier is required"),
        (
            {"identifiers": [{"id_type": "phone", "value": " Null ", "valid": True}]},
            "identifiers: at least one usable identifier is required",
        ),
        (
            {"identifiers": [{"id_type": "email", "value": "a@b.com", "valid": True}]},
            "identifiers.phone: a consent event for channel sms must carry a usable phone",
        ),
        ({"type": "unrecognised"}, "type: unknown event type 'unrecognised'"),
        ({"type": "ccpa"}, "payload: a ccpa event cannot carry a profile_engine.Consent"),
        ({"event_id": ""}, "event_id: must not be empty"),
        (
            {"payload": ("profile_engine.Consent", {"channel": "sms", "status": "unrecognised"})},
            "status: a value this reader does not know",
        ),
        (
            {
                "identifiers": [
                    {"id_type": "phone", "value": "+14155552671", "valid": True},
                    {"id_type": "phone", "value": "+14155552672", "valid": True},
                ]
            },
            "identifiers.phone: given more than once",
        ),
    ],
)
def test_contract_breaks_in_valid_avro_are_rejected(
    codec: AvroCodec, changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        codec.decode(foreign_message(codec, _record(**changes)))
    assert caught.value.reason == reason


def test_bounce_without_the_channel_identifier_is_rejected(codec: AvroCodec) -> None:
    record = to_record(sample_events()[4])  # an email bounce
    record["identifiers"] = [{"id_type": "push_token", "value": "t", "valid": True}]
    with pytest.raises(DecodeError, match=r"identifiers\.email: a bounce event"):
        codec.decode(foreign_message(codec, record))


def test_junk_identifiers_from_a_foreign_producer_are_dropped(codec: AvroCodec) -> None:
    record = to_record(sample_events()[5])
    record["identifiers"] = [
        {"id_type": "anonymous_id", "value": "undefined", "valid": True},
        {"id_type": "push_token", "value": "tok-1", "valid": True},
    ]
    decoded = codec.decode(foreign_message(codec, record))
    assert decoded.identifiers == (Identifier("push_token", "tok-1"),)


def test_track_properties_must_be_a_json_object(codec: AvroCodec) -> None:
    record = to_record(sample_events()[2])
    record["payload"] = ("profile_engine.Track", {"event": "x", "properties_json": "[1]"})
    with pytest.raises(DecodeError, match="properties: must be a JSON object"):
        codec.decode(foreign_message(codec, record))


# --- schema evolution ----------------------------------------------------------------------


def next_schema() -> dict[str, Any]:
    """The test-only 'after' schema: the shipped envelope plus an optional field."""
    return json.loads(NEXT_SCHEMA_PATH.read_text(encoding="utf-8"))


def test_next_schema_differs_from_the_shipped_one_by_one_optional_field() -> None:
    # Guards the evolution tests below against drifting from the real schema.
    after = next_schema()
    added = after["fields"].pop()
    assert added["name"] == "source"
    assert added["type"] == ["null", "string"] and added["default"] is None
    shipped = to_parsing_canonical_form(parse_schema(load_standalone()))
    assert to_parsing_canonical_form(parse_schema(after)) == shipped


def test_event_written_before_a_compatible_change_decodes_after_it() -> None:
    before = AvroCodec()  # writes the shipped schema
    after = AvroCodec(schema=next_schema(), known_schemas=[load_standalone()])
    assert before.fingerprint != after.fingerprint
    for event in sample_events():
        old_message = before.encode(event)
        assert old_message[2:HEADER_SIZE] == before.fingerprint
        assert after.decode(old_message) == event
    # The reader fills the added field from its default.
    record = after.read_record(before.encode(sample_events()[0]))
    assert record["source"] is None


def test_event_written_after_the_change_decodes_with_the_old_reader_once_registered() -> None:
    before = AvroCodec()
    after = AvroCodec(schema=next_schema(), known_schemas=[])
    new_message = after.encode(sample_events()[2])
    with pytest.raises(DecodeError, match="unknown fingerprint"):
        before.decode(new_message)
    before.register(next_schema())
    assert before.decode(new_message) == sample_events()[2]


def test_new_enum_symbol_reads_as_unrecognised_in_an_old_reader() -> None:
    # A newer writer adds a channel; the old reader's enum default turns it into a clean
    # contract error instead of a resolution failure.
    newer = copy.deepcopy(load_standalone())
    channel = newer["fields"][4]["type"][2]["fields"][0]["type"]
    assert channel["name"] == "Channel"
    channel["symbols"].insert(3, "whatsapp")
    writer = AvroCodec(schema=newer, known_schemas=[])
    reader = AvroCodec()
    reader.register(newer)
    event = sample_events()[3]
    record = to_record(event)
    record["payload"] = ("profile_engine.Consent", {"channel": "whatsapp", "status": "opted_in"})
    with pytest.raises(DecodeError, match="channel: a value this reader does not know"):
        reader.decode(foreign_message(writer, record))


def test_history_files_beside_the_schema_are_known_writers(tmp_path: Path) -> None:
    older = next_schema()  # any standalone envelope version will do
    (tmp_path / "profile_engine.ProfileEvent.v1.avsc").write_text(json.dumps(older))
    (tmp_path / "profile_engine.Other.avsc").write_text("{}")
    found = history_schemas(tmp_path)
    assert found == [older]
    codec = AvroCodec(known_schemas=found)
    assert schema_fingerprint(older) in codec.store.fingerprints


# --- a foreign producer is held to the same contract ----------------------------------------


def foreign(codec: AvroCodec, **changes: Any) -> bytes:
    """A track event another producer wrote, with some fields changed."""
    record = to_record(sample_events()[2])
    record.update(changes)
    return foreign_message(codec, record)


def track_payload(properties_json: str, event: str = "purchase") -> tuple[str, dict[str, Any]]:
    return ("profile_engine.Track", {"event": event, "properties_json": properties_json})


def decode_reason(codec: AvroCodec, message: bytes) -> str:
    with pytest.raises(DecodeError) as caught:
        codec.decode(message)
    return caught.value.reason


def test_identifier_validity_is_recomputed_not_taken_from_the_wire(codec: AvroCodec) -> None:
    identifiers = [
        {"id_type": "email", "value": "NOT AN EMAIL", "valid": True},
        {"id_type": "phone", "value": "(415) 555-2671", "valid": False},
    ]
    decoded = codec.decode(foreign(codec, identifiers=identifiers))
    assert decoded.identifiers == (
        Identifier("email", "not an email", False),
        Identifier("phone", "+14155552671", True),
    )


def test_a_year_9999_event_is_refused_with_the_json_paths_reason(codec: AvroCodec) -> None:
    year_9999 = datetime_to_us(datetime(9999, 1, 1, tzinfo=UTC))
    reason = decode_reason(codec, foreign(codec, timestamp=year_9999))
    assert reason == (
        "timestamp: 9999-01-01T00:00:00Z is outside the accepted event-time window "
        "2000-01-01T00:00:00Z to 2100-01-01T00:00:00Z"
    )
    raw = {**event_to_json(sample_events()[2]), "timestamp": "9999-01-01T00:00:00Z"}
    with pytest.raises(ContractError) as caught:
        parse_event(raw)
    assert str(caught.value) == reason


def test_the_consumer_passes_the_window_of_each_record(codec: AvroCodec) -> None:
    message = codec.encode(sample_events()[2])
    record_ms = T0 // 1000
    assert codec.decode(message, window_for_record(record_ms)) == sample_events()[2]
    late = window_for_record(record_ms - 2 * 86_400_000)  # written two days before its time
    with pytest.raises(DecodeError, match=r"^timestamp: .* is outside"):
        codec.decode(message, late)
    results = codec.decode_many([message], late)
    assert isinstance(results[0], DecodeError)


def test_nan_traits_are_refused(codec: AvroCodec) -> None:
    record = to_record(sample_events()[0])
    record["payload"] = ("profile_engine.Identify", {"traits": {"score": math.nan}})
    assert decode_reason(codec, foreign_message(codec, record)) == (
        "traits.score: must be a finite number (no NaN or Infinity)"
    )
    record["payload"] = ("profile_engine.Identify", {"traits": {"city": "a\x00b"}})
    assert decode_reason(codec, foreign_message(codec, record)) == (
        "traits.city: must not contain NUL characters"
    )


@pytest.mark.parametrize(
    ("properties_json", "reason"),
    [
        ('{"order_id": "o", "revenue": 1e308}',
         "properties.revenue: a purchase's revenue must lie between -1e12 and 1e12"),
        ('{"order_id": {"a": 1}, "revenue": 5}',
         "properties: a purchase needs properties.order_id (string or integer)"),
        ('{"order_id": "o", "revenue": "5"}',
         "properties: a purchase needs a numeric properties.revenue"),
        ('{"order_id": "o"}', "properties: a purchase needs a numeric properties.revenue"),
    ],
)  # fmt: skip
def test_purchase_rules_hold_for_foreign_messages(
    codec: AvroCodec, properties_json: str, reason: str
) -> None:
    assert decode_reason(codec, foreign(codec, payload=track_payload(properties_json))) == reason


# Every kind of poison a producer could put in the properties text, and what it is told.
POISON = [
    ('{"a":' * 300 + "1" + "}" * 300, "properties: nested deeper than 32 levels"),
    ('{"a":' * 1000 + "1" + "}" * 1000, "properties: nested deeper than 32 levels"),
    ("[" * 100_000 + "]" * 100_000, "properties: nested deeper than 32 levels"),
    ('{"a": [' + ",".join(["0"] * 200_000) + "]}", "properties: more than 10000 values"),
    ('{"a": NaN}', "properties.a: must be a finite number (no NaN or Infinity)"),
    ('{"a": [Infinity]}', "properties.a.0: must be a finite number (no NaN or Infinity)"),
    ('{"a": -Infinity}', "properties.a: must be a finite number (no NaN or Infinity)"),
    ('{"a": 1e400}', "properties.a: must be a finite number (no NaN or Infinity)"),
    (f'{{"a": {2**64}}}', "properties.a: integer outside the 64-bit signed range"),
    (f'{{"a": -{2**70}}}', "properties.a: integer outside the 64-bit signed range"),
    ('{"a": "\\ud800"}', "properties.a: must be valid Unicode (no lone surrogate halves)"),
    # The key quoted as JSON: the lone surrogate shows as an escape, which any output takes.
    ('{"\\udfff": 1}',
     'properties."\\udfff": key must be valid Unicode (no lone surrogate halves)'),
    ('{"a": "x\\u0000y"}', "properties.a: must not contain NUL characters"),
    ('{"a": "' + "x" * 600_000 + '"}', "properties: larger than 512 KiB as JSON"),
    ("[1, 2]", "properties: must be a JSON object"),
    ("{broken", "properties: not valid JSON (Expecting property name enclosed in double quotes "
     "at column 2)"),
]  # fmt: skip


@pytest.mark.parametrize(("properties_json", "reason"), POISON, ids=range(len(POISON)))
def test_poison_properties_are_refused_with_a_reason(
    codec: AvroCodec, properties_json: str, reason: str
) -> None:
    message = foreign(codec, payload=track_payload(properties_json, event="view"))
    assert decode_reason(codec, message) == reason


def test_poison_among_good_messages_never_stops_a_batch(codec: AvroCodec) -> None:
    good = codec.encode(sample_events()[2])
    poison = [foreign(codec, payload=track_payload(text, "view")) for text, _ in POISON]
    results = codec.decode_many([good, *poison, good])
    assert results[0] == results[-1] == sample_events()[2]
    assert [r.reason for r in results[1:-1] if isinstance(r, DecodeError)] == [
        reason for _, reason in POISON
    ]


# --- the JSON path and the Avro path agree --------------------------------------------------

_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**65), 2**65)
    | st.floats()
    | st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\x00"]), max_size=4),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)
_TRAIT_VALUES = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats()
_IDENTIFIERS = st.dictionaries(
    st.sampled_from(["email", "phone", "customer_id", "anonymous_id", "push_token"]),
    st.sampled_from(
        ["ann@example.com", "NOT AN EMAIL", " B@x.org ", "(415) 555-2671", "+14155552671",
         "12", "null", "guest", "a-1", "x\x00", "tok"]
    ),
    min_size=1,
    max_size=3,
)  # fmt: skip
_TIMES = st.sampled_from(
    ["1999-12-31T23:59:59.999999Z", "2000-01-01T00:00:00Z", "2026-01-01T10:00:00.123Z",
     "2100-01-01T00:00:00Z", "2100-01-01T00:00:00.000001Z", "9999-01-01T00:00:00Z"]
)  # fmt: skip


@st.composite
def json_events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["identify", "track", "purchase", "consent", "subscription"]))
    raw: dict[str, Any] = {
        "event_id": "e-1" if draw(st.integers(0, 9)) < 9 else "e\x00",
        "type": "track" if kind == "purchase" else kind,
        "timestamp": "2026-01-01T10:00:00.123Z" if draw(st.integers(0, 3)) < 3 else draw(_TIMES),
        "identifiers": draw(_IDENTIFIERS),
    }
    if kind == "identify":
        raw["traits"] = draw(st.dictionaries(st.text(max_size=3), _TRAIT_VALUES, max_size=3))
    elif kind == "track":
        raw["event"] = draw(st.sampled_from(["view", ""]))
        raw["properties"] = draw(st.dictionaries(st.text(max_size=3), _VALUES, max_size=3))
    elif kind == "purchase":
        raw["event"] = "purchase"
        raw["properties"] = {
            "order_id": draw(_VALUES | st.sampled_from(["o-1", 7])),
            "revenue": draw(_VALUES | st.floats(-1e13, 1e13)),
        }
    elif kind == "consent":
        raw["channel"] = draw(st.sampled_from(["email", "sms", "push"]))
        raw["status"] = "opted_in"
    else:
        raw.update(list_id=draw(st.sampled_from(["news", ""])), channel="sms", status="subscribed")
    return raw


def as_foreign_record(raw: dict[str, Any], valid_flags: list[bool]) -> dict[str, Any]:
    """What another producer could write for the same content, ``valid`` flags and all."""
    fields: dict[str, Any] = {k: v for k, v in raw.items() if k not in _ENVELOPE}
    if raw["type"] == "track":
        text = json.dumps(fields.pop("properties"), ensure_ascii=False)
        fields["properties_json"] = text
    return {
        "event_id": raw["event_id"],
        "type": raw["type"],
        "timestamp": datetime_to_us(datetime.fromisoformat(raw["timestamp"])),
        "identifiers": [
            {"id_type": t, "value": v, "valid": flag}
            for (t, v), flag in zip(raw["identifiers"].items(), valid_flags, strict=False)
        ],
        "payload": (f"profile_engine.{raw['type'].capitalize()}", fields),
    }


_ENVELOPE = {"event_id", "type", "timestamp", "identifiers"}


def verdict(decide: Any) -> tuple[str, Any]:
    try:
        return "accepted", decide()
    except (ContractError, DecodeError) as error:
        return "refused", str(error)


@settings(max_examples=500, deadline=None)
@given(json_events(), st.lists(st.booleans(), min_size=3, max_size=3))
def test_json_and_avro_give_the_same_verdict_and_event(
    raw: dict[str, Any], valid_flags: list[bool]
) -> None:
    codec = AvroCodec()
    from_json = verdict(lambda: parse_event(raw))
    try:
        message = foreign_message(codec, as_foreign_record(raw, valid_flags))
    except (ValueError, TypeError, UnicodeEncodeError, OverflowError):
        # Avro cannot even carry it (a lone surrogate, a NUL-free rule aside): JSON refuses too.
        assert from_json[0] == "refused"
        return
    from_avro = verdict(lambda: codec.decode(message))
    assert from_avro == from_json
    if from_json[0] == "accepted":
        assert event_fingerprint(from_avro[1]) == event_fingerprint(from_json[1])


# --- the envelope reader reads exactly what fastavro reads ----------------------------------

_TEXT = st.text(max_size=70)  # lengths on both sides of the one-byte varint (64 bytes)
_LONGS = st.integers(-(2**63), 2**63 - 1)


@st.composite
def envelope_records(draw: st.DrawFn) -> dict[str, Any]:
    """Any record of the shipped envelope schema, valid Avro whatever its content."""
    schema = load_standalone()
    enums = {name: st.sampled_from(symbols) for name, symbols in _enum_symbols(schema).items()}
    identifiers = draw(
        st.lists(
            st.fixed_dictionaries(
                {"id_type": enums["IdType"], "value": _TEXT, "valid": st.booleans()}
            ),
            max_size=70,
        )
    )
    kind = draw(st.integers(0, 5))
    if kind == 0:
        value = st.none() | st.booleans() | _LONGS | st.floats() | _TEXT
        payload = (
            "profile_engine.Identify",
            {"traits": draw(st.dictionaries(_TEXT, value, max_size=70))},
        )
    elif kind == 1:
        payload = ("profile_engine.Track", {"event": draw(_TEXT), "properties_json": draw(_TEXT)})
    elif kind == 2:
        payload = (
            "profile_engine.Consent",
            {"channel": draw(enums["Channel"]), "status": draw(enums["ConsentStatus"])},
        )
    elif kind == 3:
        payload = (
            "profile_engine.Bounce",
            {"channel": draw(enums["Channel"]), "bounce_type": draw(enums["BounceType"])},
        )
    elif kind == 4:
        payload = (
            "profile_engine.Subscription",
            {
                "list_id": draw(_TEXT),
                "channel": draw(enums["Channel"]),
                "status": draw(enums["SubscriptionStatus"]),
            },
        )
    else:
        payload = ("profile_engine.Ccpa", {"request": draw(enums["CcpaRequest"])})  # fmt: skip
    sealed = draw(st.none() | st.builds(lambda b: {"fingerprint": b}, st.binary(max_size=40)))
    return {
        "event_id": draw(_TEXT),
        "type": draw(enums["EventType"]),
        "timestamp": draw(_LONGS),
        "identifiers": identifiers,
        "payload": payload,
        "sealed": sealed,
    }


def _enum_symbols(schema: Any, found: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    found = {} if found is None else found
    if isinstance(schema, list):
        for branch in schema:
            _enum_symbols(branch, found)
    elif isinstance(schema, dict):
        if schema["type"] == "enum":
            found[schema["name"]] = schema["symbols"]
        for key in ("fields", "items", "values"):
            if key in schema:
                items = schema[key]
                for item in items if isinstance(items, list) else [items]:
                    _enum_symbols(item["type"] if key == "fields" else item, found)
        if isinstance(schema["type"], dict | list):
            _enum_symbols(schema["type"], found)
    return found


def read_both(codec: AvroCodec, message: bytes) -> tuple[Any, Any]:
    def attempt(read: Any) -> Any:
        try:
            return "record", read(message)
        except DecodeError:
            return "corrupt", None

    return attempt(codec._read_own), attempt(codec.read_record)


@settings(max_examples=400, deadline=None)
@given(envelope_records())
def test_the_envelope_reader_reads_what_fastavro_reads(record: dict[str, Any]) -> None:
    codec = AvroCodec()
    assert codec.fingerprint in codec._envelopes  # the shipped schema has a layout it reads
    message = foreign_message(codec, record)
    own, library = read_both(codec, message)
    assert repr(own) == repr(library)  # repr: NaN traits compare unequal to themselves
    assert own[0] == "record"


@settings(max_examples=600, deadline=None)
@given(envelope_records(), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255),
                                               st.sampled_from(["set", "insert", "delete"])),
                                     min_size=1, max_size=3))  # fmt: skip
# The event_id's length zeroed makes its first byte the type's enum index: -7, which fastavro
# reads as a Python index from the end of the symbols.
@example(record={"event_id": "\r\x80", "type": "identify", "timestamp": -(2**63),
                 "identifiers": [], "payload": ("profile_engine.Identify", {"traits": {}}),
                 "sealed": None},
         damage=[(0, 0, "set"), (14, 1, "insert")])  # fmt: skip
def test_damaged_messages_are_refused_or_read_alike(
    record: dict[str, Any], damage: list[tuple[int, int, str]]
) -> None:
    codec = AvroCodec()
    body = bytearray(foreign_message(codec, record)[HEADER_SIZE:])
    for where, byte, how in damage:
        at = where % (len(body) + 1)
        if how == "insert":
            body.insert(at, byte)
        elif at < len(body):
            if how == "set":
                body[at] = byte
            else:
                del body[at]
    message = b"\xc3\x01" + codec.fingerprint + bytes(body)
    own, library = read_both(codec, message)
    if own[0] == "corrupt" and library[0] == "record":
        # fastavro takes a negative enum index as a Python index from the end; the Avro
        # spec, and the fast reader, refuse it. What fastavro made of such bytes is not
        # what they encode: written back, it gives other bytes.
        assert foreign_message(codec, library[1]) != message
    else:
        assert repr(own) == repr(library)


def test_a_message_in_another_schema_version_is_read_by_fastavro() -> None:
    after = AvroCodec(schema=next_schema(), known_schemas=[load_standalone()])
    assert after.fingerprint not in after._envelopes  # one more field: a layout it does not know
    before = AvroCodec()
    assert after.decode(before.encode(sample_events()[2])) == sample_events()[2]


def test_messages_of_the_first_envelope_version_are_read_by_the_fast_reader() -> None:
    # Topics written before the seal existed hold version 1 messages: read as cheaply.
    first = json.loads((SCHEMA_DIR / "profile_engine.ProfileEvent.v1.avsc").read_text())
    writer = AvroCodec(schema=first, known_schemas=[])
    reader = AvroCodec()
    assert writer.fingerprint in reader._envelopes and writer.fingerprint != reader.fingerprint
    for event in sample_events():
        message = writer.encode(event)
        assert reader._read_own(message) is not None
        assert reader.decode(message) == event


def test_varints_of_any_length_read_as_fastavro_reads_them() -> None:
    from consumers.envelope_reader import _long

    rng = random.Random(7)
    long_schema = parse_schema("long")
    for _ in range(3000):
        size = rng.randint(1, 14)
        data = bytes([rng.randint(128, 255) for _ in range(size - 1)] + [rng.randint(0, 127)])
        expected = fastavro.schemaless_reader(BytesIO(data), long_schema)
        assert _long(data, 0) == (expected, size), data.hex()


@pytest.mark.parametrize("size", [63, 64, 111, 8_191, 8_192])
def test_identifiers_with_two_byte_lengths_read_as_fastavro_reads_them(size: int) -> None:
    # A sealed identifier is a token of about a hundred characters: its length takes two
    # varint bytes, which the envelope reader reads inline.
    codec = AvroCodec()
    record = to_record(sample_events()[0])
    record["identifiers"] = [
        {"id_type": "email", "value": "t" * size, "valid": True},
        {"id_type": "phone", "value": "p" * (size + 1), "valid": False},
    ]
    message = foreign_message(codec, record)
    own, library = read_both(codec, message)
    assert own == library and own[0] == "record"
    assert [i["value"] for i in own[1]["identifiers"]] == ["t" * size, "p" * (size + 1)]
    for cut in (HEADER_SIZE + 40, len(message) - 1):  # cut inside the values
        assert read_both(codec, message[:cut]) == (("corrupt", None), ("corrupt", None))
