"""Invariants of the fold, checked with hypothesis on generated logs."""

from __future__ import annotations

import zlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profile_engine.events import ProfileEvent
from profile_engine.fold import ProfileFold
from tests.profile_engine.builders import (
    bounce,
    ccpa,
    consent,
    identify,
    purchase,
    subscription,
    track,
)

PARTITIONS = 4
People = list[dict[str, str]]


def _person(index: int, draw: Any) -> dict[str, str]:
    ids = {"anonymous_id": f"anon-{index}"}
    if draw(st.booleans()):
        ids["customer_id"] = f"C{index}"
    if draw(st.booleans()):
        ids["email"] = f"p{index}@example.com"
    if draw(st.booleans()):
        ids["phone"] = f"+1415555{2600 + index:04d}"
    if draw(st.booleans()):
        ids["push_token"] = f"tok-{index}"
    return ids


@st.composite
def logs(draw: Any, with_conflicts_and_deletes: bool = False) -> list[ProfileEvent]:
    """A log of events for a few people who never share an identifier."""
    people = [_person(i, draw) for i in range(draw(st.integers(1, 4)))]
    events: list[ProfileEvent] = []
    for number in range(draw(st.integers(1, 30))):
        person = draw(st.sampled_from(people))
        id_types = draw(st.sets(st.sampled_from(sorted(person)), min_size=1))
        ids = {t: person[t] for t in id_types}
        minute = draw(st.integers(0, 6))  # a narrow window, so ties happen
        eid = f"evt-{number:03d}"
        kind = draw(st.sampled_from(["identify", "track", "purchase", "consent", "bounce",
                                      "subscription", "ccpa"]))  # fmt: skip
        channel = {"email": "email", "phone": "sms", "push_token": "push"}
        usable = [t for t in channel if t in ids]
        if kind == "identify":
            traits = {
                draw(st.sampled_from(["city", "tier"])): draw(st.sampled_from(["a", "b", None]))
            }
            events.append(identify(minute, traits, eid=eid, **ids))
        elif kind == "purchase":
            order = draw(st.sampled_from(["o1", "o2"]))
            events.append(
                purchase(
                    minute,
                    f"{order}-{id(person)}",
                    draw(st.sampled_from([5.0, 7.5])),
                    eid=eid,
                    **ids,
                )
            )
        elif kind in ("consent", "bounce") and usable:
            ch = channel[draw(st.sampled_from(usable))]
            if kind == "consent":
                status = draw(st.sampled_from(["opted_in", "opted_out", "pending", "unknown"]))
                events.append(consent(minute, ch, status, eid=eid, **ids))
            else:
                kind_ = draw(st.sampled_from(["soft", "soft", "hard", "complaint"]))
                events.append(bounce(minute, ch, kind_, eid=eid, **ids))
        elif kind == "subscription":
            status = draw(st.sampled_from(["subscribed", "unsubscribed"]))
            events.append(subscription(minute, "news", "email", status, eid=eid, **ids))
        elif kind == "ccpa":
            request = draw(st.sampled_from(["opt_out", "opt_in"]))
            events.append(ccpa(minute, request, eid=eid, **ids))
        else:
            events.append(track(minute, eid=eid, **ids))
        if with_conflicts_and_deletes and draw(st.integers(0, 9)) == 0:
            other = draw(st.sampled_from(people))
            if draw(st.booleans()):
                events.append(identify(minute, eid=f"{eid}-x", customer_id=f"X{number}", **{
                    k: v for k, v in other.items() if k != "customer_id"}))  # fmt: skip
            else:
                events.append(
                    ccpa(minute, "delete", eid=f"{eid}-d", anonymous_id=other["anonymous_id"])
                )
    return events


def partition_of(event: ProfileEvent) -> int:
    return zlib.crc32(event.partition_key().encode()) % PARTITIONS


@st.composite
def interleavings(draw: Any, log: list[ProfileEvent]) -> list[ProfileEvent]:
    """Any delivery order that keeps each partition's own order (per-key order)."""
    queues = [[e for e in log if partition_of(e) == p] for p in range(PARTITIONS)]
    delivered: list[ProfileEvent] = []
    while any(queues):
        choice = draw(st.sampled_from([q for q in queues if q]))
        delivered.append(choice.pop(0))
    return delivered


def canonical(fold: ProfileFold) -> set[tuple[Any, ...]]:
    """Profiles as (identifier group, state), without profile ids."""
    groups = set()
    for p in fold.profiles.values():
        idents = tuple(
            sorted(
                (
                    s.id_type,
                    s.value,
                    s.first_seen,
                    s.last_seen_key,
                    s.consent,
                    s.deliverable,
                    s.soft_bounces,
                    s.consecutive_soft_bounces,
                    s.ccpa,
                )
                for s in p.all_identifiers()
            )
        )
        state = (
            tuple(sorted(p.traits.items())),
            tuple(sorted(p.orders.items())),
            tuple(sorted(p.subscriptions.items())),
            p.ccpa_opted_out,
            p.first_seen,
            p.last_seen,
            p.event_count,
        )
        groups.add((idents, state))
    return groups


def run(events: list[ProfileEvent]) -> ProfileFold:
    return ProfileFold().apply_all(events)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_interleaving_of_ordered_partitions_gives_the_same_profiles(data: Any) -> None:
    log = data.draw(logs())
    delivered = data.draw(interleavings(log))
    assert canonical(run(delivered)) == canonical(run(log))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs(with_conflicts_and_deletes=True))
def test_rebuilding_the_same_log_gives_identical_ids_and_state(log: list[ProfileEvent]) -> None:
    first, second = run(log), run(log)
    assert sorted(first.profiles) == sorted(second.profiles)
    assert first.merged_into == second.merged_into
    assert canonical(first) == canonical(second)


@settings(max_examples=100, deadline=None)
@given(logs(with_conflicts_and_deletes=True))
def test_redelivering_the_whole_log_changes_nothing(log: list[ProfileEvent]) -> None:
    once = run(log)
    twice = run(log + log)
    assert canonical(once) == canonical(twice)
    assert sorted(once.profiles) == sorted(twice.profiles)


@given(st.text(max_size=60))
def test_profile_ids_are_uuid5_of_the_creating_event_id(event_id: str) -> None:
    # Profile ids must never change between versions: existing projections, exports and
    # rebuilds all rely on them.
    import uuid

    from profile_engine.fold import PROFILE_ID_NAMESPACE, profile_id_for

    assert profile_id_for(event_id) == str(uuid.uuid5(PROFILE_ID_NAMESPACE, event_id))
