"""Identifier normalisation, shared by every way in (JSON, CSV, Avro) and by queries.

Rules: emails are trimmed and lower-cased and syntax-checked (no DNS); phones are parsed to
E.164 for a default region; a value that fails its syntax check is kept but marked invalid
(so it is never deliverable); junk placeholders are dropped and never create or link a profile.
The verdict is always computed from the value, never taken from whoever sent it.

email-validator and phonenumbers are the judges, but they cost tens of microseconds a call and
most events carry an identifier already seen or an address of a plain shape. So:

- verdicts are cached by value (bounded caches);
- ``plain_valid_email`` accepts plain ASCII addresses that email-validator always accepts
  (anything else goes to the library);
- ``nanp_phone`` reads the common North American shapes (``(415) 555-2671``,
  ``415.555.2671``, ``+1 415 555 2671``, ...) in the US region and decides validity with the
  library's own metadata, following phonenumbers' ``is_valid_number`` step by step.

Both fast paths give exactly the libraries' verdicts; differential property tests check it
(tests/profile_engine/test_identifiers.py).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import PhoneMetadata

from profile_engine.events import ID_PRIORITY, Identifier, new_identifier

DEFAULT_PHONE_REGION = "US"

# Compared after trimming and lower-casing.
JUNK_VALUES = frozenset(
    {"", "null", "none", "undefined", "anonymous", "guest", "0", "-1", "nan", "[object object]"}
)

VERDICT_CACHE_SIZE = 65_536  # distinct emails or phones remembered (a few MB each)


def is_junk(raw: object) -> bool:
    if raw is None:
        return True
    return str(raw).strip().lower() in JUNK_VALUES


# --- emails --------------------------------------------------------------------------------

# A plain ASCII address that email-validator always accepts (a property test checks it).
_PLAIN_EMAIL = re.compile(
    r"^[a-z0-9]+(?:[._+-][a-z0-9]+)*@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\Z"
)
_SPECIAL_USE_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def plain_valid_email(value: str) -> bool:
    """True for a lower-cased, trimmed address on the fast path (False means: ask the
    full validator, not: invalid)."""
    if len(value) > 254 or not _PLAIN_EMAIL.match(value):
        return False
    local, _, domain = value.partition("@")
    if len(local) > 64 or "--" in domain:  # "xn--" labels need the IDNA checks
        return False
    return domain.rsplit(".", 1)[-1] not in _SPECIAL_USE_TLDS


@lru_cache(maxsize=VERDICT_CACHE_SIZE)
def _library_email_verdict(value: str) -> bool:
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def normalise_email(raw: str) -> tuple[str, bool]:
    """(trimmed lower-cased address, syntax valid)."""
    value = raw.strip().lower()
    return value, plain_valid_email(value) or _library_email_verdict(value)


# --- phones --------------------------------------------------------------------------------

# Ten NANP digits with the usual separators, optionally after "+1": phonenumbers reads every
# such text in the US region as country code 1 and exactly these ten digits. Anything else
# (a leading "1" without "+", extensions, letters, other regions) goes to phonenumbers.parse.
_NANP_SHAPE = re.compile(
    r"(?:\+1[ .-]?)?(?:\(([2-9][0-9]{2})\)|([2-9][0-9]{2}))[ .-]?([0-9]{3})[ .-]?([0-9]{4})"
)
_NANP_REGIONS = ("US",)  # default regions whose country code is 1 and that use this shape


def _number_descs(metadata: Any) -> tuple[Any, ...]:
    # Every number type phonenumbers' _number_type_helper tries after the general description;
    # a number matching any of them has a known type, i.e. it is valid for the region.
    # Which type it is does not matter here, so the commonest types come first.
    return (
        metadata.fixed_line,
        metadata.mobile,
        metadata.toll_free,
        metadata.premium_rate,
        metadata.shared_cost,
        metadata.voip,
        metadata.personal_number,
        metadata.pager,
        metadata.uan,
        metadata.voicemail,
    )


Matcher = tuple[frozenset[int], re.Pattern[str]]


def _desc_pattern(desc: Any) -> str | None:
    if desc is None or not desc.national_number_pattern:
        return None
    return str(desc.national_number_pattern)


class _RegionRule:
    """One NANP region's leading digits and number patterns, compiled once.

    phonenumbers tests a description's possible lengths, then full-matches its pattern; the
    type descriptions with the same possible lengths are joined into one alternation here,
    which full-matches exactly when one of them does.
    """

    def __init__(self, metadata: Any) -> None:
        self.leading_digits = (
            re.compile(metadata.leading_digits) if metadata.leading_digits is not None else None
        )
        general = _desc_pattern(metadata.general_desc)
        self.general: Matcher | None = None
        if general is not None:
            lengths = frozenset(metadata.general_desc.possible_length or ())
            self.general = (lengths, re.compile(general))
        grouped: dict[frozenset[int], list[str]] = {}
        for desc in _number_descs(metadata):
            pattern = _desc_pattern(desc)
            if pattern is not None:
                grouped.setdefault(frozenset(desc.possible_length or ()), []).append(pattern)
        self.types: list[Matcher] = [
            (lengths, re.compile("|".join(f"(?:{p})" for p in patterns)))
            for lengths, patterns in grouped.items()
        ]

    def type_known(self, number: str) -> bool:
        general = self.general
        if general is None:
            return False
        size = len(number)
        if (general[0] and size not in general[0]) or general[1].fullmatch(number) is None:
            return False
        for lengths, pattern in self.types:
            if (not lengths or size in lengths) and pattern.fullmatch(number) is not None:
                return True
        return False


_NANP_RULES: list[_RegionRule] = []


def _nanp_rules() -> list[_RegionRule]:
    if not _NANP_RULES:
        for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1]:
            metadata = PhoneMetadata.metadata_for_region(region.upper(), None)
            if metadata is not None:
                _NANP_RULES.append(_RegionRule(metadata))
    return _NANP_RULES


def nanp_valid(national_number: str) -> bool:
    """phonenumbers.is_valid_number for country code 1 and these ten digits.

    The same steps: the number's region is the first NANP region whose leading digits match
    or, for a region without leading digits, whose patterns give the number a known type;
    the number is valid when its type is known in that region.
    """
    for rule in _NANP_RULES or _nanp_rules():
        if rule.leading_digits is not None:
            if rule.leading_digits.match(national_number):
                return rule.type_known(national_number)
        elif rule.type_known(national_number):
            return True
    return False


def nanp_phone(value: str, region: str) -> tuple[str, bool] | None:
    """(E.164 or the trimmed text, valid) for the common NANP shapes; None: ask the library."""
    if region not in _NANP_REGIONS:
        return None
    match = _NANP_SHAPE.fullmatch(value)
    if match is None:
        return None
    area = match.group(1) or match.group(2)
    number = area + match.group(3) + match.group(4)
    if nanp_valid(number):
        return "+1" + number, True
    return value, False


@lru_cache(maxsize=VERDICT_CACHE_SIZE)
def _library_phone(value: str, region: str) -> tuple[str, bool]:
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return value, False
    if not phonenumbers.is_valid_number(parsed):
        return value, False
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), True


def normalise_phone(raw: str, region: str = DEFAULT_PHONE_REGION) -> tuple[str, bool]:
    """(E.164, True) for a valid number, else (the trimmed text, False)."""
    value = raw.strip()
    return nanp_phone(value, region) or _library_phone(value, region)


# --- any identifier ------------------------------------------------------------------------


def normalise(
    id_type: str, raw: object, phone_region: str = DEFAULT_PHONE_REGION
) -> Identifier | None:
    """One identifier, normalised; None when the value is junk.

    Only the library verdicts are cached here; ``profile_engine.rules.identifier`` (the way
    in for events) caches whole identifiers once their value has passed the text rules.
    """
    if raw is None:
        return None
    return _normalise_text(id_type, raw if type(raw) is str else str(raw), phone_region)


def _normalise_text(id_type: str, raw: str, phone_region: str) -> Identifier | None:
    text = raw.strip()
    if text.lower() in JUNK_VALUES:
        return None
    if id_type == "email":
        value, valid = normalise_email(text)
    elif id_type == "phone":
        value, valid = normalise_phone(text, phone_region)
    else:
        value, valid = text, True
    return new_identifier(id_type, value, valid)


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


def clear_caches() -> None:
    """Forget every cached verdict."""
    _library_email_verdict.cache_clear()
    _library_phone.cache_clear()
