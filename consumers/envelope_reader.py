"""A reader specialised to the shipped envelope schema: the consumer's commonest message.

fastavro interprets a schema for every message (about 70,000 machine instructions for a
small track event); the envelope's layout is fixed, so reading it field by field in plain
Python costs a fraction of that. ``EnvelopeReader.for_schema`` builds one only for a writer
schema of exactly the expected layout (field names, types and order); enum symbols and union
branches are taken from the schema itself. Any other writer schema (an older or newer
version) is read by fastavro with schema resolution, as before.

The record returned is the one fastavro returns with ``return_record_name=True``: a
differential property test (tests/consumers/test_codec.py) checks that they agree on every
message, and that a damaged message is refused by both.
"""

from __future__ import annotations

from struct import Struct
from typing import Any

Schema = dict[str, Any]

_DOUBLE = Struct("<d")


class Corrupt(Exception):
    """The bytes are not a message of the expected schema."""


_MASK64 = (1 << 64) - 1


def _long(data: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint at ``pos``: (value, next position). IndexError past the end.

    Exactly as fastavro reads one, overlong varints included: 64-bit arithmetic, and shift
    counts taken modulo 64 (what its C code does on x86-64; a test compares the two).
    """
    byte = data[pos]
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos + 1
    value = byte & 0x7F
    shift = 7
    pos += 1
    while True:
        byte = data[pos]
        pos += 1
        value = (value | ((byte & 0x7F) << (shift & 63))) & _MASK64
        if byte < 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7


def _string(data: bytes, pos: int) -> tuple[str, int]:
    size, pos = _long(data, pos)
    end = pos + size
    if size < 0 or end > len(data):
        raise Corrupt(f"a string of {size} bytes at {pos} runs past the message")
    return data[pos:end].decode(), end


def _symbol(symbols: tuple[str, ...], data: bytes, pos: int) -> tuple[str, int]:
    index, pos = _long(data, pos)
    # As fastavro does: Python indexing, so a negative index counts from the end.
    return symbols[index], pos


def _branch(index: int, count: int) -> int:
    """A union index as fastavro takes it (negative counts from the end)."""
    if index < 0:
        index += count
    if not 0 <= index < count:
        raise Corrupt(f"union branch {index}")
    return index


def _block(data: bytes, pos: int) -> tuple[int, int]:
    """The item count of an array or map block (a negative count is followed by a size)."""
    count, pos = _long(data, pos)
    if count < 0:
        count = -count
        _, pos = _long(data, pos)
    return count, pos


def _shape(schema: Any) -> Any:
    """The layout of a schema: names and types, without docs, defaults or namespaces."""
    if isinstance(schema, str):
        return schema.rsplit(".", 1)[-1]
    if isinstance(schema, list):
        return [_shape(branch) for branch in schema]
    kind = schema["type"]
    if kind == "record":
        return [str(schema["name"]).rsplit(".", 1)[-1],
                [(f["name"], _shape(f["type"])) for f in schema["fields"]]]  # fmt: skip
    if kind == "enum":
        return ["enum", str(schema["name"]).rsplit(".", 1)[-1]]
    if kind == "array":
        return ["array", _shape(schema["items"])]
    if kind == "map":
        return ["map", _shape(schema["values"])]
    return _shape(kind)


_ENUM = ["enum"]
# The layout this reader reads (a named type's later uses are references by name). A writer
# schema of any other layout is left to fastavro.
EXPECTED_LAYOUT = [
    "ProfileEvent",
    [
        ("event_id", "string"),
        ("type", [*_ENUM, "EventType"]),
        ("timestamp", "long"),
        ("identifiers", ["array", ["Identifier", [
            ("id_type", [*_ENUM, "IdType"]), ("value", "string"), ("valid", "boolean")]]]),
        ("payload", [
            ["Identify", [("traits", ["map", ["null", "boolean", "long", "double", "string"]])]],
            ["Track", [("event", "string"), ("properties_json", "string")]],
            ["Consent", [("channel", [*_ENUM, "Channel"]),
                         ("status", [*_ENUM, "ConsentStatus"])]],
            ["Bounce", [("channel", "Channel"), ("bounce_type", [*_ENUM, "BounceType"])]],
            ["Subscription", [("list_id", "string"), ("channel", "Channel"),
                              ("status", [*_ENUM, "SubscriptionStatus"])]],
            ["Ccpa", [("request", [*_ENUM, "CcpaRequest"])]],
        ]),
    ],
]  # fmt: skip
# Version 2 adds the optional seal (crypto-shredding); both are read here, so the messages
# already on a topic stay as cheap to read as new ones.
SEALED_LAYOUT = [
    EXPECTED_LAYOUT[0],
    [*EXPECTED_LAYOUT[1], ("sealed", ["null", ["Seal", [("fingerprint", "bytes")]]])],
]


def _enums(schema: Any, found: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Every enum's symbols by short name (named types are defined once, at first use)."""
    if isinstance(schema, list):
        for branch in schema:
            _enums(branch, found)
    elif isinstance(schema, dict):
        kind = schema["type"]
        if kind == "enum":
            found[str(schema["name"]).rsplit(".", 1)[-1]] = tuple(schema["symbols"])
        elif kind == "record":
            for field in schema["fields"]:
                _enums(field["type"], found)
        elif kind == "array":
            _enums(schema["items"], found)
        elif kind == "map":
            _enums(schema["values"], found)
    return found


def _full_name(named: Schema) -> str:
    name = str(named["name"])
    if "." in name or not named.get("namespace"):
        return name
    return f"{named['namespace']}.{name}"


class EnvelopeReader:
    """Reads one envelope body into fastavro's record form, for one writer schema."""

    def __init__(self, schema: Schema, sealed_field: bool = False) -> None:
        self.sealed_field = sealed_field
        enums = _enums(schema, {})
        self.event_types = enums["EventType"]
        self.id_types = enums["IdType"]
        self.channels = enums["Channel"]
        self.consent_statuses = enums["ConsentStatus"]
        self.bounce_types = enums["BounceType"]
        self.subscription_statuses = enums["SubscriptionStatus"]
        self.ccpa_requests = enums["CcpaRequest"]
        payload = next(f for f in schema["fields"] if f["name"] == "payload")["type"]
        self.payload_names = tuple(_full_name(branch) for branch in payload)
        self.seal_name = ""
        if sealed_field:
            seal = next(f for f in schema["fields"] if f["name"] == "sealed")["type"][1]
            self.seal_name = _full_name(seal)

    @classmethod
    def for_schema(cls, schema: Schema) -> EnvelopeReader | None:
        """A reader when the writer schema has exactly one of the expected layouts, else None."""
        try:
            layout = _shape(schema)
        except (KeyError, TypeError, AttributeError):
            return None
        if layout == SEALED_LAYOUT:
            return cls(schema, sealed_field=True)
        if layout == EXPECTED_LAYOUT:
            return cls(schema)
        return None

    def read(self, data: bytes, pos: int) -> dict[str, Any]:
        """The record in ``data[pos:]``; Corrupt (or IndexError, UnicodeDecodeError) if the
        bytes are not one, or not exactly one, message of this schema."""
        # Most varints here (lengths below 64, enum and branch indexes) are one byte: read
        # inline, the rest by _long. A one-byte varint b is (b >> 1) ^ -(b & 1).
        size = data[pos]
        if size < 0x80 and not size & 1:
            end = pos + 1 + (size >> 1)
            event_id = data[pos + 1 : end].decode()
            if end > len(data):
                raise Corrupt("the event id runs past the message")
            pos = end
        else:
            event_id, pos = _string(data, pos)
        index = data[pos]
        if index < 0x80 and not index & 1:
            event_type = self.event_types[index >> 1]
            pos += 1
        else:
            event_type, pos = _symbol(self.event_types, data, pos)
        timestamp, pos = _long(data, pos)
        identifiers = []
        count, pos = _block(data, pos)
        id_types = self.id_types
        while count:
            for _ in range(count):
                index = data[pos]
                size = data[pos + 1]
                if (
                    index < 0x80
                    and not (index | size) & 1
                    and (size < 0x80 or data[pos + 2] < 0x80)
                ):
                    # The type's enum index in one byte, the value's length in one, or in two
                    # (64 to 8,191 bytes: a sealed identifier's token).
                    if size < 0x80:
                        start, length = pos + 2, size >> 1
                    else:
                        start, length = pos + 3, ((data[pos + 2] << 7) | (size & 0x7F)) >> 1
                    end = start + length
                    if end >= len(data):
                        raise Corrupt("an identifier runs past the message")
                    identifiers.append(
                        {
                            "id_type": id_types[index >> 1],
                            "value": data[start:end].decode(),
                            "valid": data[end] != 0,
                        }
                    )
                    pos = end + 1
                else:
                    id_type, pos = _symbol(id_types, data, pos)
                    value, pos = _string(data, pos)
                    valid = data[pos] != 0
                    identifiers.append({"id_type": id_type, "value": value, "valid": valid})
                    pos += 1
            count, pos = _block(data, pos)
        branch = data[pos]
        if branch < 0x80:
            branch = (branch >> 1) ^ -(branch & 1)
            pos += 1
        else:
            branch, pos = _long(data, pos)
        branch = _branch(branch, 6)
        if branch == 1:  # Track, the commonest
            event, pos = _string(data, pos)
            properties_json, pos = _string(data, pos)
            fields: dict[str, Any] = {"event": event, "properties_json": properties_json}
        elif branch == 0:
            traits, pos = self._traits(data, pos)
            fields = {"traits": traits}
        elif branch == 2:
            channel, pos = _symbol(self.channels, data, pos)
            status, pos = _symbol(self.consent_statuses, data, pos)
            fields = {"channel": channel, "status": status}
        elif branch == 3:
            channel, pos = _symbol(self.channels, data, pos)
            bounce_type, pos = _symbol(self.bounce_types, data, pos)
            fields = {"channel": channel, "bounce_type": bounce_type}
        elif branch == 4:
            list_id, pos = _string(data, pos)
            channel, pos = _symbol(self.channels, data, pos)
            status, pos = _symbol(self.subscription_statuses, data, pos)
            fields = {"list_id": list_id, "channel": channel, "status": status}
        elif branch == 5:
            request, pos = _symbol(self.ccpa_requests, data, pos)
            fields = {"request": request}
        else:
            raise Corrupt(f"payload branch {branch}")
        sealed: tuple[str, dict[str, bytes]] | None = None
        if self.sealed_field:
            seal_branch, pos = _long(data, pos)
            if _branch(seal_branch, 2) == 1:
                size, pos = _long(data, pos)
                end = pos + size
                if size < 0 or end > len(data):
                    raise Corrupt(f"a fingerprint of {size} bytes at {pos} runs past the message")
                sealed = (self.seal_name, {"fingerprint": data[pos:end]})
                pos = end
        if pos != len(data):
            raise Corrupt(f"{len(data) - pos} trailing bytes")
        return {
            "event_id": event_id,
            "type": event_type,
            "timestamp": timestamp,
            "identifiers": identifiers,
            "payload": (self.payload_names[branch], fields),
            # As fastavro gives a union's record branch: (its name, its fields).
            "sealed": sealed,
        }

    def _traits(self, data: bytes, pos: int) -> tuple[dict[str, Any], int]:
        traits: dict[str, Any] = {}
        count, pos = _block(data, pos)
        while count:
            for _ in range(count):
                name, pos = _string(data, pos)
                branch, pos = _long(data, pos)
                branch = _branch(branch, 5)
                value: Any
                if branch == 4:
                    value, pos = _string(data, pos)
                elif branch == 2:
                    value, pos = _long(data, pos)
                elif branch == 0:
                    value = None
                elif branch == 1:
                    value = data[pos] != 0
                    pos += 1
                elif branch == 3:
                    if pos + 8 > len(data):
                        raise Corrupt("a double runs past the message")
                    value = _DOUBLE.unpack_from(data, pos)[0]
                    pos += 8
                else:
                    raise Corrupt(f"trait value branch {branch}")
                traits[name] = value
            count, pos = _block(data, pos)
        return traits, pos
