"""Domain events survive the trip between the reader and folding processes unchanged."""

from __future__ import annotations

import pickle

from tests.consumers.test_codec import sample_events


def test_every_event_type_pickles_to_an_equal_event() -> None:
    events = sample_events()
    assert {e.type for e in events} == {
        "identify",
        "track",
        "consent",
        "bounce",
        "subscription",
        "ccpa",
    }
    restored = pickle.loads(pickle.dumps(events, protocol=pickle.HIGHEST_PROTOCOL))
    assert restored == events
    assert [type(e) for e in restored] == [type(e) for e in events]


def test_unpickling_skips_no_validation_because_events_have_none() -> None:
    # _rebuild_event sets fields directly instead of calling __init__; that is only the same
    # event while no event class validates or derives fields in __post_init__.
    from profile_engine.events import EVENT_CLASSES, ProfileEvent

    for cls in (ProfileEvent, *EVENT_CLASSES.values()):
        assert not hasattr(cls, "__post_init__"), cls.__name__


def test_fast_constructors_build_the_same_events_as_init() -> None:
    from profile_engine import events as ev

    ids = (ev.Identifier("email", "a@b.com", False),)
    pairs = [
        (ev.new_identifier("email", "a@b.com", False), ids[0]),
        (ev.new_identify("e", 1, ids, {"a": 1}),
         ev.Identify(event_id="e", timestamp_us=1, identifiers=ids, traits={"a": 1})),
        (ev.new_track("e", 1, ids, "view", {"p": [1]}),
         ev.Track(event_id="e", timestamp_us=1, identifiers=ids, event="view",
                  properties={"p": [1]})),
        (ev.new_consent("e", 1, ids, "email", "opted_in"),
         ev.Consent(event_id="e", timestamp_us=1, identifiers=ids, channel="email",
                    status="opted_in")),
        (ev.new_bounce("e", 1, ids, "email", "hard"),
         ev.Bounce(event_id="e", timestamp_us=1, identifiers=ids, channel="email",
                   bounce_type="hard")),
        (ev.new_subscription("e", 1, ids, "news", "email", "subscribed"),
         ev.Subscription(event_id="e", timestamp_us=1, identifiers=ids, list_id="news",
                         channel="email", status="subscribed")),
        (ev.new_ccpa("e", 1, ids, "delete"),
         ev.Ccpa(event_id="e", timestamp_us=1, identifiers=ids, request="delete")),
    ]  # fmt: skip
    for fast, slow in pairs:
        assert type(fast) is type(slow)
        assert fast == slow and hash(fast.__reduce__()[1][0]) == hash(slow.__reduce__()[1][0])
        assert pickle.loads(pickle.dumps(fast)) == slow
        for name in ev._field_names(type(slow)):  # every slot set, none left empty
            assert getattr(fast, name) == getattr(slow, name)
