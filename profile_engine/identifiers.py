"""Identifier normalisation, shared by the producer edge and the fold.

Rules: emails are trimmed and lower-cased and syntax-checked (no DNS); phones are parsed to
E.164 for a default region; a value that fails its syntax check is kept but marked invalid
(so it is never deliverable); junk placeholders are dropped and never create or link a profile.
"""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from profile_engine.events import ID_PRIORITY, Identifier

DEFAULT_PHONE_REGION = "US"

# Compared after trimming and lower-casing.
JUNK_VALUES = frozenset(
    {"", "null", "none", "undefined", "anonymous", "guest", "0", "-1", "nan", "[object object]"}
)


def is_junk(raw: object) -> bool:
    if raw is None:
        return True
    return str(raw).strip().lower() in JUNK_VALUES


@lru_cache(maxsize=65_536)
def normalise_email(raw: str) -> tuple[str, bool]:
    value = raw.strip().lower()
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return value, False
    return value, True


@lru_cache(maxsize=65_536)
def normalise_phone(raw: str, region: str = DEFAULT_PHONE_REGION) -> tuple[str, bool]:
    value = raw.strip()
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return value, False
    if not phonenumbers.is_valid_number(parsed):
        return value, False
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), True


def normalise(
    id_type: str, raw: object, phone_region: str = DEFAULT_PHONE_REGION
) -> Identifier | None:
    """One identifier, normalised; None when the value is junk."""
    if is_junk(raw):
        return None
    text = str(raw).strip()
    if id_type == "email":
        value, valid = normalise_email(text)
    elif id_type == "phone":
        value, valid = normalise_phone(text, phone_region)
    else:
        value, valid = text, True
    return Identifier(id_type, value, valid)


def normalise_all(
    raw_identifiers: dict[str, object], phone_region: str = DEFAULT_PHONE_REGION
) -> tuple[Identifier, ...]:
    """Every usable identifier of an event, highest priority first."""
    result = []
    for id_type in ID_PRIORITY:
        if id_type in raw_identifiers:
            ident = normalise(id_type, raw_identifiers[id_type], phone_region)
            if ident is not None:
                result.append(ident)
    return tuple(result)
