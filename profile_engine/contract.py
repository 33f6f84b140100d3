"""The event contract at the JSON edge: producer-side JSON events -> typed domain events.

``parse_event`` turns one JSON object into a typed domain event, or raises ``ContractError``
whose message names the field and the rule (``field: rule``, one line). The fold never sees
unvalidated input.

Two steps. First the *shape*: which fields an event of its type has, and their JSON types.
The pydantic models below define it and word its errors; a hand-written check accepts the
common well-formed shapes (``_fast_fields``) at a fraction of pydantic's cost and passes
anything else to pydantic, so verdicts and error texts are pydantic's (a differential
property test checks that the two agree). Then the *rules* (``profile_engine.rules``), the
same ones the Avro decoder and the CSV importer apply.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from profile_engine import rules
from profile_engine.events import ID_PRIORITY, ProfileEvent, datetime_to_us, iso_from_us
from profile_engine.identifiers import DEFAULT_PHONE_REGION
from profile_engine.rules import FILES_WINDOW, ContractError, EventTimeWindow

__all__ = [
    "ContractError",
    "EventIn",
    "TraitValidator",
    "event_to_json",
    "parse_event",
    "parse_event_line",
    "to_domain",
    "validate_event",
]

Scalar = str | int | float | bool | None


class IdentifiersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str | None = None
    phone: str | None = None
    customer_id: str | None = None
    anonymous_id: str | None = None
    push_token: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _scalar(cls, value: Any) -> Any:
        # Customer ids often arrive as JSON numbers; anything else but text is refused.
        return rules.scalar_id(value)


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class _EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)
    event_id: str | None = None
    timestamp: datetime
    identifiers: IdentifiersIn

    @field_validator("timestamp", mode="before")
    @classmethod
    def _iso_text(cls, value: object) -> object:
        # Left to itself the parser reads a number (or a numeric string) as seconds or
        # milliseconds since the epoch, guessing which: the contract is ISO-8601 text.
        if isinstance(value, str) and not _NUMBER.fullmatch(value.strip()):
            return value
        if value is None:
            given = "null"
        elif isinstance(value, bool):
            given = "a boolean"
        elif isinstance(value, int | float | str):
            given = "a number"
        else:
            given = f"a JSON {'object' if isinstance(value, dict) else 'array'}"
        raise ValueError(
            "timestamp must be ISO-8601 text with a UTC offset (e.g. 2026-01-01T10:00:00Z), "
            f"not {given}"
        )

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamp must carry a UTC offset (e.g. 2026-01-01T10:00:00Z)")
        return value


class IdentifyIn(_EventIn):
    type: Literal["identify"]
    traits: dict[str, Scalar] = Field(default_factory=dict)


class TrackIn(_EventIn):
    type: Literal["track"]
    event: str
    properties: dict[str, Any] = Field(default_factory=dict)


class ConsentIn(_EventIn):
    type: Literal["consent"]
    channel: Literal["email", "sms", "push"]
    status: Literal["opted_in", "opted_out", "pending", "unknown"]


class BounceIn(_EventIn):
    type: Literal["bounce"]
    channel: Literal["email", "sms", "push"]
    bounce_type: Literal["hard", "soft", "complaint"]


class SubscriptionIn(_EventIn):
    type: Literal["subscription"]
    list_id: str
    channel: Literal["email", "sms", "push"]
    status: Literal["subscribed", "unsubscribed", "unconfirmed", "suspended"]


class CcpaIn(_EventIn):
    type: Literal["ccpa"]
    request: Literal["opt_out", "opt_in", "delete"]


EventModel = IdentifyIn | TrackIn | ConsentIn | BounceIn | SubscriptionIn | CcpaIn
EventIn = Annotated[EventModel, Field(discriminator="type")]


class _Envelope(BaseModel):
    event: EventIn


_TYPE_TAGS = ("identify", "track", "consent", "bounce", "subscription", "ccpa")


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"][1:])  # [0] is the envelope
        # Drop the discriminator tag pydantic puts in the path (e.g. "identify.traits").
        for tag in _TYPE_TAGS:
            if loc.startswith(tag + "."):
                loc = loc[len(tag) + 1 :]
        if loc in _TYPE_TAGS:
            loc = "properties" if loc == "track" else "event"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "union_tag_invalid":
            message = "type must be one of identify, track, consent, bounce, subscription, ccpa"
            loc = "type"
        elif item["type"] == "union_tag_not_found":
            message, loc = "field required", "type"
        parts.append(f"{loc or 'event'}: {message}")
    return "; ".join(parts)


def validate_event(raw: Any) -> EventModel:
    """pydantic validation of one raw JSON object (no identifier normalisation)."""
    if not isinstance(raw, dict):
        raise ContractError("event: must be a JSON object")
    try:
        return _Envelope.model_validate({"event": raw}).event
    except ValidationError as error:
        raise ContractError(_describe(error)) from None


# --- shape -> domain -----------------------------------------------------------------------

# (type, event_id, timestamp µs, raw identifiers, the type's own fields in builder order)
Shape = tuple[str, str | None, int, dict[str, Any], tuple[Any, ...]]

_BUILDERS: dict[str, Callable[..., ProfileEvent]] = {
    "identify": rules.identify_event,
    "track": rules.track_event,
    "consent": rules.consent_event,
    "bounce": rules.bounce_event,
    "subscription": rules.subscription_event,
    "ccpa": rules.ccpa_event,
}

TraitValidator = Callable[[dict[str, Scalar]], dict[str, Scalar]]


def _model_shape(model: EventModel) -> Shape:
    fields: tuple[Any, ...]
    if isinstance(model, IdentifyIn):
        fields = (dict(model.traits),)
    elif isinstance(model, TrackIn):
        fields = (model.event, dict(model.properties))
    elif isinstance(model, ConsentIn):
        fields = (model.channel, model.status)
    elif isinstance(model, BounceIn):
        fields = (model.channel, model.bounce_type)
    elif isinstance(model, SubscriptionIn):
        fields = (model.list_id, model.channel, model.status)
    else:
        fields = (model.request,)
    raw_ids = model.identifiers.model_dump(exclude_none=True)
    return model.type, model.event_id, datetime_to_us(model.timestamp), raw_ids, fields


def _build(
    shape: Shape,
    phone_region: str,
    trait_validator: TraitValidator | None,
    window: EventTimeWindow,
) -> ProfileEvent:
    event_type, event_id, timestamp_us, raw_ids, fields = shape
    if trait_validator is not None and event_type == "identify":
        fields = (trait_validator(fields[0]),)
    identifiers = rules.identifiers_from_mapping(raw_ids, phone_region)
    return _BUILDERS[event_type](
        event_id or str(uuid.uuid4()), timestamp_us, identifiers, window, *fields
    )


def to_domain(
    model: EventModel,
    phone_region: str = DEFAULT_PHONE_REGION,
    window: EventTimeWindow = FILES_WINDOW,
) -> ProfileEvent:
    """Apply the rules to a validated model: the immutable domain event, or ContractError."""
    return _build(_model_shape(model), phone_region, None, window)


def parse_event(
    raw: Any,
    phone_region: str = DEFAULT_PHONE_REGION,
    trait_validator: TraitValidator | None = None,
    window: EventTimeWindow = FILES_WINDOW,
) -> ProfileEvent:
    """Raw JSON object -> domain event, or ContractError naming the field and the rule.

    ``trait_validator`` (the attribute registry, at publish and import) checks identify traits
    and returns them typed; it raises ContractError for an unregistered or ill-typed trait.
    ``window`` bounds the event time (default: the fixed window for files).
    """
    shape = _fast_fields(raw)
    if shape is not None:
        try:
            return _build(shape, phone_region, trait_validator, window)
        except ContractError:
            pass  # rare: the canonical path below words it (pydantic's shape errors first)
    return _build(_model_shape(validate_event(raw)), phone_region, trait_validator, window)


def parse_event_line(
    line: bytes | str,
    phone_region: str = DEFAULT_PHONE_REGION,
    trait_validator: TraitValidator | None = None,
    window: EventTimeWindow = FILES_WINDOW,
) -> ProfileEvent:
    """One JSON Lines line -> domain event; ContractError for bad JSON as for a bad event.

    Reads JSON exactly as ``json.loads`` does (NaN and huge integers included, so the rules
    can name them), and a line nested too deep to read is a contract error, not a crash.
    """
    raw = rules.load_json_text(line, "event")
    return parse_event(raw, phone_region, trait_validator, window)


def event_to_json(event: ProfileEvent) -> dict[str, Any]:
    """The producer-format JSON object for a domain event (inverse of parse_event)."""
    out: dict[str, Any] = {
        "event_id": event.event_id,
        "type": event.type,
        "timestamp": iso_from_us(event.timestamp_us),
        "identifiers": {i.id_type: i.value for i in event.identifiers},
    }
    out.update(event.payload())
    return out


# --- the fast shape check ------------------------------------------------------------------
#
# Accepts a subset of what the pydantic models accept, producing the same values; anything
# outside the subset (a number where text is expected, an unusual timestamp form, a missing
# or extra field, ...) returns None and pydantic decides, wording the errors.

_COMMON_FIELDS = ("event_id", "type", "timestamp", "identifiers")
_CHANNELS = frozenset({"email", "sms", "push"})
# Per type: {field: allowed values, or None for any string}, in builder order, and whether
# the type's own payload object (traits, properties) may be present.
_ENUM_FIELDS: dict[str, tuple[tuple[str, frozenset[str] | None], ...]] = {
    "consent": (
        ("channel", _CHANNELS),
        ("status", frozenset({"opted_in", "opted_out", "pending", "unknown"})),
    ),
    "bounce": (("channel", _CHANNELS), ("bounce_type", frozenset({"hard", "soft", "complaint"}))),
    "subscription": (
        ("list_id", None),
        ("channel", _CHANNELS),
        ("status", frozenset({"subscribed", "unsubscribed", "unconfirmed", "suspended"})),
    ),
    "ccpa": (("request", frozenset({"opt_out", "opt_in", "delete"})),),
}
_ALLOWED_KEYS: dict[str, frozenset[str]] = {
    "identify": frozenset({*_COMMON_FIELDS, "traits"}),
    "track": frozenset({*_COMMON_FIELDS, "event", "properties"}),
    **{
        name: frozenset({*_COMMON_FIELDS, *(f for f, _ in specs)})
        for name, specs in _ENUM_FIELDS.items()
    },
}
_ID_TYPES = frozenset(ID_PRIORITY)
_EMPTY: dict[str, Any] = {}


def _fast_fields(raw: Any) -> Shape | None:
    if type(raw) is not dict:
        return None
    event_type = raw.get("type")
    if type(event_type) is not str:
        return None
    allowed = _ALLOWED_KEYS.get(event_type)
    if allowed is None or not allowed.issuperset(raw):
        return None
    get = raw.get
    event_id = get("event_id")
    timestamp = get("timestamp")
    raw_ids = get("identifiers")
    if (
        (event_id is not None and type(event_id) is not str)
        or type(timestamp) is not str
        or type(raw_ids) is not dict
        or not _ID_TYPES.issuperset(raw_ids)
    ):
        return None
    timestamp_us = _fast_timestamp_us(timestamp)
    if timestamp_us is None:
        return None
    # Identifier values, trait values and property keys are not looked at here: the rules
    # refuse whatever pydantic would (and parse_event then lets pydantic word it).
    fields: tuple[Any, ...]
    if event_type == "track":
        name = get("event")
        properties = get("properties", _EMPTY)
        if type(name) is not str or type(properties) is not dict:
            return None
        fields = (name, dict(properties))
    elif event_type == "identify":
        traits = get("traits", _EMPTY)
        if type(traits) is not dict:
            return None
        fields = (dict(traits),)
    else:
        values = []
        for name, choices in _ENUM_FIELDS[event_type]:
            value = get(name)
            if type(value) is not str or (choices is not None and value not in choices):
                return None
            values.append(value)
        fields = tuple(values)
    return event_type, event_id, timestamp_us, raw_ids, fields


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_from_iso = datetime.fromisoformat


def _fast_timestamp_us(text: str) -> int | None:
    """µs of ``YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)``; None for any other form.

    Within that form Python's parser and pydantic's agree on what is a real time and on its
    value (the differential tests check it); other forms are left to pydantic.
    """
    if not (
        len(text) >= 20
        and text.isascii()
        and text[4] == "-"
        and text[7] == "-"
        and text[10] == "T"
        and text[13] == ":"
        and text[16] == ":"
        and (text[-1] == "Z" or (text[-3] == ":" and text[-6] in "+-"))
        and (text[19] in "Z+-" or (text[19] == "." and "0" <= text[20] <= "9"))
    ):
        return None
    try:
        moment = _from_iso(text)
    except ValueError:
        return None
    return (moment - _EPOCH) // _ONE_US
