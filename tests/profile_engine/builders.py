"""Small builders for hand-made logs of domain events."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count
from typing import Any

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
from profile_engine.identifiers import normalise_all

_ids = count(1)
BASE = datetime(2026, 3, 1, tzinfo=UTC)


def at(minute: int) -> int:
    """Event time ``minute`` minutes after a fixed base, in µs."""
    return datetime_to_us(BASE) + minute * 60_000_000


def idents(**raw: Any) -> tuple[Identifier, ...]:
    return normalise_all(raw)


def _common(minute: int, event_id: str | None, raw_ids: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": event_id or f"e{next(_ids):06d}",
        "timestamp_us": at(minute),
        "identifiers": idents(**raw_ids),
    }


def identify(minute: int, traits: dict[str, Any] | None = None, *, eid: str | None = None,
             **ids: Any) -> ProfileEvent:  # fmt: skip
    return Identify(traits=traits or {}, **_common(minute, eid, ids))


def track(minute: int, name: str = "page_viewed", properties: dict[str, Any] | None = None,
          *, eid: str | None = None, **ids: Any) -> ProfileEvent:  # fmt: skip
    return Track(event=name, properties=properties or {}, **_common(minute, eid, ids))


def purchase(minute: int, order_id: str, revenue: float, *, eid: str | None = None,
             **ids: Any) -> ProfileEvent:  # fmt: skip
    props = {"order_id": order_id, "revenue": revenue}
    return Track(event="purchase", properties=props, **_common(minute, eid, ids))


def consent(minute: int, channel: str, status: str, *, eid: str | None = None,
            **ids: Any) -> ProfileEvent:  # fmt: skip
    return Consent(channel=channel, status=status, **_common(minute, eid, ids))


def bounce(minute: int, channel: str, bounce_type: str, *, eid: str | None = None,
           **ids: Any) -> ProfileEvent:  # fmt: skip
    return Bounce(channel=channel, bounce_type=bounce_type, **_common(minute, eid, ids))


def subscription(minute: int, list_id: str, channel: str, status: str, *,
                 eid: str | None = None, **ids: Any) -> ProfileEvent:  # fmt: skip
    return Subscription(
        list_id=list_id, channel=channel, status=status, **_common(minute, eid, ids)
    )


def ccpa(minute: int, request: str, *, eid: str | None = None, **ids: Any) -> ProfileEvent:
    return Ccpa(request=request, **_common(minute, eid, ids))
