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
