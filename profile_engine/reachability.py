"""Reachability settings: their names, defaults and how a user's text becomes a typed value.

The rules themselves run as SQL views over the projections (projections/views.sql), so that
`counts`, `sql` users and exports agree. This module is the single source of the setting
names and defaults; views.sql repeats the defaults in SQL and a test keeps the two in sync.
Values are stored JSON-encoded in the projection table ``settings(key, value)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from profile_engine.errors import BadInput
from profile_engine.events import CHANNEL_ID_TYPE, ID_TYPE_CHANNEL, Channel

CHANNELS: tuple[str, ...] = tuple(c.value for c in Channel)

SettingValue = bool | int | list[str]


class SettingError(BadInput):
    """An unknown setting name or a value of the wrong type; the message is one line."""


@dataclass(frozen=True, slots=True)
class Setting:
    key: str
    kind: str  # boolean | non_negative_integer | string_list
    default: SettingValue
    description: str


def _channel_settings() -> list[Setting]:
    implicit_defaults = {"email": True, "sms": False, "push": True}
    settings = []
    for channel in CHANNELS:
        settings.append(
            Setting(
                f"ccpa_blocks.{channel}",
                "boolean",
                True,
                f"a CCPA opted-out profile is unreachable on {channel}",
            )
        )
    for channel in CHANNELS:
        settings.append(
            Setting(
                f"implicit_consent.{channel}",
                "boolean",
                implicit_defaults[channel],
                f"unknown consent counts as consent on {channel}",
            )
        )
    return settings


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in [
        *_channel_settings(),
        Setting(
            "mau.excluded_events",
            "string_list",
            ["message_sent"],
            "track event names that are not activity for monthly active users",
        ),
        Setting(
            "bounce.soft_bounce_limit",
            "non_negative_integer",
            0,
            "this many consecutive soft bounces make an identifier undeliverable (0 = off)",
        ),
    ]
}

DEFAULTS: dict[str, SettingValue] = {key: s.default for key, s in SETTINGS.items()}


def setting(key: str) -> Setting:
    try:
        return SETTINGS[key]
    except KeyError:
        known = ", ".join(SETTINGS)
        raise SettingError(f"unknown setting {key!r}; known settings: {known}") from None


# The largest integer setting: SQL reads integer settings as 32-bit INTEGERs, and no count or
# limit needs more.
MAX_INTEGER = 2**31 - 1


def parse_value(key: str, text: str) -> SettingValue:
    """The typed value of a setting from command-line text, or SettingError naming the rule."""
    kind = setting(key).kind
    if kind == "boolean":
        return _parse_boolean(key, text)
    if kind == "non_negative_integer":
        return _parse_non_negative_integer(key, text)
    return _parse_string_list(key, text)


def validate_value(key: str, value: Any) -> SettingValue:
    """Check an already-typed value (e.g. decoded from the settings table)."""
    kind = setting(key).kind
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "non_negative_integer" and _is_int(value) and 0 <= value <= MAX_INTEGER:
        return int(value)
    if kind == "string_list" and isinstance(value, list) and all(_is_name(v) for v in value):
        return list(value)
    raise SettingError(f"{key}: {json.dumps(value)} is not a {_kind_text(kind)}")


def encode_value(key: str, value: SettingValue) -> str:
    """The canonical JSON text stored in the settings table."""
    return json.dumps(validate_value(key, value))


def decode_value(key: str, text: str) -> SettingValue:
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError:
        raise SettingError(f"{key}: stored value {text!r} is not JSON") from None
    return validate_value(key, decoded)


def _parse_boolean(key: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    raise SettingError(f"{key}: {text!r} is not a boolean (use true or false)")


def _parse_non_negative_integer(key: str, text: str) -> int:
    stripped = text.strip()
    if stripped.isascii() and stripped.isdigit() and int(stripped) <= MAX_INTEGER:
        return int(stripped)
    raise SettingError(f"{key}: {text!r} is not a {_kind_text('non_negative_integer')}")


def _parse_string_list(key: str, text: str) -> list[str]:
    """A JSON array of names, or a comma-separated list (empty text = empty list)."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            decoded = json.loads(stripped)
        except json.JSONDecodeError:
            raise SettingError(f"{key}: {text!r} is not a JSON array of names") from None
        return list(validate_value(key, decoded))  # type: ignore[arg-type]
    names = [part.strip() for part in stripped.split(",")] if stripped else []
    if not all(names):
        raise SettingError(f"{key}: {text!r} has an empty name in its comma-separated list")
    return list(validate_value(key, names))  # type: ignore[arg-type]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_name(value: Any) -> bool:
    """Non-empty text that can be stored (UTF-8: no lone surrogate) and has no NUL."""
    if not isinstance(value, str) or value == "" or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind_text(kind: str) -> str:
    return {
        "boolean": "boolean (true or false)",
        "non_negative_integer": f"whole number from 0 to {MAX_INTEGER:,}",
        "string_list": "list of non-empty names",
    }[kind]


# -- the rules for one profile (the profile page) -------------------------------------------
# projections/views.sql states the same rules in SQL for counts and SQL users; the profile
# page applies them here to the few rows it has already fetched, which avoids planning the
# view stack on every lookup. Tests fold the same logs through both and compare.

SeenKey = tuple[datetime, str, str]
_NEVER = datetime.min


@dataclass(frozen=True, slots=True)
class IdentifierFacts:
    """What the projection stores about one identifier of a profile."""

    id_type: str
    value: str
    valid: bool
    deliverable: bool  # as folded: valid, no hard bounce, no complaint
    consent: str
    hard_bounces: int
    complaints: int
    consecutive_soft_bounces: int
    last_seen: datetime | None
    last_seen_event_id: str | None

    @property
    def seen_key(self) -> SeenKey:
        """Greatest = last seen: latest time, then the later event id, then the value."""
        return (self.last_seen or _NEVER, self.last_seen_event_id or "", self.value)


@dataclass(frozen=True, slots=True)
class Verdict:
    is_last_seen: bool
    deliverable: bool  # with bounce.soft_bounce_limit applied
    eligible: bool | None  # None for identifiers that carry no channel
    reason: str | None  # the first failing rule; None when eligible or no channel


def judge(
    facts: Sequence[IdentifierFacts], ccpa_opted_out: bool, settings: Mapping[str, Any]
) -> list[Verdict]:
    """One verdict per identifier of a profile, in the order given."""
    last_seen: dict[str, SeenKey] = {}
    for item in facts:
        best = last_seen.get(item.id_type)
        if best is None or item.seen_key > best:
            last_seen[item.id_type] = item.seen_key
    return [_verdict(item, item.seen_key == last_seen[item.id_type], ccpa_opted_out, settings)
            for item in facts]  # fmt: skip


def reachable_channels(
    facts: Sequence[IdentifierFacts], verdicts: Sequence[Verdict]
) -> dict[str, bool]:
    return {
        channel: any(
            v.eligible for f, v in zip(facts, verdicts, strict=True)
            if f.id_type == CHANNEL_ID_TYPE[channel]
        )
        for channel in CHANNELS
    }  # fmt: skip


def _verdict(
    item: IdentifierFacts, is_last_seen: bool, ccpa_opted_out: bool, settings: Mapping[str, Any]
) -> Verdict:
    undeliverable = _undeliverable_reason(item, int(settings["bounce.soft_bounce_limit"]))
    channel = ID_TYPE_CHANNEL.get(item.id_type)
    if channel is None:
        return Verdict(is_last_seen, undeliverable is None, None, None)
    reason = _failing_rule(item, channel, is_last_seen, ccpa_opted_out, undeliverable, settings)
    return Verdict(is_last_seen, undeliverable is None, reason is None, reason)


def _undeliverable_reason(item: IdentifierFacts, soft_bounce_limit: int) -> str | None:
    if not item.deliverable:
        if not item.valid:
            return "invalid"
        if item.hard_bounces > 0:
            return "hard_bounce"
        return "complaint" if item.complaints > 0 else "undeliverable"
    if 0 < soft_bounce_limit <= item.consecutive_soft_bounces:
        return "soft_bounce_limit"
    return None


def _failing_rule(
    item: IdentifierFacts,
    channel: str,
    is_last_seen: bool,
    ccpa_opted_out: bool,
    undeliverable: str | None,
    settings: Mapping[str, Any],
) -> str | None:
    if ccpa_opted_out and settings[f"ccpa_blocks.{channel}"]:
        return "ccpa_opted_out"
    if channel != "push" and not is_last_seen:
        return "not_last_seen"
    if undeliverable is not None:
        return undeliverable
    if item.consent == "opted_in":
        return None
    if item.consent == "unknown" and settings[f"implicit_consent.{channel}"]:
        return None
    return f"consent_{item.consent}"
