"""The fold's rules, one at a time, on small hand-made logs (no Kafka, no DuckDB)."""

from __future__ import annotations

from profile_engine.fold import FoldConfig, ProfileFold, profile_id_for
from profile_engine.state import ProfileState
from tests.profile_engine.builders import (
    at,
    bounce,
    ccpa,
    consent,
    identify,
    purchase,
    subscription,
    track,
)


def fold(*events: object, config: FoldConfig | None = None) -> ProfileFold:
    result = ProfileFold(config)
    result.apply_all(events)  # type: ignore[arg-type]
    return result


def profile(f: ProfileFold, id_type: str, value: str) -> ProfileState:
    found = f.profile_of(id_type, value)
    assert found is not None, f"{id_type}:{value} resolves to no profile"
    return found


def test_identifiers_in_one_event_belong_to_one_profile() -> None:
    f = fold(identify(0, email="ann@example.com", phone="+14155552671", customer_id="C1"))
    assert len(f.profiles) == 1
    p = profile(f, "phone", "+14155552671")
    assert set(p.identifiers) == {"customer_id", "email", "phone"}


def test_anonymous_activity_joins_the_known_profile_once_linked() -> None:
    f = fold(
        track(0, anonymous_id="anon-1"),
        track(1, anonymous_id="anon-1"),
        identify(2, {"first_name": "Ann"}, email="ann@example.com"),
        identify(3, email="ann@example.com", anonymous_id="anon-1"),
    )
    assert len(f.profiles) == 1
    p = profile(f, "email", "ann@example.com")
    assert p is profile(f, "anonymous_id", "anon-1")
    assert p.event_count == 4


def test_merge_keeps_the_profile_created_first_and_the_other_id_resolves_to_it() -> None:
    first = track(0, eid="first", anonymous_id="anon-1")
    second = identify(5, eid="second", email="ann@example.com")
    f = fold(first, second, identify(9, email="ann@example.com", anonymous_id="anon-1"))
    survivor = profile_id_for("first")
    assert list(f.profiles) == [survivor]
    assert f.resolve_profile_id(profile_id_for("second")) == survivor
    merges = f.drain_changes().merges
    assert [(m.merged_profile_id, m.survivor_profile_id) for m in merges] == [
        (profile_id_for("second"), survivor)
    ]


def test_merge_survivor_is_decided_by_event_time_not_arrival() -> None:
    # The earlier-created profile (by event time) survives even when it arrives later.
    late_arrival_early_time = track(0, eid="early", anonymous_id="anon-1")
    early_arrival_late_time = identify(5, eid="late", email="ann@example.com")
    link = identify(9, email="ann@example.com", anonymous_id="anon-1")
    f = fold(early_arrival_late_time, late_arrival_early_time, link)
    assert list(f.profiles) == [profile_id_for("early")]


def test_merged_id_chains_collapse_to_the_live_survivor() -> None:
    f = fold(
        track(0, eid="a", anonymous_id="x"),
        track(1, eid="b", anonymous_id="y"),
        track(2, eid="c", anonymous_id="z"),
        track(3, anonymous_id="y", email="b@example.com"),
        track(4, anonymous_id="z", email="b@example.com"),
        track(5, anonymous_id="x", email="b@example.com"),
    )
    survivor = profile_id_for("a")
    assert f.resolve_profile_id(profile_id_for("b")) == survivor
    assert f.resolve_profile_id(profile_id_for("c")) == survivor


def test_customer_id_limit_keeps_two_customers_apart_through_a_shared_email() -> None:
    f = fold(
        identify(0, customer_id="C1", email="shared@example.com"),
        identify(1, {"first_name": "Bob"}, customer_id="C2", email="shared@example.com"),
    )
    c1, c2 = profile(f, "customer_id", "C1"), profile(f, "customer_id", "C2")
    assert c1 is not c2
    # The email stays where it was; the event still applied to C2's profile.
    assert profile(f, "email", "shared@example.com") is c1
    assert c2.traits["first_name"][0] == "Bob"
    (conflict,) = f.drain_changes().conflicts
    assert (conflict.dropped.id_type, conflict.dropped.value) == ("email", "shared@example.com")
    assert conflict.owner_profile_id == c1.profile_id
    assert conflict.event_profile_id == c2.profile_id
    assert "customer_id" in conflict.rule


def test_conflict_drops_the_lowest_priority_identifier_first() -> None:
    f = fold(
        identify(0, customer_id="C1", anonymous_id="anon-1"),
        identify(1, customer_id="C2", email="c2@example.com"),
        # email links to C2, anonymous_id to C1: the anonymous_id is dropped, not the email.
        track(2, email="c2@example.com", anonymous_id="anon-1"),
    )
    c2 = profile(f, "customer_id", "C2")
    assert profile(f, "anonymous_id", "anon-1") is profile(f, "customer_id", "C1")
    assert c2.event_count == 2
    assert [c.dropped.id_type for c in f.drain_changes().conflicts] == ["anonymous_id"]


def test_limits_are_configurable() -> None:
    events = (
        identify(0, customer_id="C1", email="shared@example.com"),
        identify(1, customer_id="C2", email="shared@example.com"),
    )
    assert len(fold(*events, config=FoldConfig(id_limits={"customer_id": 2})).profiles) == 1
    one_email = fold(
        identify(0, email="a@example.com", phone="+14155552671"),
        identify(1, email="b@example.com", phone="+14155552671"),
        config=FoldConfig(id_limits={"email": 1}),
    )
    assert len(one_email.profiles) == 2


def test_profile_ids_are_derived_from_the_log() -> None:
    log = [
        identify(0, eid="evt-1", email="a@example.com"),
        track(1, eid="evt-2", phone="+14155552671"),
    ]
    assert list(fold(*log).profiles) == list(fold(*log).profiles)
    assert list(fold(*log).profiles) == [profile_id_for("evt-1"), profile_id_for("evt-2")]


def test_traits_are_last_writer_wins_by_event_time() -> None:
    f = fold(
        identify(10, {"city": "Paris"}, email="a@example.com"),
        identify(5, {"city": "Berlin", "country": "DE"}, email="a@example.com"),
    )
    traits = profile(f, "email", "a@example.com").traits
    assert traits["city"][0] == "Paris"
    assert traits["country"][0] == "DE"


def test_trait_ties_are_broken_by_event_id_whatever_the_arrival_order() -> None:
    a = identify(5, {"city": "A"}, eid="tie-a", email="a@example.com")
    b = identify(5, {"city": "B"}, eid="tie-b", email="a@example.com")
    for order in ((a, b), (b, a)):
        assert profile(fold(*order), "email", "a@example.com").traits["city"][0] == "B"


def test_null_unsets_a_trait_and_an_older_value_cannot_bring_it_back() -> None:
    f = fold(
        identify(1, {"city": "Paris"}, email="a@example.com"),
        identify(2, {"city": None}, email="a@example.com"),
        identify(0, {"city": "Old"}, email="a@example.com"),
    )
    assert profile(f, "email", "a@example.com").traits["city"][0] is None


def test_merge_takes_each_trait_from_the_latest_writer() -> None:
    f = fold(
        identify(0, {"city": "Paris", "gender": "f"}, email="a@example.com"),
        identify(3, {"city": "Rome"}, phone="+14155552671"),
        identify(1, {"gender": "x"}, phone="+14155552671"),
        track(4, email="a@example.com", phone="+14155552671"),
    )
    traits = profile(f, "email", "a@example.com").traits
    assert (traits["city"][0], traits["gender"][0]) == ("Rome", "x")


def test_last_seen_counts_identify_track_consent_subscription_but_not_bounce_or_ccpa() -> None:
    f = fold(
        identify(1, email="a@example.com"),
        track(2, email="a@example.com"),
        consent(3, "email", "opted_in", email="a@example.com"),
        subscription(4, "news", "email", "subscribed", eid="sub", email="a@example.com"),
        bounce(8, "email", "soft", email="a@example.com"),
        ccpa(9, "opt_out", email="a@example.com"),
    )
    state = f.index[("email", "a@example.com")]
    assert state.first_seen == at(1)
    assert state.last_seen_key == (at(4), "sub")


def test_an_identifier_seen_only_in_a_bounce_has_no_first_or_last_seen() -> None:
    f = fold(bounce(1, "email", "hard", email="a@example.com"))
    state = f.index[("email", "a@example.com")]
    assert (state.first_seen, state.last_seen_key) == (None, None)


def test_consent_is_last_writer_wins_per_identifier() -> None:
    f = fold(
        consent(5, "email", "opted_out", email="a@example.com"),
        consent(2, "email", "opted_in", email="a@example.com"),
    )
    assert f.index[("email", "a@example.com")].consent == "opted_out"


def test_unknown_never_replaces_an_explicit_choice() -> None:
    for explicit in ("opted_in", "opted_out"):
        f = fold(
            consent(1, "email", explicit, email="a@example.com"),
            consent(9, "email", "unknown", email="a@example.com"),
        )
        assert f.index[("email", "a@example.com")].consent == explicit


def test_a_later_unknown_replaces_pending_and_a_later_pending_replaces_unknown() -> None:
    f = fold(
        consent(1, "email", "pending", email="a@example.com"),
        consent(2, "email", "unknown", email="a@example.com"),
    )
    assert f.index[("email", "a@example.com")].consent == "unknown"
    g = fold(
        consent(1, "email", "unknown", email="a@example.com"),
        consent(2, "email", "pending", email="a@example.com"),
    )
    assert g.index[("email", "a@example.com")].consent == "pending"


def test_consent_belongs_to_the_channel_identifier_only() -> None:
    f = fold(consent(1, "sms", "opted_in", email="a@example.com", phone="+14155552671"))
    assert f.index[("phone", "+14155552671")].consent == "opted_in"
    assert f.index[("email", "a@example.com")].consent == "unknown"


def test_hard_bounce_and_complaint_make_an_identifier_undeliverable() -> None:
    for kind in ("hard", "complaint"):
        f = fold(
            identify(0, email="a@example.com"), bounce(1, "email", kind, email="a@example.com")
        )
        assert not f.index[("email", "a@example.com")].deliverable


def test_soft_bounces_are_counted_and_consecutive_ones_reset_when_seen_again() -> None:
    f = fold(
        identify(0, email="a@example.com"),
        bounce(1, "email", "soft", email="a@example.com"),
        bounce(2, "email", "soft", email="a@example.com"),
    )
    state = f.index[("email", "a@example.com")]
    assert (state.soft_bounces, state.consecutive_soft_bounces, state.deliverable) == (2, 2, True)
    f.apply(track(3, email="a@example.com"))
    assert (state.soft_bounces, state.consecutive_soft_bounces) == (2, 0)


def test_an_invalid_identifier_is_kept_but_never_deliverable() -> None:
    f = fold(identify(0, email="not-an-email@@example"))
    state = f.index[("email", "not-an-email@@example")]
    assert (state.valid, state.deliverable) == (False, False)


def test_junk_identifiers_never_create_or_link_a_profile() -> None:
    f = fold(
        track(0, anonymous_id="undefined", email="a@example.com"),
        track(1, email="b@example.com", anonymous_id="undefined"),
    )
    assert len(f.profiles) == 2
    assert ("anonymous_id", "undefined") not in f.index


def test_subscriptions_are_last_writer_wins_per_list_and_channel() -> None:
    f = fold(
        subscription(5, "news", "email", "unsubscribed", email="a@example.com"),
        subscription(1, "news", "email", "subscribed", email="a@example.com"),
        subscription(2, "news", "sms", "subscribed", phone="+14155552671", email="a@example.com"),
    )
    subs = profile(f, "email", "a@example.com").subscriptions
    assert subs[("news", "email")][:2] == ("unsubscribed", "a@example.com")
    assert subs[("news", "sms")][:2] == ("subscribed", "+14155552671")


def test_ccpa_opt_out_by_any_identifier_opts_out_the_profile_until_it_opts_in_again() -> None:
    f = fold(
        identify(0, email="a@example.com", phone="+14155552671"),
        ccpa(1, "opt_out", phone="+14155552671"),
    )
    p = profile(f, "email", "a@example.com")
    assert p.ccpa_opted_out
    f.apply(ccpa(2, "opt_in", phone="+14155552671"))
    assert not p.ccpa_opted_out


def test_a_profile_merged_with_an_opted_out_one_is_opted_out() -> None:
    f = fold(
        ccpa(0, "opt_out", email="a@example.com"),
        identify(1, phone="+14155552671"),
        track(2, email="a@example.com", phone="+14155552671"),
    )
    assert profile(f, "phone", "+14155552671").ccpa_opted_out


def test_delete_erases_the_profile_and_a_later_event_starts_a_new_one() -> None:
    f = fold(
        track(0, eid="old", anonymous_id="anon-1"),
        identify(1, eid="merged", email="a@example.com"),
        identify(2, email="a@example.com", anonymous_id="anon-1"),
        ccpa(3, "delete", email="a@example.com"),
    )
    assert f.profiles == {}
    assert f.profile_of("email", "a@example.com") is None
    assert f.resolve_profile_id(profile_id_for("old")) is None
    assert f.resolve_profile_id(profile_id_for("merged")) is None
    f.apply(track(4, eid="reborn", email="a@example.com"))
    assert list(f.profiles) == [profile_id_for("reborn")]
    assert profile(f, "email", "a@example.com").event_count == 1


def test_orders_count_revenue_and_dedupe_by_order_id() -> None:
    f = fold(
        purchase(1, "o-1", 10.0, email="a@example.com"),
        purchase(2, "o-2", 30.5, email="a@example.com"),
        purchase(3, "o-2", 20.5, email="a@example.com"),  # corrected re-send of o-2
        track(4, "product_viewed", {"revenue": 99}, email="a@example.com"),
    )
    orders = profile(f, "email", "a@example.com").orders
    assert len(orders) == 2
    assert sum(revenue for revenue, _ in orders.values()) == 30.5


def test_the_same_event_id_is_applied_once() -> None:
    event = purchase(1, "o-1", 10.0, eid="dup", email="a@example.com")
    f = fold(event, event, event)
    p = profile(f, "email", "a@example.com")
    assert p.event_count == 1
    assert f.drain_changes().duplicates == 2
