"""Avro single-object encoding of domain events, and decoding with schema resolution.

A message is ``0xC3 0x01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the writer
schema's Parsing Canonical Form, then the Avro binary body. The fingerprint tells the decoder
which writer schema to resolve against its own reader schema, so producers and consumers can
be upgraded independently as long as every schema change is compatible (see schemas/README.md).

``decode`` is on the fold's hot path: readers are resolved once per fingerprint, timestamps are
read as plain longs (no datetime round trip) and events are built directly from the record.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterable, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
import orjson
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

import schemas
from consumers.envelope_reader import Corrupt, EnvelopeReader
from consumers.record_batches import varint
from profile_engine import rules
from profile_engine.errors import BadInput
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
from profile_engine.identifiers import DEFAULT_PHONE_REGION
from profile_engine.rules import FILES_WINDOW, ContractError, EventTimeWindow
from profile_engine.sealing import SEALED_WITHOUT_KEY, SealedFields, seal_of

SCHEMA_DIR = Path(schemas.__file__).parent
NAMESPACE = "profile_engine"
ENVELOPE_NAME = f"{NAMESPACE}.ProfileEvent"
# Older envelope versions kept so their messages still decode: standalone (expanded) schemas.
HISTORY_GLOB = f"{ENVELOPE_NAME}.v*.avsc"
MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
# The enum symbol an older reader sees for a symbol added after it was built (enum default).
UNRECOGNISED = "unrecognised"

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_PAYLOAD_RECORD = {
    "identify": f"{NAMESPACE}.Identify",
    "track": f"{NAMESPACE}.Track",
    "consent": f"{NAMESPACE}.Consent",
    "bounce": f"{NAMESPACE}.Bounce",
    "subscription": f"{NAMESPACE}.Subscription",
    "ccpa": f"{NAMESPACE}.Ccpa",
}
_RECORD_TYPE = {record: event_type for event_type, record in _PAYLOAD_RECORD.items()}

Schema = dict[str, Any]


class DecodeError(BadInput):
    """A message that cannot become a domain event: terminal, it goes to the dead letters."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EncodeError(BadInput):
    """A domain event the envelope cannot carry (e.g. an integer trait beyond 64 bits)."""


# --- schema files --------------------------------------------------------------------------


def load_standalone(name: str = ENVELOPE_NAME, schema_dir: Path = SCHEMA_DIR) -> Schema:
    """The named schema with every referenced type inlined at its first use.

    Each named type lives in ``<full name>.avsc`` beside the others; references must use full
    names. The result is one self-contained JSON schema, the form a schema registry would hold.
    """
    defined: set[str] = set()

    def resolve(node: Any) -> Any:
        if isinstance(node, str):
            if node in _PRIMITIVES or node in defined:
                return node
            path = schema_dir / f"{node}.avsc"
            if not path.exists():
                raise FileNotFoundError(f"schema {node!r} not found: expected {path.name}")
            return resolve(json.loads(path.read_text(encoding="utf-8")))
        if isinstance(node, list):
            return [resolve(branch) for branch in node]
        node = dict(node)
        kind = node["type"]
        if kind in ("record", "enum", "fixed"):
            defined.add(_full_name(node))
            if kind == "record":
                node["fields"] = [{**f, "type": resolve(f["type"])} for f in node["fields"]]
        elif kind == "array":
            node["items"] = resolve(node["items"])
        elif kind == "map":
            node["values"] = resolve(node["values"])
        else:  # a primitive with attributes (logicalType) or a nested type reference
            node["type"] = resolve(kind)
        return node

    return dict(resolve(name))


def _full_name(named: Schema) -> str:
    name = str(named["name"])
    if "." in name or not named.get("namespace"):
        return name
    return f"{named['namespace']}.{name}"


def history_schemas(schema_dir: Path = SCHEMA_DIR) -> list[Schema]:
    """Older envelope versions shipped beside the current one (standalone JSON each)."""
    return [
        json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(schema_dir.glob(HISTORY_GLOB))
    ]


def without_logical_types(node: Any) -> Any:
    """A copy that reads timestamps as plain longs: same canonical form, no datetime cost."""
    if isinstance(node, dict):
        return {k: without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [without_logical_types(v) for v in node]
    return node


def schema_fingerprint(schema: Schema) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form (LE)."""
    canonical = to_parsing_canonical_form(parse_schema(schema))
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


class SchemaStore:
    """Writer schemas by fingerprint: the current one, shipped history, runtime registrations."""

    def __init__(self, schemas_: Iterable[Schema] = ()) -> None:
        self._by_fingerprint: dict[bytes, Schema] = {}
        for schema in schemas_:
            self.register(schema)

    def register(self, schema: Schema) -> bytes:
        key = schema_fingerprint(schema)
        self._by_fingerprint[key] = schema
        return key

    def get(self, key: bytes) -> Schema | None:
        return self._by_fingerprint.get(key)

    @property
    def fingerprints(self) -> list[bytes]:
        return list(self._by_fingerprint)


# --- domain <-> record ---------------------------------------------------------------------


def to_record(event: ProfileEvent, seal: SealedFields | None = None) -> dict[str, Any]:
    """The envelope record of a domain event (payload as fastavro's (record name, fields));
    with ``seal``, its personal values are the seal's tokens (profile_engine.sealing)."""
    values = [i.value for i in event.identifiers] if seal is None else seal.identifiers
    payload = _payload_record(event)
    if seal is not None and isinstance(event, Identify):
        payload = {"traits": dict(seal.traits or {})}
    elif seal is not None and isinstance(event, Track):
        payload = {**payload, "properties_json": seal.properties}
    return {
        "event_id": event.event_id,
        "type": event.type,
        "timestamp": event.timestamp_us,
        "identifiers": [
            {"id_type": i.id_type, "value": value, "valid": i.valid}
            for i, value in zip(event.identifiers, values, strict=True)
        ],
        "payload": (_PAYLOAD_RECORD[event.type], payload),
        "sealed": None if seal is None else {"fingerprint": seal.fingerprint},
    }


_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def _payload_record(event: ProfileEvent) -> dict[str, Any]:
    if isinstance(event, Identify):
        for name, value in event.traits.items():
            # fastavro would quietly write such an int as a double and lose digits.
            if type(value) is int and not _LONG_MIN <= value <= _LONG_MAX:
                raise EncodeError(f"traits.{name}: integer outside the 64-bit range")
        return {"traits": event.traits}
    if isinstance(event, Track):
        properties = _properties_json(event.properties).decode()
        return {"event": event.event, "properties_json": properties}
    return event.payload()


def _properties_json(properties: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (orjson: ten times cheaper than json.dumps, and what decode reads)."""
    return orjson.dumps(properties)


# --- the envelope writer -----------------------------------------------------------------------


_DOUBLE = struct.Struct("<d")


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return varint(len(data)) + data


def _shape(node: Any) -> Any:
    """The schema with docs, defaults and enum symbols left out: what the writer relies on."""
    if isinstance(node, dict):
        if node.get("type") == "enum":
            return {"type": "enum", "name": node["name"]}
        return {k: _shape(v) for k, v in node.items() if k not in ("doc", "default")}
    if isinstance(node, list):
        return [_shape(v) for v in node]
    return node


def _enums(node: Any, found: dict[str, list[str]]) -> dict[str, list[str]]:
    if isinstance(node, dict):
        if node.get("type") == "enum":
            found[node["name"]] = list(node["symbols"])
        for value in node.values():
            _enums(value, found)
    elif isinstance(node, list):
        for value in node:
            _enums(value, found)
    return found


# sha256 of the JSON of _shape(envelope) for the envelope EnvelopeWriter was written for. A new
# field or type changes it, and the codec falls back to fastavro (tests tell you to update).
WRITER_SHAPE = "27069c653448a0ac"


def schema_shape(schema: Schema) -> str:
    text = json.dumps(_shape(schema), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class EnvelopeWriter:
    """Writes the Avro body of a domain event for the current envelope, without fastavro.

    fastavro walks a record dict field by field and tries each union branch in turn; this
    writes the known layout directly from the event, about four times cheaper. It yields the
    same bytes as fastavro (tests compare both on every event shape), and the codec only uses it
    when the schema has the shape it was written for. Enum symbols come from the schema, so
    adding a symbol needs no change here.
    """

    def __init__(self, schema: Schema) -> None:
        enums = _enums(schema, {})
        index = {name: {s: varint(i) for i, s in enumerate(syms)} for name, syms in enums.items()}
        self._event_type = index["EventType"]
        self._id_type = index["IdType"]
        self._channel = index["Channel"]
        self._consent = index["ConsentStatus"]
        self._bounce = index["BounceType"]
        self._subscription = index["SubscriptionStatus"]
        self._ccpa = index["CcpaRequest"]
        branches = next(f["type"] for f in schema["fields"] if f["name"] == "payload")
        self._branch = {
            _RECORD_TYPE[f"{NAMESPACE}.{b['name']}"]: varint(i) for i, b in enumerate(branches)
        }

    def __call__(self, event: ProfileEvent, seal: SealedFields | None = None) -> bytes:
        event_type = event.type
        parts = [_string(event.event_id), self._event_type[event_type], varint(event.timestamp_us)]
        identifiers = event.identifiers
        if identifiers:
            parts.append(varint(len(identifiers)))
            id_type = self._id_type
            tokens = seal.identifiers if seal is not None else None
            for position, ident in enumerate(identifiers):
                text = ident.value if tokens is None else tokens[position]
                value = text.encode("utf-8")
                parts += (
                    id_type[ident.id_type],
                    varint(len(value)),
                    value,
                    b"\x01" if ident.valid else b"\x00",
                )
        parts.append(b"\x00")
        parts.append(self._branch[event_type])
        if type(event) is Track:
            parts.append(_string(event.event))
            if seal is not None and seal.properties is not None:
                properties = seal.properties.encode()
            else:
                properties = _properties_json(event.properties)
            parts.append(varint(len(properties)))
            parts.append(properties)
        elif type(event) is Identify:
            self._traits(event.traits if seal is None else (seal.traits or {}), parts)
        elif type(event) is Consent:
            parts.append(self._channel[event.channel])
            parts.append(self._consent[event.status])
        elif type(event) is Subscription:
            parts.append(_string(event.list_id))
            parts.append(self._channel[event.channel])
            parts.append(self._subscription[event.status])
        elif type(event) is Bounce:
            parts.append(self._channel[event.channel])
            parts.append(self._bounce[event.bounce_type])
        elif type(event) is Ccpa:
            parts.append(self._ccpa[event.request])
        else:
            raise TypeError(f"no envelope branch for {type(event).__name__}")
        if seal is None:
            parts.append(b"\x00")  # sealed: the null branch
        else:
            parts.append(b"\x02")  # sealed: the Seal branch
            parts.append(varint(len(seal.fingerprint)))
            parts.append(seal.fingerprint)
        return b"".join(parts)

    @staticmethod
    def _traits(traits: dict[str, Any], parts: list[bytes]) -> None:
        # map<union[null, boolean, long, double, string]>: the branch order of the schema.
        if traits:
            parts.append(varint(len(traits)))
            for name, value in traits.items():
                parts.append(_string(name))
                kind = type(value)
                if value is None:
                    parts.append(b"\x00")
                elif kind is bool:
                    parts.append(b"\x02\x01" if value else b"\x02\x00")
                elif kind is int:
                    if not _LONG_MIN <= value <= _LONG_MAX:
                        raise EncodeError(f"traits.{name}: integer outside the 64-bit range")
                    parts.append(b"\x04" + varint(value))
                elif kind is float:
                    parts.append(b"\x06" + _DOUBLE.pack(value))
                elif kind is str:
                    parts.append(b"\x08" + _string(value))
                else:
                    raise ValueError(f"traits.{name}: {kind.__name__} is not a trait value")
        parts.append(b"\x00")


def from_record(record: dict[str, Any], window: EventTimeWindow = FILES_WINDOW) -> ProfileEvent:
    """A domain event from an envelope record; DecodeError for contract breaks.

    A foreign producer can write valid Avro that still breaks the contract (an unknown type,
    junk identifiers only, a consent without the channel's identifier, a NaN trait, a purchase
    without revenue, an event time outside ``window``...): the rules of
    ``profile_engine.rules`` decide, with the same reasons as for a JSON event. Identifiers
    are normalised and judged again from their value; the ``valid`` flag on the wire is
    ignored.
    """
    if seal_of(record) is not None:
        raise DecodeError(SEALED_WITHOUT_KEY)
    return _event(record, window, None, None)


def from_opened_record(
    record: dict[str, Any],
    window: EventTimeWindow,
    identifiers: tuple[Identifier, ...],
    fields: dict[str, Any] | None,
) -> ProfileEvent:
    """The domain event of a *sealed* envelope record, from its values as opened
    (profile_engine.sealing): ``identifiers`` already judged by the rule book, ``fields``
    the payload with its personal values opened (None: the record's own, nothing sealed in
    it). Everything else in clear (event id, time, names, channels, statuses) and the opened
    traits or properties go through the same rules as ``from_record``; the identifiers are
    not judged again, and no clear record is built."""
    return _event(record, window, identifiers, fields)


def _event(
    record: dict[str, Any],
    window: EventTimeWindow,
    identifiers: tuple[Identifier, ...] | None,
    fields: dict[str, Any] | None,
) -> ProfileEvent:
    event_type = record["type"]
    payload = record["payload"]
    if isinstance(payload, tuple):
        record_name, own_fields = payload
        if _RECORD_TYPE.get(record_name) != event_type and event_type in _PAYLOAD_RECORD:
            raise DecodeError(f"payload: a {event_type} event cannot carry a {record_name}")
    else:  # read without record names (e.g. a plain container file reader)
        own_fields = payload
    if fields is None:
        fields = own_fields
    timestamp = record["timestamp"]
    if type(timestamp) is not int:
        timestamp = datetime_to_us(timestamp)  # a reader that kept the logical type
    try:
        # The payload's own shape first, then identifiers, then the rules (as for JSON).
        if event_type == "track":
            properties, proven = rules.read_properties(fields["properties_json"])
            if type(properties) is not dict:
                raise DecodeError("properties: must be a JSON object")
            return rules.track_event(
                record["event_id"],
                timestamp,
                _identifiers(record["identifiers"]) if identifiers is None else identifiers,
                window,
                fields["event"],
                properties,
                proven,
            )
        if event_type == "identify":
            return rules.identify_event(
                record["event_id"],
                timestamp,
                _identifiers(record["identifiers"]) if identifiers is None else identifiers,
                window,
                fields["traits"],
            )
        reader = _READERS.get(event_type)
        if reader is None:
            raise DecodeError(f"type: unknown event type {event_type!r}")
        own = reader(fields)
        if identifiers is None:
            identifiers = _identifiers(record["identifiers"])
        return _EVENTS[event_type](record["event_id"], timestamp, identifiers, window, *own)
    except ContractError as error:
        raise DecodeError(str(error)) from None


def _identifiers(raw: Sequence[dict[str, Any]]) -> tuple[Identifier, ...]:
    known = rules.known_identifiers(raw, DEFAULT_PHONE_REGION)
    if known is not None:
        return known
    # Identifier types added after this reader was built read as UNRECOGNISED: ignored.
    return rules.identifiers_from_pairs(
        [(item["id_type"], item["value"]) for item in raw if item["id_type"] != UNRECOGNISED],
        DEFAULT_PHONE_REGION,
    )


def _known(field: str, value: str) -> str:
    if value == UNRECOGNISED:
        raise DecodeError(f"{field}: a value this reader does not know")
    return value


# The other types' payload records -> the arguments of their rules.*_event builder.


def _consent(fields: dict[str, Any]) -> tuple[Any, ...]:
    return _known("channel", fields["channel"]), _known("status", fields["status"])


def _bounce(fields: dict[str, Any]) -> tuple[Any, ...]:
    return _known("channel", fields["channel"]), _known("bounce_type", fields["bounce_type"])


def _subscription(fields: dict[str, Any]) -> tuple[Any, ...]:
    return (
        fields["list_id"],
        _known("channel", fields["channel"]),
        _known("status", fields["status"]),
    )


def _ccpa(fields: dict[str, Any]) -> tuple[Any, ...]:
    return (_known("request", fields["request"]),)


_READERS: dict[str, Callable[[dict[str, Any]], tuple[Any, ...]]] = {
    "consent": _consent,
    "bounce": _bounce,
    "subscription": _subscription,
    "ccpa": _ccpa,
}
_EVENTS: dict[str, Callable[..., ProfileEvent]] = {
    "consent": rules.consent_event,
    "bounce": rules.bounce_event,
    "subscription": rules.subscription_event,
    "ccpa": rules.ccpa_event,
}


# --- the codec -----------------------------------------------------------------------------


class AvroCodec:
    """Encodes with one writer schema; decodes any known writer schema into its reader schema.

    ``schema`` (default: the envelope in schemas/) is both what ``encode`` writes and what
    ``decode`` resolves to. ``known_schemas`` (default: the history shipped in schemas/) are
    older writer versions whose messages may still be on the topic.
    """

    def __init__(
        self, schema: Schema | None = None, known_schemas: Iterable[Schema] | None = None
    ) -> None:
        self.schema: Schema = schema if schema is not None else load_standalone()
        self._writer = parse_schema(self.schema)
        self._reader = parse_schema(without_logical_types(self.schema))
        # What decoders resolve to: timestamps stay plain longs (no datetime round trip).
        self.reader_schema = self._reader
        self.fingerprint = schema_fingerprint(self.schema)
        self._header = MAGIC + self.fingerprint
        fast = schema_shape(self.schema) == WRITER_SHAPE
        self._fast_writer = EnvelopeWriter(self.schema) if fast else None
        history = history_schemas() if known_schemas is None else list(known_schemas)
        self.store = SchemaStore([*history, self.schema])
        self._readers: dict[bytes, Any] = {}
        # Messages written with this very schema (the commonest), or with an earlier envelope
        # of a layout the fast reader knows, skip fastavro's interpreter.
        self._envelopes: dict[bytes, EnvelopeReader] = {}
        for known in [*history, self.schema]:
            envelope = EnvelopeReader.for_schema(known)
            if envelope is not None:
                self._envelopes[schema_fingerprint(known)] = envelope

    @property
    def fast_encoding(self) -> bool:
        """True when ``encode`` writes with EnvelopeWriter (the schema has its shape)."""
        return self._fast_writer is not None

    def register(self, writer_schema: Schema) -> bytes:
        """Teach the decoder a writer schema (e.g. fetched from a registry); its fingerprint."""
        return self.store.register(writer_schema)

    def encode(self, event: ProfileEvent, seal: SealedFields | None = None) -> bytes:
        """The single-object message of an event; EncodeError when the envelope cannot carry it.
        With ``seal`` its personal values are written as the seal's tokens."""
        if self._fast_writer is not None:
            try:
                return self._header + self._fast_writer(event, seal)
            except EncodeError:
                raise
            except (KeyError, ValueError, TypeError, OverflowError) as error:
                reason = f"{type(error).__name__}: {error}"
                raise EncodeError(f"{event.type} event {event.event_id}: {reason}") from None
        buffer = BytesIO()
        buffer.write(self._header)
        try:
            fastavro.schemaless_writer(buffer, self._writer, to_record(event, seal))
        except (ValueError, TypeError, OverflowError) as error:
            raise EncodeError(f"{event.type} event {event.event_id}: {error}") from None
        return buffer.getvalue()

    def read_record(self, data: bytes) -> dict[str, Any]:
        """The envelope record resolved to the reader schema, without contract checks."""
        if data[:2] != MAGIC or len(data) < HEADER_SIZE:
            raise DecodeError("bad magic: not an Avro single-object message (0xC3 0x01)")
        key = data[2:HEADER_SIZE]
        writer = self._readers.get(key)
        if writer is None:
            writer = self._writer_for(key)
        buffer = BytesIO(data)
        buffer.seek(HEADER_SIZE)
        try:
            record: Any = fastavro.schemaless_reader(
                buffer, writer, self._reader if writer is not self._reader else None, True
            )
        except Exception as error:  # any failure inside the body is corruption
            raise DecodeError(f"corrupt body: {type(error).__name__}: {error}") from None
        if buffer.tell() != len(data):
            raise DecodeError(f"corrupt body: {len(data) - buffer.tell()} trailing bytes")
        return record

    def _read_own(self, data: bytes) -> dict[str, Any] | None:
        """The record of a message in a schema the fast reader knows, or None to use fastavro."""
        envelope = self._envelopes.get(data[2:HEADER_SIZE])
        if envelope is None or data[:2] != MAGIC:
            return None
        try:
            return envelope.read(data, HEADER_SIZE)
        except Corrupt as error:
            raise DecodeError(f"corrupt body: {error}") from None
        except (IndexError, UnicodeDecodeError) as error:
            raise DecodeError(f"corrupt body: {type(error).__name__}: {error}") from None

    def _writer_for(self, key: bytes) -> Any:
        schema = self.store.get(key)
        if schema is None:
            raise DecodeError(f"unknown fingerprint: writer schema {key.hex()} is not registered")
        if key == self.fingerprint:
            parsed = self._reader  # same canonical form: no resolution needed
        else:
            parsed = parse_schema(without_logical_types(schema))
        self._readers[key] = parsed
        return parsed

    def record(self, data: bytes) -> dict[str, Any]:
        """The envelope record of a message (the fast reader for this codec's own schema,
        else fastavro with resolution), without contract checks; DecodeError if unusable."""
        record = self._read_own(data)
        return record if record is not None else self.read_record(data)

    def decode(self, data: bytes, window: EventTimeWindow = FILES_WINDOW) -> ProfileEvent:
        """One message -> domain event; DecodeError(reason) for anything unusable.

        ``window`` bounds the event time: a consumer passes
        ``rules.window_for_record(<the record's Kafka timestamp>)``; the default is the fixed
        window for files.
        """
        record = self.record(data)
        try:
            return from_record(record, window)
        except DecodeError:
            raise
        except (KeyError, TypeError, AttributeError) as error:  # a reader schema mismatch
            raise DecodeError(f"record: {type(error).__name__}: {error}") from None

    def decode_many(
        self, messages: Iterable[bytes], window: EventTimeWindow = FILES_WINDOW
    ) -> list[ProfileEvent | DecodeError]:
        """Decode a batch; a bad message becomes its DecodeError in place, never an exception."""
        decode = self.decode
        results: list[ProfileEvent | DecodeError] = []
        append = results.append
        for data in messages:
            try:
                append(decode(data, window))
            except DecodeError as error:
                append(error)
        return results
