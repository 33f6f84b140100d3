"""Typed, immutable domain events: the only thing the fold understands.

Timestamps are integer microseconds since the Unix epoch (UTC): exact, cheap to compare in
the hot loop, and the same unit as Avro's ``timestamp-micros``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson


class EventType(StrEnum):
    IDENTIFY = "identify"
    TRACK = "track"
    CONSENT = "consent"
    BOUNCE = "bounce"
    SUBSCRIPTION = "subscription"
    CCPA = "ccpa"


class IdType(StrEnum):
    CUSTOMER_ID = "customer_id"
    EMAIL = "email"
    PHONE = "phone"
    PUSH_TOKEN = "push_token"
    ANONYMOUS_ID = "anonymous_id"


# Highest priority first: decides the Kafka key and which identifier is dropped on a conflict.
ID_PRIORITY: tuple[str, ...] = tuple(t.value for t in IdType)
ID_RANK: dict[str, int] = {t: i for i, t in enumerate(ID_PRIORITY)}


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"


# The identifier type that carries each messaging channel.
CHANNEL_ID_TYPE: dict[str, str] = {"email": "email", "sms": "phone", "push": "push_token"}
ID_TYPE_CHANNEL: dict[str, str] = {v: k for k, v in CHANNEL_ID_TYPE.items()}

CONSENT_STATUSES = ("opted_in", "opted_out", "pending", "unknown")
BOUNCE_TYPES = ("hard", "soft", "complaint")
SUBSCRIPTION_STATUSES = ("subscribed", "unsubscribed", "unconfirmed", "suspended")
CCPA_REQUESTS = ("opt_out", "opt_in", "delete")

TraitValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Identifier:
    """A normalised identifier. ``valid`` is False when the syntax check failed."""

    id_type: str
    value: str
    valid: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return (self.id_type, self.value)

    def __reduce__(self) -> tuple[Any, ...]:
        # Events cross a process boundary on the consumer's hot path; the default pickling
        # of frozen slotted dataclasses is several times slower than calling the class.
        return (Identifier, (self.id_type, self.value, self.valid))


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileEvent:
    event_id: str
    timestamp_us: int
    identifiers: tuple[Identifier, ...]
    type: str = field(init=False, default="")

    @property
    def timestamp(self) -> datetime:
        return datetime_from_us(self.timestamp_us)

    def identifier(self, id_type: str) -> Identifier | None:
        for ident in self.identifiers:
            if ident.id_type == id_type:
                return ident
        return None

    def partition_key(self) -> str:
        """The highest-priority identifier as ``type:value``: one person's events keep order."""
        best = min(self.identifiers, key=lambda i: ID_RANK[i.id_type])
        return f"{best.id_type}:{best.value}"

    def payload(self) -> dict[str, Any]:
        """The type-specific fields, as plain JSON-able values."""
        return {}

    def __reduce__(self) -> tuple[Any, ...]:
        # See Identifier.__reduce__: rebuilt from its field values, several times faster.
        cls = type(self)
        names = _field_names(cls)
        return (_rebuild_event, (cls, names, tuple(getattr(self, n) for n in names)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Identify(ProfileEvent):
    traits: dict[str, TraitValue]
    type: str = field(init=False, default=EventType.IDENTIFY.value)

    def payload(self) -> dict[str, Any]:
        return {"traits": dict(self.traits)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Track(ProfileEvent):
    event: str
    properties: dict[str, Any]
    type: str = field(init=False, default=EventType.TRACK.value)

    def payload(self) -> dict[str, Any]:
        return {"event": self.event, "properties": dict(self.properties)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Consent(ProfileEvent):
    channel: str
    status: str
    type: str = field(init=False, default=EventType.CONSENT.value)

    def payload(self) -> dict[str, Any]:
        return {"channel": self.channel, "status": self.status}


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounce(ProfileEvent):
    channel: str
    bounce_type: str
    type: str = field(init=False, default=EventType.BOUNCE.value)

    def payload(self) -> dict[str, Any]:
        return {"channel": self.channel, "bounce_type": self.bounce_type}


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription(ProfileEvent):
    list_id: str
    channel: str
    status: str
    type: str = field(init=False, default=EventType.SUBSCRIPTION.value)

    def payload(self) -> dict[str, Any]:
        return {"list_id": self.list_id, "channel": self.channel, "status": self.status}


@dataclass(frozen=True, slots=True, kw_only=True)
class Ccpa(ProfileEvent):
    request: str
    type: str = field(init=False, default=EventType.CCPA.value)

    def payload(self) -> dict[str, Any]:
        return {"request": self.request}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
_set_field = object.__setattr__


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def _rebuild_event(
    cls: type[ProfileEvent], names: tuple[str, ...], values: tuple[Any, ...]
) -> ProfileEvent:
    # Every field (``type`` included) is set the way a frozen dataclass's own __init__ sets
    # it, without building keyword arguments: a fifth of the unpickling cost. Events have no
    # __post_init__, so nothing is skipped.
    event = object.__new__(cls)
    for name, value in zip(names, values, strict=True):
        _set_field(event, name, value)
    return event


EVENT_CLASSES: dict[str, type[ProfileEvent]] = {
    "identify": Identify,
    "track": Track,
    "consent": Consent,
    "bounce": Bounce,
    "subscription": Subscription,
    "ccpa": Ccpa,
}

# --- fast construction -----------------------------------------------------------------------
#
# Validation builds an event per message, and a frozen dataclass's __init__ looks up and calls
# object.__setattr__ for every field: about three times what setting the slots directly costs.
# These set exactly the fields __init__ sets, in the same order (events have no __post_init__;
# tests/profile_engine/test_events.py checks both); the result is equal to the __init__ one.

_new = object.__new__


def _slot(cls: type, name: str) -> Any:
    return getattr(cls, name).__set__


_IDENTIFIER_TYPE = _slot(Identifier, "id_type")
_IDENTIFIER_VALUE = _slot(Identifier, "value")
_IDENTIFIER_VALID = _slot(Identifier, "valid")


def new_identifier(id_type: str, value: str, valid: bool) -> Identifier:
    ident: Identifier = _new(Identifier)
    _IDENTIFIER_TYPE(ident, id_type)
    _IDENTIFIER_VALUE(ident, value)
    _IDENTIFIER_VALID(ident, valid)
    return ident


def _common_slots(cls: type) -> tuple[Any, Any, Any, Any]:
    return (
        _slot(cls, "event_id"),
        _slot(cls, "timestamp_us"),
        _slot(cls, "identifiers"),
        _slot(cls, "type"),
    )


_IDENTIFY = _common_slots(Identify)
_IDENTIFY_TRAITS = _slot(Identify, "traits")
_TRACK = _common_slots(Track)
_TRACK_EVENT, _TRACK_PROPERTIES = _slot(Track, "event"), _slot(Track, "properties")
_CONSENT = _common_slots(Consent)
_CONSENT_CHANNEL, _CONSENT_STATUS = _slot(Consent, "channel"), _slot(Consent, "status")
_BOUNCE = _common_slots(Bounce)
_BOUNCE_CHANNEL, _BOUNCE_TYPE = _slot(Bounce, "channel"), _slot(Bounce, "bounce_type")
_SUBSCRIPTION = _common_slots(Subscription)
_SUBSCRIPTION_LIST = _slot(Subscription, "list_id")
_SUBSCRIPTION_CHANNEL = _slot(Subscription, "channel")
_SUBSCRIPTION_STATUS = _slot(Subscription, "status")
_CCPA = _common_slots(Ccpa)
_CCPA_REQUEST = _slot(Ccpa, "request")


def _start(
    cls: type, slots: tuple[Any, Any, Any, Any], event_id: str, timestamp_us: int,
    identifiers: tuple[Identifier, ...], event_type: str,
) -> Any:  # fmt: skip
    event: Any = _new(cls)
    set_id, set_time, set_identifiers, set_type = slots
    set_id(event, event_id)
    set_time(event, timestamp_us)
    set_identifiers(event, identifiers)
    set_type(event, event_type)
    return event


def new_identify(
    event_id: str, timestamp_us: int, identifiers: tuple[Identifier, ...], traits: dict[str, Any]
) -> Identify:
    event: Identify = _start(Identify, _IDENTIFY, event_id, timestamp_us, identifiers, "identify")
    _IDENTIFY_TRAITS(event, traits)
    return event


def new_track(
    event_id: str,
    timestamp_us: int,
    identifiers: tuple[Identifier, ...],
    name: str,
    properties: dict[str, Any],
) -> Track:
    event: Track = _start(Track, _TRACK, event_id, timestamp_us, identifiers, "track")
    _TRACK_EVENT(event, name)
    _TRACK_PROPERTIES(event, properties)
    return event


def new_consent(
    event_id: str, timestamp_us: int, identifiers: tuple[Identifier, ...], channel: str, status: str
) -> Consent:
    event: Consent = _start(Consent, _CONSENT, event_id, timestamp_us, identifiers, "consent")
    _CONSENT_CHANNEL(event, channel)
    _CONSENT_STATUS(event, status)
    return event


def new_bounce(
    event_id: str,
    timestamp_us: int,
    identifiers: tuple[Identifier, ...],
    channel: str,
    bounce_type: str,
) -> Bounce:
    event: Bounce = _start(Bounce, _BOUNCE, event_id, timestamp_us, identifiers, "bounce")
    _BOUNCE_CHANNEL(event, channel)
    _BOUNCE_TYPE(event, bounce_type)
    return event


def new_subscription(
    event_id: str,
    timestamp_us: int,
    identifiers: tuple[Identifier, ...],
    list_id: str,
    channel: str,
    status: str,
) -> Subscription:
    event: Subscription = _start(
        Subscription, _SUBSCRIPTION, event_id, timestamp_us, identifiers, "subscription"
    )
    _SUBSCRIPTION_LIST(event, list_id)
    _SUBSCRIPTION_CHANNEL(event, channel)
    _SUBSCRIPTION_STATUS(event, status)
    return event


def new_ccpa(
    event_id: str, timestamp_us: int, identifiers: tuple[Identifier, ...], request: str
) -> Ccpa:
    event: Ccpa = _start(Ccpa, _CCPA, event_id, timestamp_us, identifiers, "ccpa")
    _CCPA_REQUEST(event, request)
    return event


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def datetime_to_us(moment: datetime) -> int:
    """Exact integer microseconds since the epoch for an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: a UTC offset is required")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def datetime_from_us(micros: int) -> datetime:
    from datetime import timedelta

    return _EPOCH + timedelta(microseconds=micros)


def iso_from_us(micros: int) -> str:
    return datetime_from_us(micros).isoformat().replace("+00:00", "Z")


# Bumped whenever the canonical form below changes; part of every fingerprint.
FINGERPRINT_VERSION = 1
FINGERPRINT_SIZE = 16


def event_fingerprint(event: ProfileEvent, key: bytes = b"") -> bytes:
    """16 bytes that differ when two events with the same event_id differ in content.

    The fold tells a redelivery (same event_id, same fingerprint: a duplicate) from a
    collision (same event_id, other content: a dead letter). The fingerprint is the BLAKE2b
    (16-byte digest) of this canonical form, compact JSON with object keys sorted at every
    level and text as UTF-8 (orjson; tests pin a known value so a change cannot go unseen)::

        [1, event_id, type, timestamp_us, [[id_type, value], ...], payload]

    ``1`` is ``FINGERPRINT_VERSION``; identifiers are in priority order, without their
    ``valid`` flag (validity is derived from the value, it is not content); ``payload`` is
    ``event.payload()``: traits, or event and properties, or the type's fields. Integers and
    floats stay apart (1 is not 1.0), and true is not 1.

    With ``key`` (a projection with a master key, see profile_engine.crypto) the hash is
    BLAKE2b keyed with it: the same canonical form, but no one without the key can compute
    or test it against guessed personal values.
    """
    canonical = orjson.dumps(
        [
            FINGERPRINT_VERSION,
            event.event_id,
            event.type,
            event.timestamp_us,
            [[ident.id_type, ident.value] for ident in event.identifiers],
            event.payload(),
        ],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.blake2b(canonical, digest_size=FINGERPRINT_SIZE, key=key).digest()
