"""Compact keys the projections join on, derived from values by hashing.

Joining a batch against millions of stored rows is several times cheaper on a fixed-size key
than on text, so the fold looks identifiers and event ids up by 128-bit hashes stored as
DuckDB UUIDs (a collision is as unlikely as a collision of random UUIDs). The functions are
part of the stored format: changing one needs a rebuild.
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Protocol

from profile_engine.events import ProfileEvent, event_fingerprint

_ID_PERSON = b"pe-identifier"
_EVENT_PERSON = b"pe-event-id"


def _uuid_text(digest: bytes) -> str:
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# People send many events: the same identifier is keyed over and over. A bounded cache (it
# is cleared when full) keeps a hash and its formatting off the path of a known identifier.
_ID_KEYS: dict[tuple[str, str], str] = {}
_ID_KEYS_MAX = 262_144


def identifier_key(id_type: str, value: str) -> str:
    """The key of one normalised identifier, as UUID text."""
    cached = _ID_KEYS.get((id_type, value))
    if cached is not None:
        return cached
    data = f"{id_type}\x00{value}".encode()
    key = _uuid_text(blake2b(data, digest_size=16, person=_ID_PERSON).digest())
    if len(_ID_KEYS) >= _ID_KEYS_MAX:
        _ID_KEYS.clear()
    _ID_KEYS[(id_type, value)] = key
    return key


def event_key(event_id: str) -> str:
    """The key of an event id, as UUID text."""
    return _uuid_text(blake2b(event_id.encode(), digest_size=16, person=_EVENT_PERSON).digest())


def content_fingerprint(event: ProfileEvent) -> str:
    """The event's content fingerprint (``events.event_fingerprint``) as UUID text: equal for
    a redelivery, different when an event_id is reused for other content."""
    return _uuid_text(event_fingerprint(event))


class IdentifierHashes(Protocol):
    """Where identifier keys and content fingerprints come from: this module's functions, or
    a ``profile_engine.crypto.KeyRing`` in a projection with a master key (blind indexes and
    keyed fingerprints, so old plaintext events and sealed ones resolve alike)."""

    def identifier_key(self, id_type: str, value: str) -> str: ...

    def content_fingerprint(self, event: ProfileEvent) -> str: ...
