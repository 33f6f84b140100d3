"""Compact keys the projections join on, derived from values by hashing.

Joining a batch against millions of stored rows is several times cheaper on a fixed-size key
than on text, so the fold looks identifiers and event ids up by 128-bit hashes stored as
DuckDB UUIDs (a collision is as unlikely as a collision of random UUIDs). The functions are
part of the stored format: changing one needs a rebuild.
"""

from __future__ import annotations

from hashlib import blake2b

import orjson

from profile_engine.events import ProfileEvent

_ID_PERSON = b"pe-identifier"
_EVENT_PERSON = b"pe-event-id"
_SEPARATOR = b"\x1e"  # ASCII record separator: never part of the parts it joins


def _uuid_text(digest: bytes) -> str:
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def identifier_key(id_type: str, value: str) -> str:
    """The key of one normalised identifier, as UUID text."""
    data = f"{id_type}\x00{value}".encode()
    return _uuid_text(blake2b(data, digest_size=16, person=_ID_PERSON).digest())


def event_key(event_id: str) -> str:
    """The key of an event id, as UUID text."""
    return _uuid_text(blake2b(event_id.encode(), digest_size=16, person=_EVENT_PERSON).digest())


def content_fingerprint(event: ProfileEvent) -> str:
    """A key that differs when two events with the same event_id say different things.

    The canonical form is the event's id, type, time, identifiers (type and value, in order)
    and its payload as JSON with sorted keys, joined by a byte that occurs in none of them.
    """
    identifiers = [[i.id_type, i.value] for i in event.identifiers]
    canonical = _SEPARATOR.join(
        (
            event.event_id.encode(),
            event.type.encode(),
            str(event.timestamp_us).encode(),
            orjson.dumps(identifiers),
            orjson.dumps(event.payload(), option=orjson.OPT_SORT_KEYS),
        )
    )
    return _uuid_text(blake2b(canonical, digest_size=16).digest())
