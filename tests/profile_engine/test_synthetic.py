"""The synthetic stream: deterministic, lazy, contract-clean where meant to be, and realistic."""

from __future__ import annotations

import itertools
import json
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from profile_engine.attributes import AttributeRegistry
from profile_engine.contract import ContractError, parse_event
from profile_engine.events import (
    Bounce,
    Ccpa,
    Consent,
    Identify,
    ProfileEvent,
    Subscription,
    Track,
    datetime_to_us,
)
from profile_engine.identifiers import normalise_phone
from profile_engine.synthetic import (
    AREA_CODES,
    DEFAULT_START_US,
    TRAIT_NAMES,
    build_person,
    generate_events,
    generate_labelled,
    generate_line_bytes,
    generate_lines,
    to_line,
)

SAMPLE_EVENTS = 40_000
SAMPLE_SEED = 11
DAY_US = 86_400_000_000


@dataclass
class Sample:
    """One generated stream, parsed once for the whole module."""

    lines: list[str]
    meant_valid: list[bool]
    parsed: list[ProfileEvent | None]  # None where the line failed to parse


def parse_line(line: str) -> ProfileEvent | None:
    try:
        return parse_event(json.loads(line))
    except (json.JSONDecodeError, ContractError):
        return None


@pytest.fixture(scope="module")
def sample() -> Sample:
    lines, meant_valid = [], []
    for item, valid in generate_labelled(SAMPLE_EVENTS, SAMPLE_SEED):
        lines.append(to_line(item))
        meant_valid.append(valid)
    return Sample(lines, meant_valid, [parse_line(line) for line in lines])


def events(sample: Sample) -> list[ProfileEvent]:
    return [event for event in sample.parsed if event is not None]


def ids_of(event: ProfileEvent) -> dict[str, str]:
    return {ident.id_type: ident.value for ident in event.identifiers}


# --- determinism and laziness ------------------------------------------------------------


def test_same_seed_gives_byte_identical_output() -> None:
    first = "\n".join(generate_lines(3_000, 42))
    second = "\n".join(generate_lines(3_000, 42))
    assert first == second


def test_different_seeds_give_different_output() -> None:
    assert list(generate_lines(500, 1)) != list(generate_lines(500, 2))


def test_lines_are_the_compact_json_of_the_events() -> None:
    items = list(generate_events(2_000, 5))
    lines = list(generate_lines(2_000, 5))
    assert lines == [to_line(item) for item in items]
    for item, line in zip(items, lines, strict=True):
        expected = (
            item
            if isinstance(item, str)
            else json.dumps(item, separators=(",", ":"), ensure_ascii=False)
        )
        assert line == expected


def test_line_bytes_are_the_utf8_lines() -> None:
    assert list(generate_line_bytes(500, 6)) == [line.encode() for line in generate_lines(500, 6)]


def test_the_stream_is_lazy_not_a_prebuilt_list() -> None:
    # A trillion-event stream must yield its first items at once (and never build a list).
    first = list(itertools.islice(generate_events(10**12, 3), 5))
    assert len(first) == 5


def test_exactly_n_items_are_generated() -> None:
    assert sum(1 for _ in generate_events(1_234, 9)) == 1_234
    assert list(generate_events(0, 9)) == []


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="days"):
        next(generate_events(10, 1, days=0))
    with pytest.raises(ValueError, match="invalid_rate"):
        next(generate_events(10, 1, invalid_rate=1.5))


# --- contract ----------------------------------------------------------------------------


def test_every_line_meant_valid_passes_the_contract(sample: Sample) -> None:
    failures = [
        line
        for line, valid, event in zip(sample.lines, sample.meant_valid, sample.parsed, strict=True)
        if valid and event is None
    ]
    assert failures == []


def test_every_line_meant_invalid_fails_the_contract(sample: Sample) -> None:
    invalid = [
        (line, event)
        for line, valid, event in zip(sample.lines, sample.meant_valid, sample.parsed, strict=True)
        if not valid
    ]
    assert invalid, "the sample has invalid lines"
    assert [line for line, event in invalid if event is not None] == []


def test_invalid_lines_follow_the_rate(sample: Sample) -> None:
    invalid = sample.meant_valid.count(False)
    expected = SAMPLE_EVENTS * 0.005  # the default rate: 200
    assert expected * 0.6 <= invalid <= expected * 1.4


def test_invalid_lines_come_in_every_kind(sample: Sample) -> None:
    reasons: Counter[str] = Counter()
    for line, valid in zip(sample.lines, sample.meant_valid, strict=True):
        if valid:
            continue
        try:
            parse_event(json.loads(line))
        except json.JSONDecodeError:
            reasons["not json"] += 1
        except ContractError as error:
            reasons[str(error).split(":")[0]] += 1
    assert {"not json", "timestamp", "type", "identifiers", "properties"} <= set(reasons)
    assert any(key.startswith("identifiers.phone") for key in reasons)  # sms consent, no phone


def test_rate_zero_gives_only_valid_lines() -> None:
    lines = list(generate_lines(3_000, 4, invalid_rate=0.0))
    assert all(parse_line(line) is not None for line in lines)


def test_event_ids_are_version_4_uuids(sample: Sample) -> None:
    for event in events(sample)[:2_000]:
        parsed = uuid.UUID(event.event_id)
        assert parsed.version == 4 and str(parsed) == event.event_id


def test_traits_use_only_standard_attributes_with_their_types(
    sample: Sample, tmp_path: Path
) -> None:
    registry = AttributeRegistry.load(tmp_path / "no-custom-attributes.json")
    identifies = [e for e in events(sample) if isinstance(e, Identify)]
    for event in identifies:
        assert set(event.traits) <= set(TRAIT_NAMES)
        registry.validate_traits(event.traits)  # raises ContractError on a bad one
    assert any(None in e.traits.values() for e in identifies), "some traits get unset"


# --- what the stream contains -------------------------------------------------------------


def test_all_six_types_and_every_track_event_occur(sample: Sample) -> None:
    parsed = events(sample)
    assert {e.type for e in parsed} == {
        "identify", "track", "consent", "bounce", "subscription", "ccpa",
    }  # fmt: skip
    names = Counter(e.event for e in parsed if isinstance(e, Track))
    assert set(names) == {
        "page_viewed", "product_viewed", "added_to_cart", "message_sent", "purchase",
    }  # fmt: skip
    # Most events are track events.
    assert sum(names.values()) > 0.6 * len(parsed)


def test_anonymous_browsing_is_later_linked_to_an_email(sample: Sample) -> None:
    anonymous_only = set()
    linked = set()
    for event in events(sample):
        ids = ids_of(event)
        if set(ids) == {"anonymous_id"} and isinstance(event, Track):
            anonymous_only.add(ids["anonymous_id"])
        elif (
            isinstance(event, Identify)
            and "email" in ids
            and ids.get("anonymous_id") in anonymous_only
        ):
            linked.add(ids["anonymous_id"])
    assert len(linked) > 100


def test_purchases_carry_order_id_and_two_decimal_revenue(sample: Sample) -> None:
    purchases = [e for e in events(sample) if isinstance(e, Track) and e.event == "purchase"]
    assert len(purchases) > 300
    for event in purchases:
        revenue = event.properties["revenue"]
        assert isinstance(event.properties["order_id"], str)
        assert isinstance(revenue, float) and revenue > 0 and round(revenue, 2) == revenue


def test_some_orders_are_re_sent_with_a_new_event_id_and_the_same_revenue(
    sample: Sample,
) -> None:
    by_order: defaultdict[str, set[tuple[str, float]]] = defaultdict(set)
    for event in events(sample):
        if isinstance(event, Track) and event.event == "purchase":
            by_order[event.properties["order_id"]].add(
                (event.event_id, event.properties["revenue"])
            )
    resent = [sends for sends in by_order.values() if len(sends) > 1]
    assert resent
    for sends in resent:
        assert len({revenue for _, revenue in sends}) == 1


def test_exact_duplicates_occur(sample: Sample) -> None:
    valid_lines = [
        line for line, valid in zip(sample.lines, sample.meant_valid, strict=True) if valid
    ]
    repeated = [line for line, count in Counter(valid_lines).items() if count > 1]
    assert repeated
    # A duplicate is the same event, not merely the same id.
    ids = Counter(e.event_id for e in events(sample))
    assert sum(count - 1 for count in ids.values()) == len(valid_lines) - len(set(valid_lines))


def test_timestamps_fill_the_window_and_rise_with_small_jitter(sample: Sample) -> None:
    start, end = DEFAULT_START_US, DEFAULT_START_US + 60 * DAY_US
    stamps = [e.timestamp_us for e in events(sample)]
    assert all(start <= t < end for t in stamps)
    assert max(stamps) - min(stamps) > 59 * DAY_US
    valid_lines = [line for line, ok in zip(sample.lines, sample.meant_valid, strict=True) if ok]
    assert all(json.loads(line)["timestamp"].endswith("Z") for line in valid_lines)
    # Out of order sometimes, but never by more than five minutes plus one step of the
    # even spread (duplicates aside: they repeat an earlier event's time on purpose).
    firsts: dict[str, int] = {}
    for event in events(sample):
        firsts.setdefault(event.event_id, event.timestamp_us)
    ordered = list(firsts.values())
    running_max = list(itertools.accumulate(ordered, max))
    behind = [peak - t for peak, t in zip(running_max, ordered, strict=True) if t < peak]
    step = (end - start) // SAMPLE_EVENTS
    assert behind and max(behind) <= 5 * 60 * 1_000_000 + step


def test_start_and_days_set_the_window() -> None:
    start = datetime_to_us(datetime.fromisoformat("2025-06-01T12:00:00Z"))
    stamps = [
        event.timestamp_us
        for line in generate_lines(2_000, 8, start_us=start, days=2, invalid_rate=0.0)
        if (event := parse_line(line)) is not None
    ]
    assert all(start <= t < start + 2 * DAY_US for t in stamps)


def test_people_use_several_emails_and_some_emails_are_malformed(sample: Sample) -> None:
    emails_by_customer: defaultdict[str, set[str]] = defaultdict(set)
    invalid_emails = set()
    for event in events(sample):
        ids = ids_of(event)
        if "customer_id" in ids and "email" in ids:
            emails_by_customer[ids["customer_id"]].add(ids["email"])
        invalid_emails |= {
            i.value for i in event.identifiers if i.id_type == "email" and not i.valid
        }
    assert sum(len(emails) > 1 for emails in emails_by_customer.values()) > 50
    assert invalid_emails and all("@@" in email for email in invalid_emails)


def test_some_emails_are_claimed_by_two_customer_ids(sample: Sample) -> None:
    customers_by_email: defaultdict[str, set[str]] = defaultdict(set)
    for event in events(sample):
        ids = ids_of(event)
        if "customer_id" in ids and "email" in ids:
            customers_by_email[ids["email"]].add(ids["customer_id"])
    assert any(len(customers) > 1 for customers in customers_by_email.values())


def test_phones_are_valid_and_arrive_in_several_formats(sample: Sample) -> None:
    raw_phones = [
        json.loads(line)["identifiers"]["phone"]
        for line, valid in zip(sample.lines, sample.meant_valid, strict=True)
        if valid and '"phone"' in line
    ]
    assert len(raw_phones) > 500
    assert all(normalise_phone(raw)[1] for raw in raw_phones)
    shapes = {"".join("9" if ch.isdigit() else ch for ch in raw) for raw in raw_phones}
    assert len(shapes) >= 5


@pytest.mark.parametrize("area", AREA_CODES)
def test_every_area_code_gives_valid_numbers_across_the_exchange_range(area: int) -> None:
    for exchange, subscriber in [(200, 0), (211, 1234), (555, 100), (999, 9999)]:
        assert normalise_phone(f"({area}) {exchange}-{subscriber:04d}")[1]


def test_phones_are_unique_per_person() -> None:
    phones = [phone for i in range(20_000) for phone in build_person(77, i).phones]
    assert len(phones) == len(set(phones)) > 5_000


def test_channel_events_carry_the_channel_identifier(sample: Sample) -> None:
    needed = {"email": "email", "sms": "phone", "push": "push_token"}
    channel_events = [e for e in events(sample) if isinstance(e, Consent | Bounce | Subscription)]
    for event in channel_events:
        assert needed[event.channel] in ids_of(event)
    assert {e.channel for e in channel_events} == {"email", "sms", "push"}


def test_consents_bounces_subscriptions_and_ccpa_cover_their_values(sample: Sample) -> None:
    parsed = events(sample)
    consents = Counter(e.status for e in parsed if isinstance(e, Consent))
    bounces = Counter(e.bounce_type for e in parsed if isinstance(e, Bounce))
    subscriptions = [e for e in parsed if isinstance(e, Subscription)]
    requests = Counter(e.request for e in parsed if isinstance(e, Ccpa))
    assert set(consents) == {"opted_in", "opted_out", "pending", "unknown"}
    assert bounces["soft"] > bounces["hard"] > bounces["complaint"] > 0
    assert {e.status for e in subscriptions} == {
        "subscribed", "unsubscribed", "unconfirmed", "suspended",
    }  # fmt: skip
    assert {"newsletter", "promotions", "sms-alerts"} <= {e.list_id for e in subscriptions}
    assert requests["opt_out"] > requests["opt_in"] > requests["delete"] > 0
    assert sum(requests.values()) < 0.01 * len(parsed)


def test_push_tokens_and_customer_ids_occur(sample: Sample) -> None:
    seen = Counter(i.id_type for e in events(sample) for i in e.identifiers)
    assert set(seen) == {"customer_id", "email", "phone", "push_token", "anonymous_id"}
