"""The rule book: what every event must keep, whichever way it came in.

JSON publish and CSV import (``profile_engine.contract``, ``profile_engine.csv_import``),
Avro decoding (``consumers.codec``) and file rebuilds all call these functions, so an event
gets the same verdict, and the same ``field: rule`` reason, on every path. Nothing here reads
a clock, the environment or a file: the event-time window is a parameter.

The rules:

- identifiers are normalised and judged from their value (``profile_engine.identifiers``);
  a ``valid`` flag sent with an identifier is never trusted. Identifier values are strings
  or integers (never booleans, fractions, objects or lists) of at most 1,000 characters.
- every number is finite (no NaN or Infinity) and every integer fits in 64 signed bits;
- every string is valid Unicode without NUL characters (no lone surrogate halves);
- track properties nest at most ``MAX_DEPTH`` levels; traits and properties hold at most
  ``MAX_VALUES`` values and at most ``MAX_PAYLOAD_BYTES`` of compact JSON, so an event is
  always far below Kafka's default 1 MB message limit;
- a purchase (track ``purchase``) has a string or integer ``order_id`` and a numeric
  ``revenue`` within ±``REVENUE_LIMIT`` (so no sum of revenues can overflow);
- the event time lies inside an ``EventTimeWindow``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from math import isfinite
from typing import Any

import orjson

from profile_engine.errors import BadInput
from profile_engine.events import (
    CHANNEL_ID_TYPE,
    ID_PRIORITY,
    ID_RANK,
    Bounce,
    Ccpa,
    Consent,
    Identifier,
    Identify,
    Subscription,
    Track,
    datetime_to_us,
    iso_from_us,
    new_bounce,
    new_ccpa,
    new_consent,
    new_identifier,
    new_identify,
    new_subscription,
    new_track,
)
from profile_engine.identifiers import DEFAULT_PHONE_REGION, JUNK_VALUES, normalise
from profile_engine.identifiers import clear_caches as clear_identifier_caches


class ContractError(BadInput):
    """An event that breaks the contract: terminal, never retried. str() is ``field: rule``."""


# --- limits --------------------------------------------------------------------------------

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
MAX_TEXT_CHARS = 1_000  # event_id, identifier values, event names, list ids
MAX_DEPTH = 32  # levels of track properties: the properties object itself is level 1
MAX_VALUES = 10_000  # traits, or properties counted at every level (containers included)
MAX_PAYLOAD_BYTES = 512 * 1024  # compact UTF-8 JSON of the traits or the properties
REVENUE_LIMIT = 1e12  # |revenue| of one purchase; DOUBLE sums stay exact-ish and finite

_US_PER_DAY = 86_400_000_000
EARLIEST_US = datetime_to_us(datetime(2000, 1, 1, tzinfo=UTC))
FILES_LATEST_US = datetime_to_us(datetime(2100, 1, 1, tzinfo=UTC))
MAX_AHEAD_US = _US_PER_DAY  # how far past the record's own timestamp an event may be

FINITE_RULE = "must be a finite number (no NaN or Infinity)"
LONG_RULE = "integer outside the 64-bit signed range"
NUL_RULE = "must not contain NUL characters"
SURROGATE_RULE = "must be valid Unicode (no lone surrogate halves)"
SCALAR_ID_RULE = "must be a string or an integer"
DEPTH_RULE = f"nested deeper than {MAX_DEPTH} levels"
NO_IDENTIFIER_RULE = "identifiers: at least one usable identifier is required"
ORDER_ID_RULE = "properties: a purchase needs properties.order_id (string or integer)"
REVENUE_RULE = "properties: a purchase needs a numeric properties.revenue"


# --- the event-time window -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventTimeWindow:
    """Event times accepted, both bounds inclusive, in microseconds since the epoch (UTC).

    A consumer derives the window from the log itself (``window_for_record``), never from
    its own clock, so a rebuild of the same log decides exactly as the live fold did.
    """

    earliest_us: int
    latest_us: int

    def check(self, timestamp_us: int) -> int:
        if self.earliest_us <= timestamp_us <= self.latest_us:
            return timestamp_us
        raise ContractError(
            f"timestamp: {_moment(timestamp_us)} is outside the accepted event-time window "
            f"{_moment(self.earliest_us)} to {_moment(self.latest_us)}"
        )


def window_for_record(
    record_timestamp_ms: int, earliest_us: int = EARLIEST_US, max_ahead_us: int = MAX_AHEAD_US
) -> EventTimeWindow:
    """For a message on the log: from ``earliest_us`` to ``max_ahead_us`` after the Kafka
    record's own timestamp, and never past the files' far bound. Our producers set the record
    timestamp to min(event time, their clock) and Kafka 4 refuses record timestamps more than
    an hour ahead of the broker's, so an event dated well into the future cannot pass."""
    latest = min(record_timestamp_ms * 1000 + max_ahead_us, FILES_LATEST_US)
    return EventTimeWindow(earliest_us, latest)


@dataclass(frozen=True, slots=True)
class EventTimePolicy:
    """The configurable bounds of the window, fixed when a projection is created (a rebuild
    carries them over), so a rebuild decides every event exactly as the live fold did."""

    earliest_us: int = EARLIEST_US
    max_ahead_us: int = MAX_AHEAD_US

    def for_record(self, record_timestamp_ms: int) -> EventTimeWindow:
        return window_for_record(record_timestamp_ms, self.earliest_us, self.max_ahead_us)

    def for_files(self) -> EventTimeWindow:
        return window_for_files(self.earliest_us)


def window_for_files(
    earliest_us: int = EARLIEST_US, latest_us: int = FILES_LATEST_US
) -> EventTimeWindow:
    """For JSON Lines files and archives, which carry no broker timestamp: fixed bounds."""
    return EventTimeWindow(earliest_us, latest_us)


def window_at_publish(
    now_us: int, earliest_us: int = EARLIEST_US, max_ahead_us: int = MAX_AHEAD_US
) -> EventTimeWindow:
    """The producer's edge check, from the producer's own clock (the caller reads it)."""
    return EventTimeWindow(earliest_us, now_us + max_ahead_us)


FILES_WINDOW = window_for_files()


def _moment(micros: int) -> str:
    try:
        return iso_from_us(micros)
    except (OverflowError, ValueError):  # beyond what a datetime can hold
        return f"{micros} microseconds since the epoch"


# --- scalars -------------------------------------------------------------------------------


def _utf8_ok(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate half
        return False
    return True


def text_rule(value: str) -> str | None:
    """The rule a string breaks (NUL, lone surrogate), or None."""
    if "\x00" in value:
        return NUL_RULE
    if not value.isascii() and not _utf8_ok(value):
        return SURROGATE_RULE
    return None


def short_text_rule(value: str) -> str | None:
    """``text_rule`` plus the length limit of names and identifiers."""
    if len(value) > MAX_TEXT_CHARS:
        return f"longer than {MAX_TEXT_CHARS} characters"
    return text_rule(value)


def check_name(value: str, field: str) -> str:
    """A required name (event, list_id, event_id): non-empty, short, clean text."""
    # The common case in one expression: names are checked for every event.
    if value and len(value) <= MAX_TEXT_CHARS and value.isascii() and "\x00" not in value:
        return value
    if not value:
        raise ContractError(f"{field}: must not be empty")
    rule = short_text_rule(value)
    if rule is not None:
        raise ContractError(f"{field}: {rule}")
    return value


def scalar_id(value: object) -> str | None:
    """An identifier or order id as text: strings as they are, 64-bit integers in decimal.

    ValueError(rule) for anything else: a boolean, a fraction, an object or a list would be
    stored as Python's text of it and link unrelated people.
    """
    if value is None or type(value) is str:
        return value
    if type(value) is int:
        if not LONG_MIN <= value <= LONG_MAX:
            raise ValueError(LONG_RULE)
        return str(value)
    raise ValueError(SCALAR_ID_RULE)


def number_rule(value: int | float) -> str | None:
    if type(value) is float:
        return None if math.isfinite(value) else FINITE_RULE
    return None if LONG_MIN <= value <= LONG_MAX else LONG_RULE


# --- identifiers ---------------------------------------------------------------------------

# Identifiers that passed the rules: {phone region: {id type: {raw text: identifier}}}, None
# for junk. People send many events, so most lookups hit. Each id type's map is bounded
# (cleared when full): five maps of 65,536 entries are some 60 MB at most.
IDENTIFIER_CACHE_SIZE = 65_536
_IDENTIFIERS: dict[str, dict[str, dict[str, Identifier | None]]] = {}
_MISSING = object()
# Types whose value is only trimmed (emails and phones go to profile_engine.identifiers).
_PLAIN_TYPES = frozenset({"customer_id", "anonymous_id", "push_token"})


def _known(phone_region: str) -> dict[str, dict[str, Identifier | None]]:
    known = _IDENTIFIERS.get(phone_region)
    if known is None:
        known = _IDENTIFIERS[phone_region] = {id_type: {} for id_type in ID_PRIORITY}
    return known


def identifier(
    id_type: str, raw: object, phone_region: str = DEFAULT_PHONE_REGION
) -> Identifier | None:
    """One identifier judged from its value; None for junk; ContractError for a bad value."""
    if type(raw) is str:
        text = raw
    else:
        try:
            converted = scalar_id(raw)
        except ValueError as error:
            raise ContractError(f"identifiers.{id_type}: {error}") from None
        if converted is None:
            return None
        text = converted
    known = _known(phone_region).get(id_type)
    if known is None:  # not an identifier type: the shape checks never let one through
        raise ContractError(f"identifiers.{id_type}: not an identifier type")
    found = known.get(text, _MISSING)
    if found is not _MISSING:
        return found  # type: ignore[return-value]
    if len(text) > MAX_TEXT_CHARS or "\x00" in text or not (text.isascii() or _utf8_ok(text)):
        raise ContractError(f"identifiers.{id_type}: {short_text_rule(text)}")
    if id_type in _PLAIN_TYPES:
        value = text.strip()
        ident = None if value.lower() in JUNK_VALUES else new_identifier(id_type, value, True)
    else:
        ident = normalise(id_type, text, phone_region)
    if len(known) >= IDENTIFIER_CACHE_SIZE:
        known.clear()
    known[text] = ident
    return ident


def clear_caches() -> None:
    """Forget every cached identifier and verdict (benchmarks measure cold caches)."""
    _IDENTIFIERS.clear()
    clear_identifier_caches()


def identifiers_from_mapping(
    raw: Mapping[str, object], phone_region: str = DEFAULT_PHONE_REGION
) -> tuple[Identifier, ...]:
    """JSON and CSV: {id type: value} -> highest priority first, junk dropped.

    A broken value is named as ``identifiers_from_pairs`` names it: the first in priority
    order.
    """
    known = _IDENTIFIERS.get(phone_region) or _known(phone_region)
    found: list[Identifier] = []
    try:
        for id_type, value in raw.items():
            ident = known[id_type].get(value, _MISSING) if type(value) is str else _MISSING
            if ident is _MISSING:
                ident = identifier(id_type, value, phone_region)
            if ident is not None:
                found.append(ident)  # type: ignore[arg-type]
    except (ContractError, KeyError):
        by_rank = sorted(raw.items(), key=lambda pair: ID_RANK.get(pair[0], len(ID_RANK)))
        _judge_in_priority_order(by_rank, phone_region)
        raise
    if len(found) == 2:  # the commonest case of more than one, without a sort
        first, second = found
        if ID_RANK[first.id_type] > ID_RANK[second.id_type]:
            return second, first
    elif len(found) > 2:
        found.sort(key=_rank)
    return tuple(found)


def known_identifiers(
    items: Sequence[Mapping[str, Any]], phone_region: str = DEFAULT_PHONE_REGION
) -> tuple[Identifier, ...] | None:
    """Identifier records ({"id_type", "value", ...}) when every one was judged before and
    they come in strict priority order (as our producers write them); None otherwise, and
    ``identifiers_from_pairs`` judges them. A ``valid`` flag in a record is never read."""
    known = _IDENTIFIERS.get(phone_region)
    if known is None:
        return None
    found: list[Identifier] = []
    previous = -1
    for item in items:
        id_type = item["id_type"]
        rank = ID_RANK.get(id_type, -1)
        if rank <= previous:
            return None
        previous = rank
        ident = known[id_type].get(item["value"], _MISSING)
        if ident is _MISSING:
            return None
        if ident is not None:
            found.append(ident)  # type: ignore[arg-type]
    return tuple(found)


def identifiers_from_pairs(
    pairs: list[tuple[str, str]], phone_region: str = DEFAULT_PHONE_REGION
) -> tuple[Identifier, ...]:
    """Avro: (id type, value) pairs in any order; an id type given twice is an error."""
    if len(pairs) > 1:
        ranks = [ID_RANK[id_type] for id_type, _ in pairs]
        if ranks != sorted(ranks):  # our producers write them in priority order already
            pairs = sorted(pairs, key=lambda pair: ID_RANK[pair[0]])
    return _judge_in_priority_order(pairs, phone_region)


def _rank(ident: Identifier) -> int:
    return ID_RANK[ident.id_type]


def _judge_in_priority_order(
    pairs: Sequence[tuple[str, object]], phone_region: str
) -> tuple[Identifier, ...]:
    # Pairs come in priority order, so the first broken rule named is the same whichever
    # order the producer wrote the identifiers in.
    known = _known(phone_region)
    found: list[Identifier] = []
    for id_type, value in pairs:
        by_value = known.get(id_type)
        ident = (
            by_value.get(value, _MISSING)
            if by_value is not None and type(value) is str
            else _MISSING
        )
        if ident is _MISSING:
            ident = identifier(id_type, value, phone_region)
        if ident is not None:
            if found and found[-1].id_type == id_type:
                raise ContractError(f"identifiers.{id_type}: given more than once")
            found.append(ident)  # type: ignore[arg-type]
    return tuple(found)


def check_channel_identifier(
    event_type: str, channel: str, identifiers: tuple[Identifier, ...]
) -> None:
    """Consent and bounce events concern the identifier that carries their channel."""
    needed = CHANNEL_ID_TYPE[channel]
    for ident in identifiers:
        if ident.id_type == needed:
            return
    raise ContractError(
        f"identifiers.{needed}: a {event_type} event for channel {channel} "
        f"must carry a usable {needed}"
    )


# --- traits and properties -----------------------------------------------------------------


class _Broken(Exception):
    """A value deep inside a payload breaks a rule; ``path`` is filled in on the way out."""

    def __init__(self, rule: str, located: bool = True) -> None:
        super().__init__(rule)
        self.rule = rule
        self.located = located
        self.path: list[str] = []


_JSON_RULE = "must be JSON: an object, array, string, number, boolean or null"
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_$-]{1,64}")


def _path_key(key: Any) -> str:
    """A key in a reason's path: as it is when plain, else JSON-quoted (a NUL or a line end
    shows as an escape, not as itself) and cut to 64 characters."""
    text = str(key)
    if _PLAIN_KEY.fullmatch(text):
        return text
    quoted = json.dumps(text[:64])
    return quoted if len(text) <= 64 else f'{quoted[:-1]}…"'


def _item_rule(item: Any) -> str | None:
    """The rule a scalar payload value breaks, or None; containers are not looked into."""
    kind = type(item)
    if kind is str:
        return text_rule(item)
    if kind is int or kind is float:
        return number_rule(item)
    if kind is bool or item is None or kind is dict or kind is list:
        return None
    return _JSON_RULE


def _key_rule(key: object) -> str:
    if type(key) is not str:
        return "object keys must be strings"
    return f"key {text_rule(key)}"


def _spend(budget: list[int], count: int, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _Broken(DEPTH_RULE, located=False)
    budget[0] -= count
    if budget[0] < 0:
        raise _Broken(f"more than {MAX_VALUES} values", located=False)


# The two walkers below test the common cases inline (a function call per value would cost
# more than the checks) and ask _item_rule / _key_rule for the wording only when one fails.


def _check_object(value: dict[Any, Any], depth: int, budget: list[int]) -> None:
    budget[0] -= len(value)
    if depth > MAX_DEPTH or budget[0] < 0:
        _spend(budget, 0, depth)  # words the broken limit
    for key, item in value.items():
        try:
            if type(key) is not str or "\x00" in key or not (key.isascii() or _utf8_ok(key)):
                raise _Broken(_key_rule(key))
            kind = type(item)
            if kind is str:
                if "\x00" in item or not (item.isascii() or _utf8_ok(item)):
                    raise _Broken(text_rule(item) or "")
            elif kind is int:
                if not LONG_MIN <= item <= LONG_MAX:
                    raise _Broken(LONG_RULE)
            elif kind is float:
                if not isfinite(item):
                    raise _Broken(FINITE_RULE)
            elif kind is dict:
                _check_object(item, depth + 1, budget)
            elif kind is list:
                _check_array(item, depth + 1, budget)
            elif not (kind is bool or item is None):
                raise _Broken(_JSON_RULE)
        except _Broken as broken:
            broken.path.append(_path_key(key))
            raise


def _check_array(value: list[Any], depth: int, budget: list[int]) -> None:
    _spend(budget, len(value), depth)
    for index, item in enumerate(value):
        try:
            kind = type(item)
            if kind is dict:
                _check_object(item, depth + 1, budget)
            elif kind is list:
                _check_array(item, depth + 1, budget)
            elif not (kind is bool or item is None):
                rule = _item_rule(item)
                if rule is not None:
                    raise _Broken(rule)
        except _Broken as broken:
            broken.path.append(str(index))
            raise


def _check_payload(payload: dict[str, Any], field: str, depth: int) -> None:
    """Walk a traits or properties object; ContractError naming the first bad value."""
    try:
        _check_object(payload, depth, [MAX_VALUES])
    except _Broken as broken:
        where = field
        if broken.located and broken.path:
            where = f"{field}.{'.'.join(reversed(broken.path))}"
        raise ContractError(f"{where}: {broken.rule}") from None
    # Compact JSON is how the payload travels and is stored; the walk above made it encodable.
    if len(orjson.dumps(payload)) > MAX_PAYLOAD_BYTES:
        raise ContractError(f"{field}: larger than {MAX_PAYLOAD_BYTES // 1024} KiB as JSON")


_TRAIT_RULE = "must be a string, number, boolean or null"


def check_traits(traits: dict[str, Any]) -> dict[str, Any]:
    """Identify traits: scalar values only (null unsets), each finite, 64-bit, clean text.

    One flat pass; the compact JSON size is computed only when a bound on it (6 bytes per
    character at worst, 30 per trait for quotes, separators and numbers) could exceed the
    limit.
    """
    if len(traits) > MAX_VALUES:
        raise ContractError(f"traits: more than {MAX_VALUES} values")
    chars = 0
    for name, value in traits.items():
        kind = type(value)
        if kind is str:
            if "\x00" in value or not (value.isascii() or _utf8_ok(value)):
                raise ContractError(f"traits.{name}: {text_rule(value)}")
            chars += len(value)
        elif kind is float:
            if not isfinite(value):
                raise ContractError(f"traits.{name}: {FINITE_RULE}")
        elif kind is int:
            if not LONG_MIN <= value <= LONG_MAX:
                raise ContractError(f"traits.{name}: {LONG_RULE}")
        elif not (kind is bool or value is None):
            raise ContractError(f"traits.{name}: {_TRAIT_RULE}")
        if type(name) is not str:
            raise ContractError(f"traits.{name}: object keys must be strings")
        if "\x00" in name or not (name.isascii() or _utf8_ok(name)):
            raise ContractError(f"traits: a trait name {text_rule(name)}")
        chars += len(name)
    bound = 6 * chars + 30 * len(traits) + 2
    if bound > MAX_PAYLOAD_BYTES and len(orjson.dumps(traits)) > MAX_PAYLOAD_BYTES:
        raise ContractError(f"traits: larger than {MAX_PAYLOAD_BYTES // 1024} KiB as JSON")
    return traits


def check_properties(properties: dict[str, Any]) -> dict[str, Any]:
    _check_payload(properties, "properties", 1)
    return properties


def check_purchase(properties: Mapping[str, Any]) -> None:
    """Orders are folded from purchases: which order, and how much (bounded)."""
    order_id = properties.get("order_id")
    kind = type(order_id)
    if not (kind is str or kind is int) or str(order_id).strip().lower() in JUNK_VALUES:
        raise ContractError(ORDER_ID_RULE)
    revenue = properties.get("revenue")
    if not (type(revenue) is int or type(revenue) is float):
        raise ContractError(REVENUE_RULE)
    if not -REVENUE_LIMIT <= revenue <= REVENUE_LIMIT:
        raise ContractError(
            f"properties.revenue: a purchase's revenue must lie between "
            f"-{REVENUE_LIMIT:.0e} and {REVENUE_LIMIT:.0e}".replace("e+", "e")
        )


# --- JSON text -----------------------------------------------------------------------------

# orjson silently reads integers beyond 64 bits as floats; Python's json keeps them exact, so
# a text with a run of 19 digits (|n| >= 10**18) is read by Python's json.
_LONG_DIGIT_RUN = re.compile(r"[0-9]{19}")
_LONG_DIGIT_RUN_BYTES = re.compile(rb"[0-9]{19}")


def load_json_text(text: str | bytes, field: str) -> Any:
    """JSON text -> Python value, exactly as ``json.loads`` reads it (at orjson's speed when
    orjson would read it the same); ContractError naming ``field`` when it is not JSON."""
    return _load_json(text, field)[0]


def read_properties(text: str) -> tuple[Any, bool]:
    """Track properties from their JSON text (the Avro form): (value, proven).

    ``proven`` is True when the text alone shows the value keeps every payload rule, so
    ``track_event(..., proven=True)`` can skip walking it; it never decides a break (the walk
    does, with the same reason as for JSON input). The proof: orjson read the text, so it has
    no NaN, Infinity, lone surrogate or integer beyond 18 digits; then no NUL escape, fewer
    brackets than the depth limit, fewer commas and brackets than the value limit, and a
    length that cannot grow past the size limit when numbers are written back compactly.
    """
    value, by_orjson = _load_json(text, "properties")
    if not by_orjson or "\\u0000" in text:
        return value, False
    brackets = text.count("{") + text.count("[")
    values_bound = brackets + text.count(",") + 1
    bytes_bound = len(text) if text.isascii() else 4 * len(text)
    proven = (
        brackets <= MAX_DEPTH
        and values_bound <= MAX_VALUES
        and bytes_bound + _NUMBER_GROWTH * values_bound <= MAX_PAYLOAD_BYTES
    )
    return value, proven


# The most a number's compact JSON can outgrow its text (1E2 -> 100.0): 24 characters at most.
_NUMBER_GROWTH = 24


def _load_json(text: str | bytes, field: str) -> tuple[Any, bool]:
    """(value, read by orjson)."""
    if isinstance(text, str):
        long_digits = _LONG_DIGIT_RUN.search(text) is not None
    else:
        long_digits = _LONG_DIGIT_RUN_BYTES.search(text) is not None
    if long_digits:
        return _stdlib_json(text, field), False
    try:
        return orjson.loads(text), True
    except orjson.JSONDecodeError:  # NaN, lone surrogates, very deep nesting, or not JSON
        return _stdlib_json(text, field), False


def _stdlib_json(text: str | bytes, field: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise ContractError(f"{field}: {DEPTH_RULE}") from None
    except json.JSONDecodeError as error:
        raise ContractError(
            f"{field}: not valid JSON ({error.msg} at column {error.colno})"
        ) from None
    except ValueError as error:  # not UTF-8, or an integer of thousands of digits
        raise ContractError(f"{field}: not valid JSON ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- whole events --------------------------------------------------------------------------


def _common(
    event_id: str, timestamp_us: int, identifiers: tuple[Identifier, ...], window: EventTimeWindow
) -> None:
    if not (
        event_id
        and len(event_id) <= MAX_TEXT_CHARS
        and event_id.isascii()
        and "\x00" not in event_id
    ):
        check_name(event_id, "event_id")
    if not window.earliest_us <= timestamp_us <= window.latest_us:
        window.check(timestamp_us)
    if not identifiers:
        raise ContractError(NO_IDENTIFIER_RULE)


def identify_event(
    event_id: str,
    timestamp_us: int,
    identifiers: tuple[Identifier, ...],
    window: EventTimeWindow,
    traits: dict[str, Any],
) -> Identify:
    _common(event_id, timestamp_us, identifiers, window)
    return new_identify(event_id, timestamp_us, identifiers, check_traits(traits))


def track_event(
    event_id: str,
    timestamp_us: int,
    identifiers: tuple[Identifier, ...],
    window: EventTimeWindow,
    event: str,
    properties: dict[str, Any],
    proven: bool = False,
) -> Track:
    """``proven``: ``read_properties`` showed the properties keep the payload rules."""
    _common(event_id, timestamp_us, identifiers, window)
    check_name(event, "event")
    if not proven:
        check_properties(properties)
    if event == "purchase":
        check_purchase(properties)
    return new_track(event_id, timestamp_us, identifiers, event, properties)


def consent_event(
    event_id: str,
    timestamp_us: int,
    identifiers: tuple[Identifier, ...],
    window: EventTimeWindow,
    channel: str,
    status: str,
) -> Consent:
    _common(event_id, timestamp_us, identifiers, window)
    check_channel_identifier("consent", channel, identifiers)
    return new_consent(event_id, timestamp_us, identifiers, channel, status)


def bounce_event(
    event_id: str,
    timestamp_us: int,
    identifiers: tuple[Identifier, ...],
    window: EventTimeWindow,
    channel: str,
    bounce_type: str,
) -> Bounce:
    _common(event_id, timestamp_us, identifiers, window)
    check_channel_identifier("bounce", channel, identifiers)
    return new_bounce(event_id, timestamp_us, identifiers, channel, bounce_type)


def subscription_event(
    event_id: str,
    timestamp_us: int,
    identifiers: tuple[Identifier, ...],
    window: EventTimeWindow,
    list_id: str,
    channel: str,
    status: str,
) -> Subscription:
    _common(event_id, timestamp_us, identifiers, window)
    check_name(list_id, "list_id")
    return new_subscription(event_id, timestamp_us, identifiers, list_id, channel, status)


def ccpa_event(
    event_id: str,
    timestamp_us: int,
    identifiers: tuple[Identifier, ...],
    window: EventTimeWindow,
    request: str,
) -> Ccpa:
    _common(event_id, timestamp_us, identifiers, window)
    return new_ccpa(event_id, timestamp_us, identifiers, request)
