"""The event contract at the boundary: pydantic models for producer-side JSON events.

``parse_event`` turns one JSON object into a typed domain event, or raises ``ContractError``
whose message names the field and the rule. The fold never sees unvalidated input.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from profile_engine.errors import BadInput
from profile_engine.events import (
    CHANNEL_ID_TYPE,
    Bounce,
    Ccpa,
    Consent,
    Identify,
    ProfileEvent,
    Subscription,
    Track,
    datetime_to_us,
    iso_from_us,
)
from profile_engine.identifiers import DEFAULT_PHONE_REGION, is_junk, normalise_all

Scalar = str | int | float | bool | None


class ContractError(BadInput):
    """An event that breaks the contract: terminal, never retried."""


class IdentifiersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str | None = None
    phone: str | None = None
    customer_id: str | None = None
    anonymous_id: str | None = None
    push_token: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        # Customer ids often arrive as JSON numbers; bools are never identifiers.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value


class _EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)
    event_id: str | None = None
    timestamp: datetime
    identifiers: IdentifiersIn

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
    event: Annotated[str, Field(min_length=1)]
    properties: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _purchase_fields(self) -> TrackIn:
        # Orders are folded from purchases, so a purchase must say which order and how much.
        if self.event == "purchase":
            order_id = self.properties.get("order_id")
            revenue = self.properties.get("revenue")
            if is_junk(order_id) or isinstance(order_id, bool | dict | list):
                raise ValueError("a purchase needs properties.order_id (string or number)")
            if isinstance(revenue, bool) or not isinstance(revenue, int | float):
                raise ValueError("a purchase needs a numeric properties.revenue")
        return self


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
    list_id: Annotated[str, Field(min_length=1)]
    channel: Literal["email", "sms", "push"]
    status: Literal["subscribed", "unsubscribed", "unconfirmed", "suspended"]


class CcpaIn(_EventIn):
    type: Literal["ccpa"]
    request: Literal["opt_out", "opt_in", "delete"]


EventIn = Annotated[
    IdentifyIn | TrackIn | ConsentIn | BounceIn | SubscriptionIn | CcpaIn,
    Field(discriminator="type"),
]


class _Envelope(BaseModel):
    event: EventIn


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"][1:])  # [0] is the envelope
        # Drop the discriminator tag pydantic puts in the path (e.g. "identify.traits").
        for tag in ("identify.", "track.", "consent.", "bounce.", "subscription.", "ccpa."):
            if loc.startswith(tag):
                loc = loc[len(tag) :]
        if loc in {"identify", "track", "consent", "bounce", "subscription", "ccpa"}:
            loc = "properties" if loc == "track" else "event"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "union_tag_invalid":
            message = "type must be one of identify, track, consent, bounce, subscription, ccpa"
            loc = "type"
        elif item["type"] == "union_tag_not_found":
            message, loc = "field required", "type"
        parts.append(f"{loc or 'event'}: {message}")
    return "; ".join(parts)


def validate_event(raw: Any) -> EventIn:
    """pydantic validation of one raw JSON object (no identifier normalisation)."""
    if not isinstance(raw, dict):
        raise ContractError("event: must be a JSON object")
    try:
        return _Envelope.model_validate({"event": raw}).event
    except ValidationError as error:
        raise ContractError(_describe(error)) from None


def to_domain(model: EventIn, phone_region: str = DEFAULT_PHONE_REGION) -> ProfileEvent:
    """Normalise identifiers and build the immutable domain event."""
    raw_ids = model.identifiers.model_dump(exclude_none=True)
    identifiers = normalise_all(raw_ids, phone_region)
    if not identifiers:
        raise ContractError("identifiers: at least one usable identifier is required")
    common: dict[str, Any] = {
        "event_id": model.event_id or str(uuid.uuid4()),
        "timestamp_us": datetime_to_us(model.timestamp),
        "identifiers": identifiers,
    }
    if isinstance(model, IdentifyIn):
        return Identify(traits=dict(model.traits), **common)
    if isinstance(model, TrackIn):
        return Track(event=model.event, properties=dict(model.properties), **common)
    channel_events = (ConsentIn, BounceIn)
    if isinstance(model, channel_events):
        needed = CHANNEL_ID_TYPE[model.channel]
        if not any(i.id_type == needed for i in identifiers):
            raise ContractError(
                f"identifiers.{needed}: a {model.type} event for channel {model.channel} "
                f"must carry a usable {needed}"
            )
    if isinstance(model, ConsentIn):
        return Consent(channel=model.channel, status=model.status, **common)
    if isinstance(model, BounceIn):
        return Bounce(channel=model.channel, bounce_type=model.bounce_type, **common)
    if isinstance(model, SubscriptionIn):
        return Subscription(
            list_id=model.list_id, channel=model.channel, status=model.status, **common
        )
    assert isinstance(model, CcpaIn)
    return Ccpa(request=model.request, **common)


TraitValidator = Callable[[dict[str, Scalar]], dict[str, Scalar]]


def parse_event(
    raw: Any,
    phone_region: str = DEFAULT_PHONE_REGION,
    trait_validator: TraitValidator | None = None,
) -> ProfileEvent:
    """Raw JSON object -> domain event, or ContractError naming the field and the rule.

    ``trait_validator`` (the attribute registry, at publish and import) checks identify traits
    and returns them typed; it raises ContractError for an unregistered or ill-typed trait.
    """
    model = validate_event(raw)
    if trait_validator is not None and isinstance(model, IdentifyIn):
        model.traits = trait_validator(model.traits)
    return to_domain(model, phone_region)


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
