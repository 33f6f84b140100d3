"""A deterministic, realistic synthetic event stream in the producer JSON Lines format.

Used by `profile-engine generate`, the demo and the benchmarks. Pure domain code: no clock
(the window start is a parameter), no I/O; the same (n, seed, start, days, invalid_rate)
always gives the same stream, byte for byte.

The stream is produced lazily in flat memory: people are derived on demand from a hash of
their index (only the most recent arrivals are cached), the only per-person state is one byte,
and every other buffer is small and bounded.

Items are JSON-able dicts, except deliberately broken non-JSON lines, which are ``str``
(write them verbatim). A dict may be yielded twice (an exact duplicate): never mutate one.
"""

from __future__ import annotations

import itertools
import json
import random
from bisect import bisect
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json

from profile_engine.events import datetime_to_us, iso_from_us

GeneratedItem = dict[str, Any] | str

DEFAULT_START_US = datetime_to_us(datetime(2026, 1, 1, tzinfo=UTC))
DEFAULT_DAYS = 60
DEFAULT_INVALID_RATE = 0.005
DUPLICATE_RATE = 0.002
PEOPLE_PER_EVENT = 0.2
# Returning people: this share of picks come from the most recent arrivals (bursty sessions),
# the rest from everyone so far. Only recent arrivals are cached, so memory stays flat.
RECENT_SHARE = 0.85
RECENT_WINDOW = 2_048

_US_PER_DAY = 86_400_000_000
_MASK64 = (1 << 64) - 1

# --- value pools -------------------------------------------------------------------------

# (display name, the ASCII form used in email addresses)
FIRST_NAMES = (
    ("Ava", "ava"), ("Liam", "liam"), ("Olivia", "olivia"), ("Noah", "noah"), ("Emma", "emma"),
    ("Mateo", "mateo"), ("Sofia", "sofia"), ("Lucas", "lucas"), ("Mia", "mia"),
    ("Ethan", "ethan"), ("Zoë", "zoe"), ("José", "jose"), ("Aiko", "aiko"), ("Priya", "priya"),
    ("Chen", "chen"), ("Fatima", "fatima"), ("Omar", "omar"), ("Grace", "grace"),
    ("Henry", "henry"), ("Isla", "isla"), ("Jack", "jack"), ("Leah", "leah"), ("Maya", "maya"),
    ("Nina", "nina"), ("Oscar", "oscar"), ("Ruby", "ruby"), ("Sam", "sam"), ("Theo", "theo"),
    ("Uma", "uma"), ("Victor", "victor"), ("Willa", "willa"), ("Yusuf", "yusuf"),
)  # fmt: skip
LAST_NAMES = (
    ("Smith", "smith"), ("Garcia", "garcia"), ("Nguyen", "nguyen"), ("Johnson", "johnson"),
    ("Müller", "muller"), ("Kim", "kim"), ("Patel", "patel"), ("Brown", "brown"),
    ("Rossi", "rossi"), ("Silva", "silva"), ("Cohen", "cohen"), ("O'Brien", "obrien"),
    ("Tanaka", "tanaka"), ("Lopez", "lopez"), ("Wilson", "wilson"), ("Khan", "khan"),
    ("Martin", "martin"), ("Davis", "davis"), ("Novak", "novak"), ("Dubois", "dubois"),
    ("Andersen", "andersen"), ("Okafor", "okafor"), ("Ivanova", "ivanova"), ("Clark", "clark"),
)  # fmt: skip
EMAIL_DOMAINS = (
    "gmail.com", "yahoo.com", "outlook.com", "icloud.com", "hotmail.com", "proton.me",
    "aol.com", "example.com",
)  # fmt: skip
WORK_DOMAINS = ("acme.com", "globex.com", "initech.com", "umbrella.co", "hooli.io", "example.org")
# (city, country, time_zone)
PLACES = (
    ("San Francisco", "US", "America/Los_Angeles"), ("New York", "US", "America/New_York"),
    ("Chicago", "US", "America/Chicago"), ("Austin", "US", "America/Chicago"),
    ("Seattle", "US", "America/Los_Angeles"), ("Denver", "US", "America/Denver"),
    ("Miami", "US", "America/New_York"), ("Boston", "US", "America/New_York"),
    ("Toronto", "CA", "America/Toronto"), ("London", "GB", "Europe/London"),
    ("Berlin", "DE", "Europe/Berlin"), ("Paris", "FR", "Europe/Paris"),
    ("Madrid", "ES", "Europe/Madrid"), ("Tokyo", "JP", "Asia/Tokyo"),
    ("Sydney", "AU", "Australia/Sydney"), ("São Paulo", "BR", "America/Sao_Paulo"),
)  # fmt: skip
GENDERS = ("female", "male", "female", "male", "non_binary")
# Area codes phonenumbers accepts with any exchange 200-999 (checked in the tests).
AREA_CODES = (
    201, 202, 206, 212, 213, 214, 215, 303, 305, 310, 312, 314, 404, 408, 415, 503,
    512, 602, 614, 617, 646, 702, 704, 713, 718, 720, 773, 808, 818, 858, 916, 919,
)  # fmt: skip
_PHONE_SPACE = len(AREA_CODES) * 800 * 10_000
_PHONE_MULTIPLIER = 2_654_435_761  # prime, so coprime with the space: a bijection
PHONE_FORMATS: tuple[Callable[[int, int, int], str], ...] = (
    lambda a, e, s: f"({a}) {e}-{s:04d}",
    lambda a, e, s: f"{a}-{e}-{s:04d}",
    lambda a, e, s: f"+1 {a} {e} {s:04d}",
    lambda a, e, s: f"{a}{e}{s:04d}",
    lambda a, e, s: f"{a}.{e}.{s:04d}",
    lambda a, e, s: f"+1{a}{e}{s:04d}",
)
PAGE_PATHS = ("/", "/sale", "/new-arrivals", "/about", "/help", "/search", "/blog", "/stores")
CATEGORIES = ("shoes", "outerwear", "bags", "accessories", "home", "beauty", "kids")
CAMPAIGNS = ("welcome", "winback", "weekly-digest", "cart-reminder", "flash-sale")
# Lists by the channel they deliver on.
LISTS_BY_CHANNEL = {
    "email": ("newsletter", "promotions", "product-updates"),
    "sms": ("sms-alerts", "promotions"),
    "push": ("app-updates",),
}
TRAIT_NAMES = (
    "first_name", "last_name", "gender", "city", "country", "time_zone",
    "birthday_day", "birthday_month",
)  # fmt: skip

# An identify after the first one updates 1-3 traits: every such subset, precomputed because
# random.sample is slow on the hot path.
_TRAIT_UPDATES = tuple(
    subset for size in (1, 2, 3) for subset in itertools.combinations(TRAIT_NAMES, size)
)

# Weighted choices as (values, cumulative weights).
_Weighted = tuple[tuple[str, ...], tuple[float, ...]]


def _weighted(pairs: tuple[tuple[str, float], ...]) -> _Weighted:
    total = 0.0
    cumulative = []
    for _, weight in pairs:
        total += weight
        cumulative.append(total)
    return tuple(v for v, _ in pairs), tuple(c / total for c in cumulative)


KNOWN_EVENT_KINDS = _weighted(
    (
        ("page_viewed", 30.0),
        ("product_viewed", 18.0),
        ("added_to_cart", 7.0),
        ("message_sent", 9.0),
        ("purchase", 6.0),
        ("identify", 9.0),
        ("consent", 7.0),
        ("subscription", 6.0),
        ("bounce", 4.0),
        ("ccpa", 0.3),
        ("conflict", 0.15),
    )
)
ANON_EVENT_KINDS = _weighted(
    (("page_viewed", 55.0), ("product_viewed", 35.0), ("added_to_cart", 10.0))
)
CONSENT_STATUSES = _weighted(
    (("opted_in", 55.0), ("opted_out", 15.0), ("pending", 15.0), ("unknown", 15.0))
)
BOUNCE_TYPES = _weighted((("soft", 80.0), ("hard", 17.0), ("complaint", 3.0)))
SUBSCRIPTION_STATUSES = _weighted(
    (("subscribed", 60.0), ("unsubscribed", 20.0), ("unconfirmed", 15.0), ("suspended", 5.0))
)
CCPA_REQUESTS = _weighted((("opt_out", 70.0), ("opt_in", 25.0), ("delete", 5.0)))
_BROWSING = frozenset({"page_viewed", "product_viewed", "added_to_cart"})
INVALID_KINDS = (
    "naive_timestamp",
    "unknown_type",
    "missing_identifiers",
    "empty_identifiers",
    "junk_identifiers",
    "sms_consent_without_phone",
    "purchase_without_revenue",
    "not_json",
)

# Per-person lifecycle byte. Values >= _ANON_IDENTIFY_NEXT count anonymous events still to
# come: at exactly _ANON_IDENTIFY_NEXT the next event is the identify that links them.
_UNSEEN = 0
_KNOWN = 1
_ANON_ONLY = 2
_ANON_IDENTIFY_NEXT = 3


def _mix64(value: int) -> int:
    """splitmix64 finaliser: a cheap bijective hash, so people derive from their index."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


_UUID_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _uuid_from_hex(text: str) -> str:
    """A version-4 UUID string from 32 random hex digits (as uuid.UUID(version=4) prints it).

    String slicing rather than big-int masking: this runs once per event.
    """
    return (
        f"{text[:8]}-{text[8:12]}-4{text[13:16]}-{_UUID_VARIANT[text[16]]}{text[17:20]}-{text[20:]}"
    )


@dataclass(slots=True)
class Person:
    """Who someone is: derived from (salt, index) whenever needed, never stored for long."""

    index: int
    lifecycle: int  # _KNOWN (identifies at once), _ANON_ONLY, or _ANON_IDENTIFY_NEXT
    customer_id: str | None
    emails: tuple[str, ...]
    email_shift: float  # when in the window this person moves on to their next address
    phones: tuple[tuple[int, int, int], ...]  # (area, exchange, subscriber)
    push_token: str | None
    anonymous_ids: tuple[str, ...]
    looks: int  # the hash word traits derive from (built only when an identify needs them)


def _byte_share(percent: float) -> int:
    """The threshold a random byte falls below with the given probability."""
    return round(percent * 256 / 100)


# Person rolls compare one random byte each against these.
_ANON_FIRST_BELOW = _byte_share(55)
_ANON_ONLY_BELOW = _byte_share(65)
_CUSTOMER_ID_BELOW = _byte_share(60)
# Emails: below the first threshold none, below the second one, below the third two, else 3.
_EMAIL_COUNT_BELOW = (_byte_share(10), _byte_share(72), _byte_share(92))
_PHONE_COUNT_BELOW = (_byte_share(50), _byte_share(88))  # 0, 1, else 2
_PUSH_TOKEN_BELOW = _byte_share(30)
_SECOND_DEVICE_BELOW = _byte_share(25)
_EMAIL_TYPO_BELOW = _byte_share(2)


def _phone(salt: int, slot: int) -> tuple[int, int, int]:
    number = (slot * _PHONE_MULTIPLIER + salt) % _PHONE_SPACE
    number, area = divmod(number, len(AREA_CODES))
    subscriber, exchange = divmod(number, 800)
    return AREA_CODES[area], 200 + exchange, subscriber


def _emails(index: int, looks: int, count: int, typo: bool) -> tuple[str, ...]:
    first = FIRST_NAMES[looks % len(FIRST_NAMES)][1]
    last = LAST_NAMES[(looks >> 8) % len(LAST_NAMES)][1]
    domain = (looks >> 16) % len(EMAIL_DOMAINS)
    home = f"{first}.{last}{index}@{EMAIL_DOMAINS[domain]}"
    if typo:  # fails the syntax check: kept, marked invalid, never deliverable
        home = f"{first}{index}@@{EMAIL_DOMAINS[domain]}"
    if count == 1:
        return (home,)
    work = f"{first[0]}{last}{index}@{WORK_DOMAINS[(looks >> 24) % len(WORK_DOMAINS)]}"
    if count == 2:
        return (home, work)
    return (home, work, f"{first}{index}@{EMAIL_DOMAINS[(domain + 1) % len(EMAIL_DOMAINS)]}")


def build_person(salt: int, index: int) -> Person:
    word = _mix64(salt ^ index)  # a bijection of the index: unique per person
    looks = _mix64(word)
    life, cid, email_roll, phone_roll, push, device, typo, shift = word.to_bytes(8, "little")
    customer_id = f"C{index:07d}" if cid < _CUSTOMER_ID_BELOW else None
    email_count = bisect(_EMAIL_COUNT_BELOW, email_roll)
    phone_count = 0 if phone_roll < _PHONE_COUNT_BELOW[0] else 1
    if customer_id is None and email_count == 0 and phone_count == 0:
        email_count = 1  # every identifiable person has something to identify with
    phones: tuple[tuple[int, int, int], ...] = ()
    if phone_count:
        phones = (_phone(salt, index * 2),)
        if phone_roll >= _PHONE_COUNT_BELOW[1]:
            phones += (_phone(salt, index * 2 + 1),)
    anonymous_ids: tuple[str, ...] = (_uuid_from_hex(f"{word:016x}{looks:016x}"),)
    if device < _SECOND_DEVICE_BELOW:
        anonymous_ids += (_uuid_from_hex(f"{looks:016x}{word:016x}"),)
    return Person(
        index,
        _ANON_IDENTIFY_NEXT
        if life < _ANON_FIRST_BELOW
        else _ANON_ONLY
        if life < _ANON_ONLY_BELOW
        else _KNOWN,
        customer_id,
        _emails(index, looks, email_count, typo < _EMAIL_TYPO_BELOW) if email_count else (),
        shift / 256,
        phones,
        f"{looks ^ word:016x}{_mix64(looks):016x}" if push < _PUSH_TOKEN_BELOW else None,
        anonymous_ids,
        looks,
    )


def person_traits(person: Person) -> dict[str, str | int | None]:
    """The standard attributes this person would tell us about themselves."""
    looks = person.looks
    city, country, time_zone = PLACES[(looks >> 32) % len(PLACES)]
    return {
        "first_name": FIRST_NAMES[looks % len(FIRST_NAMES)][0],
        "last_name": LAST_NAMES[(looks >> 8) % len(LAST_NAMES)][0],
        "gender": GENDERS[(looks >> 40) % len(GENDERS)],
        "city": city,
        "country": country,
        "time_zone": time_zone,
        "birthday_day": 1 + (looks >> 48) % 28,
        "birthday_month": 1 + (looks >> 56) % 12,
    }


class _Stream:
    """The generator's state: one rng, one byte per person, small bounded buffers.

    Hot path notes: builders take the event's ISO timestamp text (formatted once per event),
    build each event as one dict literal, and draw event ids from a pooled hex string.
    """

    def __init__(self, n: int, seed: int, start_us: int, days: float, invalid_rate: float) -> None:
        if n < 0:
            raise ValueError("the number of events must be >= 0")
        if days * 86_400 < 1:
            raise ValueError("days must be > 0 and cover at least one second")
        if not 0.0 <= invalid_rate <= 1.0:
            raise ValueError("invalid_rate must be between 0 and 1")
        self.n = n
        self.rng = random.Random(seed)
        self.salt = self.rng.getrandbits(64)
        self.order_tag = f"{self.salt & 0xFFFFFF:06x}"
        self.invalid_rate = invalid_rate
        self.population = max(1, int(n * PEOPLE_PER_EVENT))
        self.new_person_rate = self.population / max(1, n)
        self.state = bytearray()  # grows by one byte per person as they show up
        self.introduced = 0
        self.order_seq = 0
        self.position = 0
        self.last_valid = True
        self.recent_events: deque[dict[str, Any]] = deque(maxlen=64)
        self.recent_orders: deque[dict[str, Any]] = deque(maxlen=256)
        self.recent_people: dict[int, Person] = {}  # the last RECENT_WINDOW arrivals
        self.id_pool = ""
        self.id_offset = 0
        self._init_clock(start_us, max(1, int(days * _US_PER_DAY)))
        self.builders: dict[str, Callable[[str, Person], dict[str, Any]]] = {
            "purchase": self.purchase,
            "message_sent": self.message_sent,
            "consent": self.consent,
            "subscription": self.subscription,
            "bounce": self.bounce,
            "ccpa": self.ccpa,
            "conflict": self.conflict,
        }

    def _init_clock(self, start_us: int, span_us: int) -> None:
        # Times are kept in ms relative to the minute the window starts in: small ints and
        # floats on the hot path, and a per-minute cache of the "YYYY-MM-DDTHH:MM:" prefix.
        start_ms = -(-start_us // 1000)  # ceil: never before the window
        end_ms = (start_us + span_us) // 1000
        self.origin_ms = start_ms - start_ms % 60_000
        self.first_ms = start_ms - self.origin_ms
        self.last_ms = end_ms - self.origin_ms - 1
        self.ms_per_event = (end_ms - start_ms) / max(1, self.n)
        self.origin_minute = self.origin_ms // 60_000
        self.first_day = self.origin_minute // 1440
        last_day = (end_ms // 60_000) // 1440
        self.day_prefix = [
            iso_from_us(day * _US_PER_DAY)[:10] for day in range(self.first_day, last_day + 1)
        ]
        self.cached_minute = -1
        self.cached_prefix = ""

    def minute_prefix(self, minute: int) -> str:
        """The 'YYYY-MM-DDTHH:MM:' prefix of a minute counted from ``origin_ms``."""
        day, minute_of_day = divmod(self.origin_minute + minute, 1440)
        hour, minute_of_hour = divmod(minute_of_day, 60)
        return f"{self.day_prefix[day - self.first_day]}T{hour:02d}:{minute_of_hour:02d}:"

    def person(self, index: int) -> Person:
        """Recent arrivals are kept (they are picked most); the long tail is rebuilt."""
        person = self.recent_people.get(index)
        if person is None:
            person = build_person(self.salt, index)
            if index >= self.introduced - RECENT_WINDOW:
                self.recent_people[index] = person
        return person

    # --- small helpers -----------------------------------------------------------------

    def pick(self, weighted: _Weighted) -> str:
        values, cumulative = weighted
        return values[bisect(cumulative, self.rng.random())]

    def event_id(self) -> str:
        """A version-4 UUID; random hex comes from a pool refilled 4096 ids at a time."""
        offset = self.id_offset
        if offset == len(self.id_pool):
            self.id_pool = self.rng.randbytes(16 * 4096).hex()
            offset = 0
        self.id_offset = offset + 32
        return _uuid_from_hex(self.id_pool[offset : offset + 32])

    def stamp(self, position: int) -> str:
        """ISO time (ms, 'Z') of the event at ``position``: evenly spread plus jitter."""
        rng = self.rng
        if rng.random() < 0.03:  # a late arrival, a few minutes out of order
            late = position * self.ms_per_event - 60_000 - rng.random() * 240_000
            moment = self.first_ms + int(late) if late > 0 else self.first_ms
        else:
            moment = self.first_ms + int((position + rng.random()) * self.ms_per_event)
            moment = moment if moment < self.last_ms else self.last_ms
        minute, millis = divmod(moment, 60_000)
        if minute != self.cached_minute:  # neighbouring events mostly share a minute
            self.cached_minute = minute
            self.cached_prefix = self.minute_prefix(minute)
        second, millis = divmod(millis, 1000)
        return f"{self.cached_prefix}{second:02d}.{millis:03d}Z"

    def pick_person(self) -> int:
        rng = self.rng
        introduced = self.introduced
        if introduced < self.population and (
            introduced == 0 or rng.random() < self.new_person_rate
        ):
            self.introduced += 1
            self.state.append(_UNSEEN)
            self.recent_people.pop(introduced - RECENT_WINDOW, None)
            return introduced
        if rng.random() < RECENT_SHARE:
            # Recent arrivals are busiest: sessions are bursty.
            window = introduced if introduced < RECENT_WINDOW else RECENT_WINDOW
            return introduced - 1 - int(window * rng.random() ** 2)
        return int(introduced * rng.random())  # the long tail of returning people

    def email(self, person: Person) -> str | None:
        emails = person.emails
        if not emails:
            return None
        rng = self.rng
        count = len(emails)
        current = 0
        if count > 1:
            # People move on to their next address over the window, now and then using an
            # old one again.
            progress = self.position / self.n
            current = min(count - 1, int(progress * count + person.email_shift))
            if current and rng.random() < 0.15:
                current = int(rng.random() * current)
        address = emails[current]
        return address.title() if rng.random() < 0.03 else address

    def phone(self, person: Person) -> str:
        rng = self.rng
        phones = person.phones
        area, exchange, subscriber = phones[int(rng.random() * len(phones))]
        return PHONE_FORMATS[int(rng.random() * len(PHONE_FORMATS))](area, exchange, subscriber)

    def anonymous_id(self, person: Person) -> str:
        ids = person.anonymous_ids
        return ids[0] if len(ids) == 1 else ids[int(self.rng.random() * len(ids))]

    def known_ids(self, person: Person) -> dict[str, str]:
        """How a logged-in person is usually named: customer_id, else email, else phone."""
        customer_id = person.customer_id
        if customer_id is not None and self.rng.random() < 0.85:
            return {"customer_id": customer_id}
        email = self.email(person)
        if email is not None:
            return {"email": email}
        if customer_id is not None:
            return {"customer_id": customer_id}
        return {"phone": self.phone(person)}

    def channels(self, person: Person) -> list[str]:
        out = []
        if person.emails:
            out.append("email")
        if person.phones:
            out.append("sms")
        if person.push_token is not None:
            out.append("push")
        return out

    def channel_id(self, person: Person, channel: str) -> dict[str, str]:
        """The identifier a channel delivers to; the person must have the channel."""
        if channel == "email":
            return {"email": self.email(person) or ""}
        if channel == "sms":
            return {"phone": self.phone(person)}
        return {"push_token": person.push_token or ""}

    # --- event builders ----------------------------------------------------------------

    def track(self, stamp: str, ids: dict[str, str], name: str) -> dict[str, Any]:
        rng = self.rng
        if name == "page_viewed":
            properties: dict[str, Any] = {"path": PAGE_PATHS[int(rng.random() * len(PAGE_PATHS))]}
        elif name == "product_viewed":
            properties = {
                "product_id": f"SKU-{int(rng.random() * 5000):05d}",
                "category": CATEGORIES[int(rng.random() * len(CATEGORIES))],
            }
        elif name == "added_to_cart":
            properties = {
                "product_id": f"SKU-{int(rng.random() * 5000):05d}",
                "quantity": 1 + int(rng.random() * 3),
            }
        else:
            properties = {}
        return {
            "event_id": self.event_id(),
            "type": "track",
            "timestamp": stamp,
            "identifiers": ids,
            "event": name,
            "properties": properties,
        }

    def purchase(self, stamp: str, person: Person) -> dict[str, Any]:
        rng = self.rng
        if self.recent_orders and rng.random() < 0.04:
            # A retry from another system: same order, new event id.
            previous = self.recent_orders[int(rng.random() * len(self.recent_orders))]
            return self.track(stamp, dict(previous["identifiers"]), "purchase") | {
                "properties": dict(previous["properties"])
            }
        self.order_seq += 1
        event = self.track(stamp, self.known_ids(person), "purchase")
        event["properties"] = {
            "order_id": f"ORD-{self.order_tag}-{self.order_seq:08d}",
            "revenue": round(min(2000.0, rng.lognormvariate(3.8, 0.7)), 2),
            "currency": "USD",
            "items": 1 + int(rng.random() * 4),
        }
        self.recent_orders.append(event)
        return event

    def message_sent(self, stamp: str, person: Person) -> dict[str, Any]:
        available = self.channels(person)
        if not available:
            return self.identify(stamp, person, full=False)
        channel = available[int(self.rng.random() * len(available))]
        event = self.track(stamp, self.channel_id(person, channel), "message_sent")
        event["properties"] = {
            "channel": channel,
            "campaign_id": CAMPAIGNS[int(self.rng.random() * len(CAMPAIGNS))],
        }
        return event

    def identify(self, stamp: str, person: Person, full: bool) -> dict[str, Any]:
        rng = self.rng
        ids: dict[str, str] = {}
        if person.customer_id is not None:
            ids["customer_id"] = person.customer_id
        email = self.email(person)
        if email is not None:
            ids["email"] = email
        if person.phones and (full or rng.random() < 0.3 or not ids):
            ids["phone"] = self.phone(person)
        traits = person_traits(person)
        if not full:
            names = _TRAIT_UPDATES[int(rng.random() * len(_TRAIT_UPDATES))]
            traits = {name: traits[name] for name in names}
            if "city" in traits and rng.random() < 0.2:  # people move
                city, country, time_zone = PLACES[int(rng.random() * len(PLACES))]
                traits.update(city=city, country=country, time_zone=time_zone)
            if rng.random() < 0.05:  # an explicit unset
                traits[names[0]] = None
        return {
            "event_id": self.event_id(),
            "type": "identify",
            "timestamp": stamp,
            "identifiers": ids,
            "traits": traits,
        }

    def channel_event(
        self, kind: str, stamp: str, ids: dict[str, str], fields: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "event_id": self.event_id(),
            "type": kind,
            "timestamp": stamp,
            "identifiers": ids,
        } | fields

    def consent(self, stamp: str, person: Person) -> dict[str, Any]:
        available = self.channels(person)
        if not available:
            return self.identify(stamp, person, full=False)
        channel = available[int(self.rng.random() * len(available))]
        ids = self.channel_id(person, channel)
        if person.customer_id is not None and self.rng.random() < 0.4:
            ids["customer_id"] = person.customer_id
        fields = {"channel": channel, "status": self.pick(CONSENT_STATUSES)}
        return self.channel_event("consent", stamp, ids, fields)

    def subscription(self, stamp: str, person: Person) -> dict[str, Any]:
        rng = self.rng
        available = self.channels(person)
        if not available:
            return self.identify(stamp, person, full=False)
        channel = available[int(rng.random() * len(available))]
        ids = self.channel_id(person, channel)
        if person.customer_id is not None and rng.random() < 0.4:
            ids["customer_id"] = person.customer_id
        lists = LISTS_BY_CHANNEL[channel]
        fields = {
            "list_id": lists[int(rng.random() * len(lists))],
            "channel": channel,
            "status": self.pick(SUBSCRIPTION_STATUSES),
        }
        return self.channel_event("subscription", stamp, ids, fields)

    def bounce(self, stamp: str, person: Person) -> dict[str, Any]:
        available = self.channels(person)
        if not available:
            return self.identify(stamp, person, full=False)
        roll = self.rng.random()
        channel = "email" if roll < 0.8 else "sms" if roll < 0.95 else "push"
        if channel not in available:
            channel = available[0]
        fields = {"channel": channel, "bounce_type": self.pick(BOUNCE_TYPES)}
        return self.channel_event("bounce", stamp, self.channel_id(person, channel), fields)

    def ccpa(self, stamp: str, person: Person) -> dict[str, Any]:
        request = self.pick(CCPA_REQUESTS)
        if request == "delete":
            # Erased: if they come back they start over as someone new to the engine.
            self.state[person.index] = _UNSEEN
        return self.channel_event("ccpa", stamp, self.known_ids(person), {"request": request})

    def conflict(self, stamp: str, person: Person) -> dict[str, Any]:
        """An identify pairing this customer_id with an email another customer_id owns."""
        rng = self.rng
        if person.customer_id is not None:
            for _ in range(8):
                other = self.person(int(rng.random() * self.introduced))
                if (
                    other.index != person.index
                    and other.customer_id is not None
                    and other.emails
                    and self.state[other.index] == _KNOWN
                ):
                    ids = {"customer_id": person.customer_id, "email": other.emails[0]}
                    return self.channel_event("identify", stamp, ids, {"traits": {}})
        return self.identify(stamp, person, full=False)

    def known_event(self, stamp: str, person: Person) -> dict[str, Any]:
        kind = self.pick(KNOWN_EVENT_KINDS)
        if kind in _BROWSING:
            ids = self.known_ids(person)
            roll = self.rng.random()
            if roll < 0.5:  # logged in on a device we also know anonymously
                ids["anonymous_id"] = self.anonymous_id(person)
            elif roll < 0.65 and person.push_token is not None:  # in the mobile app
                ids["push_token"] = person.push_token
            return self.track(stamp, ids, kind)
        if kind == "identify":
            return self.identify(stamp, person, full=False)
        return self.builders[kind](stamp, person)

    def valid_event(self, stamp: str) -> dict[str, Any]:
        index = self.pick_person()
        person = self.person(index)
        state = self.state[index]
        if state == _KNOWN:
            return self.known_event(stamp, person)
        if state == _UNSEEN:
            if person.lifecycle == _KNOWN:
                self.state[index] = _KNOWN
                return self.identify(stamp, person, full=True)
            state = person.lifecycle
            if state == _ANON_IDENTIFY_NEXT:
                state += 1 + int(self.rng.random() * 4)  # browse 1-4 times before identifying
        if state == _ANON_IDENTIFY_NEXT:
            self.state[index] = _KNOWN
            event = self.identify(stamp, person, full=True)
            event["identifiers"]["anonymous_id"] = self.anonymous_id(person)
            return event
        if state > _ANON_IDENTIFY_NEXT:
            state -= 1
        self.state[index] = state
        ids = {"anonymous_id": self.anonymous_id(person)}
        return self.track(stamp, ids, self.pick(ANON_EVENT_KINDS))

    def invalid_event(self, stamp: str) -> GeneratedItem:
        rng = self.rng
        kind = INVALID_KINDS[int(rng.random() * len(INVALID_KINDS))]
        person = self.person(int(rng.random() * max(1, self.introduced)))
        event = self.track(stamp, {"anonymous_id": person.anonymous_ids[0]}, "page_viewed")
        if kind == "naive_timestamp":
            event["timestamp"] = stamp.removesuffix("Z")
        elif kind == "unknown_type":
            event["type"] = rng.choice(("pageview", "alias", "Track", ""))
        elif kind == "missing_identifiers":
            del event["identifiers"]
        elif kind == "empty_identifiers":
            event["identifiers"] = {}
        elif kind == "junk_identifiers":
            id_type = rng.choice(("anonymous_id", "email", "customer_id"))
            event["identifiers"] = {id_type: rng.choice(("undefined", "null", "", "guest"))}
        elif kind == "sms_consent_without_phone":
            ids = {"email": f"{person.index}@example.com"}
            fields = {"channel": "sms", "status": "opted_in"}
            event = self.channel_event("consent", stamp, ids, fields)
        elif kind == "purchase_without_revenue":
            event.update(event="purchase", properties={"order_id": "ORD-broken", "revenue": "9.99"})
        else:
            line = json.dumps(event)
            return line[: len(line) // 2]  # a truncated write: not JSON at all
        return event

    def events(self) -> Iterator[GeneratedItem]:
        """The stream; ``last_valid`` tells whether the item just yielded was meant to be valid."""
        rng = self.rng
        invalid_rate = self.invalid_rate
        duplicate_until = invalid_rate + DUPLICATE_RATE
        recent = self.recent_events
        stamp_at = self.stamp
        valid_event = self.valid_event
        for position in range(self.n):
            self.position = position
            stamp = stamp_at(position)
            roll = rng.random()
            if roll >= duplicate_until:
                event = valid_event(stamp)
                recent.append(event)
                yield event
            elif roll < invalid_rate:
                self.last_valid = False
                yield self.invalid_event(stamp)
                self.last_valid = True
            elif recent:
                # An exact re-send: same event_id, same bytes.
                yield recent[int(rng.random() * len(recent))]
            else:
                event = valid_event(stamp)
                recent.append(event)
                yield event

    def labelled(self) -> Iterator[tuple[GeneratedItem, bool]]:
        for item in self.events():
            yield item, self.last_valid


def generate_labelled(
    n: int,
    seed: int,
    start_us: int = DEFAULT_START_US,
    days: float = DEFAULT_DAYS,
    invalid_rate: float = DEFAULT_INVALID_RATE,
) -> Iterator[tuple[GeneratedItem, bool]]:
    """Like ``generate_events`` but each item comes with True when it was meant to be valid."""
    return _Stream(n, seed, start_us, days, invalid_rate).labelled()


def generate_events(
    n: int,
    seed: int,
    start_us: int = DEFAULT_START_US,
    days: float = DEFAULT_DAYS,
    invalid_rate: float = DEFAULT_INVALID_RATE,
) -> Iterator[GeneratedItem]:
    """``n`` events over ``days`` from ``start_us``: dicts, and ``str`` for non-JSON lines."""
    return _Stream(n, seed, start_us, days, invalid_rate).events()


def to_line(item: GeneratedItem) -> str:
    """One JSON Lines line (without the newline); a non-JSON item is written verbatim.

    Compact UTF-8 JSON, the same text as json.dumps(item, separators=(",", ":"),
    ensure_ascii=False), made by pydantic's Rust serialiser: about twice as fast.
    """
    return item if isinstance(item, str) else to_json(item).decode()


def generate_lines(
    n: int,
    seed: int,
    start_us: int = DEFAULT_START_US,
    days: float = DEFAULT_DAYS,
    invalid_rate: float = DEFAULT_INVALID_RATE,
) -> Iterator[str]:
    """The stream as JSON Lines text, one line per item, without newlines."""
    for item in _Stream(n, seed, start_us, days, invalid_rate).events():
        yield item if isinstance(item, str) else to_json(item).decode()


def generate_line_bytes(
    n: int,
    seed: int,
    start_us: int = DEFAULT_START_US,
    days: float = DEFAULT_DAYS,
    invalid_rate: float = DEFAULT_INVALID_RATE,
) -> Iterator[bytes]:
    """``generate_lines`` as UTF-8 bytes, for writers that skip the text layer."""
    for item in _Stream(n, seed, start_us, days, invalid_rate).events():
        yield item.encode() if isinstance(item, str) else to_json(item)
