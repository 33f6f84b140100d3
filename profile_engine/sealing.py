"""Sealing events for the log, and opening them for the fold (crypto-shredding).

A *sealed* event carries no personal value in clear: each identifier value is a token under
that identifier's data key, and the traits (one token per value) or the track properties (one
token) are tokens under the data key of the event's first (highest-priority) identifier; the
envelope's ``sealed`` field holds the event's keyed fingerprint. Event ids, types, times,
event names, channels and statuses stay in clear (see README "Erasure that reaches the log").

``Sealer`` is the producer's side: it picks (or makes) the data key of every identifier it
meets and seals events. ``open_sealed`` is the consumer's side: it turns a sealed envelope
record into the fold's ``Prepared`` tuple. The tokens themselves go to the projections as
they came, so what the fold stores never depends on whether the keys could still be read;
when they could, the consumer opens every token (or finds it among those it verified
before), builds the event from the opened values in one pass with the rule book's checks on
whatever could differ once opened, and checks that the blind indexes and the keyed
fingerprint match what it opened (a tampered, swapped or forged value makes the event a dead
letter). When a key was erased, the event folds by its blind indexes, its personal values
unreadable for good.

Pure: keys and key lookups are handed in (consumers/key_store.py keeps them on Kafka).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from profile_engine import rules
from profile_engine.batch_fold import Prepared, keyed_order, order_of
from profile_engine.crypto import (
    BLIND_BYTES,
    ERASED,
    PROPERTIES_FIELD,
    AeadCache,
    KeyRing,
    NoncePool,
    SealError,
    identifier_field,
    identifier_of_field,
    key_ref,
    open_body,
    parse_token,
    parse_unique_token,
    ref_blind,
    run_data_key,
    seal,
    trait_field,
    trait_kind,
    trait_plaintext,
    trait_value,
    uuid_text,
)
from profile_engine.errors import BadInput
from profile_engine.events import (
    CHANNEL_ID_TYPE,
    ID_RANK,
    Identifier,
    Identify,
    ProfileEvent,
    Track,
    new_identifier,
)
from profile_engine.keys import event_key

SEALED_WITHOUT_KEY = (
    "sealed event: no master key is configured to open it "
    "(set PROFILE_ENGINE_MASTER_KEY or PROFILE_ENGINE_KEY_FILE)"
)
# The envelope's id type for identifier types a reader does not know (schemas/README.md).
UNRECOGNISED = "unrecognised"
_CACHE_ENTRIES = 100_000


class SealedFields(NamedTuple):
    """What a sealed event carries instead of its personal values."""

    message_key: bytes  # the Kafka key: hex of the first identifier's blind index
    identifiers: tuple[str, ...]  # a token per identifier, in the event's order
    traits: dict[str, str | None] | None  # identify: a token per trait value (None unsets)
    properties: str | None  # track: the token of the properties JSON
    fingerprint: bytes  # the keyed content fingerprint


def seal_of(record: dict[str, Any]) -> dict[str, Any] | None:
    """The envelope record's seal, or None for an event in clear (a reader that keeps record
    names gives a union's record branch as (name, fields))."""
    sealed = record.get("sealed")
    if isinstance(sealed, tuple):
        sealed = sealed[1]
    return sealed if isinstance(sealed, dict) else None


class MissingKey(BadInput):
    """A sealed value whose data key the key store does not hold at all (neither the key nor
    an erased marker): the key store was lost or is incomplete."""


# -- the producer's side ----------------------------------------------------------------------


@dataclass(frozen=True)
class SealingPlan:
    """What every process of one publishing run seals with (picklable, sent to workers).

    ``existing``: the live data key of identifiers the key store already holds (blind index
    -> (version, wrapped key)); they are reused. Any other identifier gets the run's key:
    version ``run_version``, derived from ``run_secret`` (see crypto.run_data_key), which
    lives in memory for the run only.
    """

    master: bytes = field(repr=False)
    run_secret: bytes = field(repr=False)
    run_version: bytes
    existing: Mapping[bytes, tuple[bytes, bytes]] = field(default_factory=dict, repr=False)

    @classmethod
    def new(cls, master: bytes, existing: Mapping[bytes, tuple[bytes, bytes]]) -> SealingPlan:
        return cls(master, os.urandom(32), os.urandom(4), dict(existing))


class Sealer:
    """Seals events; remembers the data keys it made so the caller publishes them first."""

    def __init__(self, plan: SealingPlan) -> None:
        self.ring = KeyRing.from_master(plan.master)
        self._plan = plan
        self._keys: dict[bytes, tuple[str, AESGCM]] = {}  # blind index -> (ref, cipher)
        self._new: dict[str, bytes] = {}  # ref -> wrapped key, made since the last take
        # A person's identifiers recur in event after event: sealed once per process.
        self._identifiers: dict[tuple[str, str, bool], tuple[bytes, str]] = {}
        self._trait_tokens: dict[tuple[str, type, Any], str] = {}
        self._nonces = NoncePool()

    def _key(self, blind: bytes) -> tuple[str, AESGCM]:
        found = self._keys.get(blind)
        if found is not None:
            return found
        existing = self._plan.existing.get(blind)
        if existing is not None:
            version, wrapped = existing
            ref = key_ref(blind, version)
            dek = self.ring.unwrap(ref, wrapped)
        else:
            ref = key_ref(blind, self._plan.run_version)
            dek = run_data_key(self._plan.run_secret, blind)
            self._new[ref] = self.ring.wrap(ref, dek, self._nonces.take())
        found = self._keys[blind] = (ref, AESGCM(dek))
        return found

    def take_new_keys(self) -> list[tuple[str, bytes]]:
        """(key ref, wrapped key) of the keys made since the last call: they must reach the
        key store before any event sealed under them is sent."""
        taken, self._new = list(self._new.items()), {}
        return taken

    def seal(self, event: ProfileEvent) -> SealedFields:
        identifiers = self._identifiers
        if len(identifiers) >= _CACHE_ENTRIES:
            identifiers.clear()
        blinds: list[bytes] = []
        tokens: list[str] = []
        for ident in event.identifiers:
            cache_key = (ident.id_type, ident.value, ident.valid)
            cached = identifiers.get(cache_key)
            if cached is None:
                blind = self.ring.blind_index(ident.id_type, ident.value)
                ref, aead = self._key(blind)
                code = identifier_field(ident.id_type, ident.valid)
                token = seal(aead, ref, code, ident.value.encode(), self._nonces.take())
                cached = identifiers[cache_key] = (blind, token)
            blinds.append(cached[0])
            tokens.append(cached[1])
        if not blinds:
            raise SealError("an event without identifiers cannot be sealed")
        traits: dict[str, str | None] | None = None
        properties: str | None = None
        if isinstance(event, Identify):
            ref, aead = self._key(blinds[0])
            traits = {name: self._trait(ref, aead, value) for name, value in event.traits.items()}
        elif isinstance(event, Track):
            ref, aead = self._key(blinds[0])
            plaintext = orjson.dumps(event.properties)
            properties = seal(aead, ref, PROPERTIES_FIELD, plaintext, self._nonces.take())
        return SealedFields(
            blinds[0].hex().encode(),
            tuple(tokens),
            traits,
            properties,
            self.ring.fingerprint(event),
        )

    def _trait(self, ref: str, aead: AESGCM, value: Any) -> str | None:
        if value is None:
            return None
        cache = self._trait_tokens
        cache_key = (ref, type(value), value)
        token = cache.get(cache_key)
        if token is None:
            if len(cache) >= _CACHE_ENTRIES:
                cache.clear()
            plaintext = trait_plaintext(value)
            token = cache[cache_key] = seal(
                aead, ref, trait_field(value), plaintext, self._nonces.take()
            )
        return token


# -- the consumer's side ----------------------------------------------------------------------

# ref -> wrapped key, crypto.ERASED, or None when the key store holds nothing for it.
KeyLookup = Callable[[str], bytes | None]
# A validated domain event from a sealed envelope record, its identifiers as opened and judged,
# and its payload fields with the sealed values opened (None: the record's own fields):
# codec.from_opened_record with the record's event-time window.
RecordReader = Callable[
    [dict[str, Any], tuple[Identifier, ...], dict[str, Any] | None], ProfileEvent
]


class Opener:
    """Opens tokens with the data keys a key store holds.

    A publisher seals each identifier and trait value once and repeats the token in every
    event of the person, so the opener keeps what it verified: per key reference, the value
    of each identifier token whose field and blind index matched, and the value of each trait
    token whose kind matched. An entry is only ever served with the very wrapped key it was
    verified under (a key rewritten under the same reference starts afresh), and only after
    the key store still holds that key: an erased key (``wrapped`` sees the marker) drops
    its reference's cipher and every value opened under it. Bounded: all is dropped when
    ``max_entries`` values are held (as ``keys.identifier_key`` does).
    """

    def __init__(self, ring: KeyRing, lookup: KeyLookup, max_entries: int = _CACHE_ENTRIES) -> None:
        self.ring = ring
        self._lookup = lookup
        self._ciphers = AeadCache()
        # ref -> (the wrapped key it was verified under, {token: opened value})
        self._opened: dict[str, tuple[bytes, dict[str, Any]]] = {}
        self._held = 0
        self._max_entries = max_entries

    def wrapped(self, ref: str) -> bytes | None:
        """The wrapped key of ``ref``, or None when it was erased; MissingKey when unknown."""
        wrapped = self._lookup(ref)
        if wrapped is None:
            raise MissingKey(f"no key for {ref} (key store lost?)")
        if wrapped == ERASED:
            self.forget(ref)
            return None
        return wrapped

    def forget(self, ref: str) -> None:
        """Drop the cipher of ``ref`` and every value opened under it (its key was erased)."""
        self._ciphers.drop(ref)
        dropped = self._opened.pop(ref, None)
        if dropped is not None:
            self._held -= len(dropped[1])

    def open(self, token: str, wrapped: bytes) -> tuple[int, bytes]:
        """(field code, plaintext) of a token whose key is ``wrapped``; SealError if it fails."""
        return self.open_parsed(parse_token(token), wrapped)

    def open_parsed(self, parsed: tuple[str, int, bytes], wrapped: bytes) -> tuple[int, bytes]:
        """``open`` for a token already parsed (crypto.parse_token)."""
        ref, code, body = parsed
        cipher = self._ciphers.get(ref)
        if cipher is None:
            cipher = self._ciphers.put(ref, self.ring.unwrap(ref, wrapped))
        return code, open_body(cipher, ref, body)

    def verified(self, ref: str, wrapped: bytes) -> dict[str, Any]:
        """The values already opened and verified under ``ref``'s key ``wrapped`` (token ->
        value); ``keep`` adds one."""
        entry = self._opened.get(ref)
        if entry is not None and entry[0] == wrapped:
            return entry[1]
        if entry is not None:  # another key under this reference: nothing of the old holds
            self.forget(ref)
        values: dict[str, Any] = {}
        self._opened[ref] = (wrapped, values)
        return values

    def keep(self, values: dict[str, Any], token: str, value: Any) -> None:
        """Add a verified value to ``values`` (from ``verified``); when the opener holds
        ``max_entries`` values it first drops all it holds, of every key."""
        if self._held >= self._max_entries:
            self._opened.clear()  # ``values`` may now be orphaned: it is dropped with the event
            self._held = 0
        values[token] = value
        self._held += 1


class _Sealed(NamedTuple):
    """A sealed record's tokens, checked for shape and order (not yet opened)."""

    identifiers: list[tuple[str, str, bool]]  # (id_type, token, valid), in priority order
    refs: list[str]  # the key of each identifier
    traits: dict[str, str | None] | None  # identify: name -> token (None unsets)
    trait_cells: tuple[tuple[str, str | None, str | None], ...]  # (name, token, JSON kind)
    properties: str | None  # track: the token of the properties JSON
    properties_parsed: tuple[str, int, bytes] | None  # that token parsed (crypto.parse_token)
    fields: dict[str, Any]  # the payload record's own fields (tokens in them)
    fingerprint: bytes


def open_sealed(record: dict[str, Any], opener: Opener, read: RecordReader) -> Prepared:
    """The fold's view of a sealed envelope record; BadInput (a dead letter) when it is
    damaged, forged or its keys are missing. ``read`` validates what the record says in
    clear and builds the event from the values as opened (codec.from_opened_record).

    One pass: each token is opened (or found among those already verified), and the event is
    built from the opened values; no clear record is rebuilt and decoded again. What is
    checked, and why that is all that needs checking, is in README "Erasure that reaches the
    log" (What is checked when a sealed event is opened).
    """
    sealed = _tokens(record)
    wrapped = tuple(opener.wrapped(ref) for ref in sealed.refs)
    keys = [key for key in wrapped if key is not None]
    if len(keys) == len(wrapped):
        event = _opened_event(record, sealed, keys, opener, read)
        order = keyed_order(order_of(event), opener.ring) if isinstance(event, Track) else None
    else:
        # An erased key: nothing personal can be read or checked any more; the clear part
        # is still validated, with stand-ins for the sealed values.
        event = read(record, _stand_ins(sealed), _stand_in_fields(sealed))
        order = None
    return _prepared(event, sealed, order, wrapped)


def _tokens(record: dict[str, Any]) -> _Sealed:
    identifiers: list[tuple[str, str, bool]] = []
    refs: list[str] = []
    previous = -1
    for item in record["identifiers"]:
        id_type, token, valid = item["id_type"], item["value"], bool(item["valid"])
        if id_type == UNRECOGNISED:
            continue  # a type added after this reader was built: ignored, as in clear
        ref, code, _ = parse_token(token)
        if identifier_of_field(code) != (id_type, valid):
            raise SealError(f"identifiers.{id_type}: the sealed value belongs to another field")
        # Our publishers seal the rule book's identifiers: one of a type, in priority order.
        rank = ID_RANK[id_type]
        if rank <= previous:
            if rank == previous:
                raise SealError(f"identifiers.{id_type}: given more than once")
            raise SealError(
                "identifiers: the sealed identifiers are not as the rule book makes them"
            )
        previous = rank
        identifiers.append((id_type, token, valid))
        refs.append(ref)
    if not identifiers:
        raise SealError("identifiers: a sealed event without a usable identifier")
    fields = record["payload"][1] if isinstance(record["payload"], tuple) else record["payload"]
    traits: dict[str, str | None] | None = None
    cells: list[tuple[str, str | None, str | None]] = []
    properties: str | None = None
    parsed: tuple[str, int, bytes] | None = None
    if record["type"] == "identify":
        traits = {}
        first = refs[0]
        for name, token in fields["traits"].items():
            kind = None
            if token is not None:
                cell = parse_token(token) if type(token) is str else None
                if cell is None or cell[0] != first:
                    raise SealError(f"traits.{name}: not sealed under the first identifier's key")
                kind = _TRAIT_KIND.get(cell[1])
                if kind is None:
                    raise SealError(f"traits.{name}: the sealed value is not a trait value")
            traits[name] = token
            cells.append((name, token, kind))
    elif record["type"] == "track":
        properties = fields["properties_json"]
        parsed = parse_unique_token(properties) if isinstance(properties, str) else None
        if parsed is None or parsed[0] != refs[0]:
            raise SealError("properties: not sealed under the first identifier's key")
        if parsed[1] != PROPERTIES_FIELD:
            raise SealError("properties: the sealed value is not track properties")
    seal = seal_of(record)
    if seal is None:
        raise SealError("sealed: the event is not sealed")
    fingerprint = seal["fingerprint"]
    if len(fingerprint) != BLIND_BYTES:
        raise SealError(f"sealed.fingerprint: {len(fingerprint)} bytes instead of {BLIND_BYTES}")
    return _Sealed(
        identifiers, refs, traits, tuple(cells), properties, parsed, fields, bytes(fingerprint)
    )


# The JSON kind of each trait field code (crypto.trait_kind, as a lookup).
_TRAIT_KIND = {code: kind for code in range(256) if (kind := trait_kind(code)) is not None}
# Not a value an opened token can hold (trait values may be false, zero or empty).
_UNSEEN = object()


def _opened_event(
    record: dict[str, Any],
    sealed: _Sealed,
    keys: list[bytes],
    opener: Opener,
    read: RecordReader,
) -> ProfileEvent:
    """Open every token, build and validate the event from the opened values, and check it
    against its seal."""
    identifiers: list[Identifier] = []
    for (id_type, token, valid), ref, key in zip(
        sealed.identifiers, sealed.refs, keys, strict=True
    ):
        verified = opener.verified(ref, key)
        ident = verified.get(token)
        if ident is None:
            ident = _open_identifier(opener, id_type, token, valid, ref, key)
            opener.keep(verified, token, ident)
        identifiers.append(ident)
    top_ref, top = sealed.refs[0], keys[0]
    fields: dict[str, Any] | None = None
    if sealed.traits is not None:
        verified = opener.verified(top_ref, top)
        traits = {n: _trait(opener, verified, n, t, top) for n, t in sealed.traits.items()}
        fields = {"traits": traits}
    elif sealed.properties_parsed is not None:
        _, plaintext = opener.open_parsed(sealed.properties_parsed, top)
        try:
            text = plaintext.decode()
        except UnicodeDecodeError:
            raise SealError("properties: the sealed value is not UTF-8 text") from None
        fields = {"event": sealed.fields["event"], "properties_json": text}
    try:
        event = read(record, tuple(identifiers), fields)
    except BadInput as error:
        raise type(error)(f"sealed event, once opened: {error}") from None
    # The keyed fingerprint binds the whole event: a value swapped in from another event of
    # the person (each token opens on its own) does not match it.
    if opener.ring.fingerprint(event) != sealed.fingerprint:
        raise SealError("sealed.fingerprint: does not match the opened event (tampered with?)")
    return event


def _open_identifier(
    opener: Opener, id_type: str, token: str, valid: bool, ref: str, key: bytes
) -> Identifier:
    """An identifier token opened and verified, once per token: its field code (checked in
    ``_tokens``) is authenticated by opening it, its value must match its blind index and be
    an identifier as the rule book makes it (normalised, not junk, within the text limits).
    Validity stays the producer's verdict (authenticated in the token): after an erasure
    nobody can judge the value again, and the fold must decide alike before and after."""
    _, plaintext = opener.open(token, key)
    try:
        value = plaintext.decode()
    except UnicodeDecodeError:
        raise SealError(f"identifiers.{id_type}: the sealed value is not UTF-8 text") from None
    if opener.ring.blind_index(id_type, value).hex() != ref[: 2 * BLIND_BYTES]:
        raise SealError(f"identifiers.{id_type}: the value does not match its blind index")
    try:
        judged = rules.identifier(id_type, value)
    except BadInput as error:
        raise type(error)(f"sealed event, once opened: {error}") from None
    if judged is None or judged.value != value:
        raise SealError(
            f"identifiers.{id_type}: the sealed value is not an identifier as the rule book "
            "makes it (normalised, not junk)"
        )
    return new_identifier(id_type, value, valid)


def _trait(
    opener: Opener, verified: dict[str, Any], name: str, token: str | None, wrapped: bytes
) -> Any:
    """A trait value opened and checked against its field's kind, once per token (the rule
    book's value rules run on the whole traits, every event: ``read``)."""
    if token is None:
        return None
    value = verified.get(token, _UNSEEN)
    if value is _UNSEEN:
        code, plaintext = opener.open(token, wrapped)
        try:
            value = trait_value(plaintext)
        except ValueError:
            raise SealError(f"traits.{name}: the sealed value is not JSON") from None
        if type(value) not in _TRAIT_TYPES or trait_kind(code) != trait_kind(trait_field(value)):
            raise SealError(f"traits.{name}: a sealed value of another kind than its field says")
        opener.keep(verified, token, value)
    return value


_TRAIT_TYPES = (str, int, float, bool)


def _stand_ins(sealed: _Sealed) -> tuple[Identifier, ...]:
    """Stand-ins of each type that pass the identifier checks; only their presence matters."""
    return tuple(new_identifier(t, _STAND_IN[t], True) for t, _, _ in sealed.identifiers)


def _stand_in_fields(sealed: _Sealed) -> dict[str, Any] | None:
    if sealed.traits is not None:
        return {"traits": {}}
    if sealed.properties is not None:
        # A purchase must name an order and a revenue; this one's are sealed for good.
        purchase = sealed.fields["event"] == "purchase"
        stand_in = '{"order_id": "sealed", "revenue": 0}' if purchase else "{}"
        return {"event": sealed.fields["event"], "properties_json": stand_in}
    return None


_STAND_IN = {
    "customer_id": "sealed",
    "email": "sealed@example.com",
    "phone": "+14155550100",
    "push_token": "sealed",
    "anonymous_id": "sealed",
}


def _prepared(
    event: ProfileEvent,
    sealed: _Sealed,
    order: tuple[str, float] | None,
    wrapped: tuple[bytes | None, ...],
) -> Prepared:
    """The fold's tuple: the tokens as they came, what is in clear from the event."""
    tokens = {id_type: token for id_type, token, _ in sealed.identifiers}
    payload: dict[str, Any]
    detail: tuple[Any, ...]
    if sealed.traits is not None:
        payload = {"traits": sealed.traits}
        detail = sealed.trait_cells
    elif sealed.properties is not None:
        name = sealed.fields["event"]
        payload = {"event": name, "properties": sealed.properties}
        detail = (name, order)
    else:
        payload = event.payload()
        if event.type == "subscription":
            detail = (
                payload["list_id"], payload["channel"], payload["status"],
                tokens.get(CHANNEL_ID_TYPE[payload["channel"]]),
            )  # fmt: skip
        else:
            detail = _clear_detail(event.type, payload)
    payload["identifiers"] = tokens
    return Prepared(
        event.event_id,
        event.timestamp_us,
        event.type,
        tuple(sealed.identifiers),
        tuple(_blind_of(ref) for ref in sealed.refs),
        uuid_text(sealed.fingerprint),
        event_key(event.event_id),
        orjson.dumps(payload).decode(),
        detail,
        tuple(sealed.refs),
        wrapped,
    )


# ref -> its blind index as UUID text (the fold's id_key), formatted once per key.
_BLINDS: dict[str, str] = {}


def _blind_of(ref: str) -> str:
    blind = _BLINDS.get(ref)
    if blind is None:
        if len(_BLINDS) >= _CACHE_ENTRIES:
            _BLINDS.clear()
        blind = _BLINDS[ref] = ref_blind(ref)
    return blind


def _clear_detail(event_type: str, payload: dict[str, Any]) -> tuple[Any, ...]:
    if event_type == "consent":
        return (payload["channel"], payload["status"])
    if event_type == "bounce":
        return (payload["channel"], payload["bounce_type"])
    return (payload["request"],)  # ccpa


def without_erased_keys(prepared: Prepared, erased: Callable[[str, str], bool]) -> Prepared:
    """The event as the fold must see it once some of its keys are erased: no wrapped copy
    of an erased key, and no order read from properties sealed under one (a rebuild, which
    cannot open them, sees the same). ``erased(ref, id_key)``: whether the key ``ref`` of
    the identifier ``id_key`` (its blind index, ``Prepared.id_keys``) was erased."""
    refs = prepared.key_refs
    if not refs:  # an event that came in clear
        return prepared
    gone = [erased(ref, id_key) for ref, id_key in zip(refs, prepared.id_keys, strict=True)]
    if not any(gone):
        return prepared
    wrapped = tuple(None if g else w for g, w in zip(gone, prepared.wrapped_keys, strict=True))
    detail = prepared.detail
    if prepared.type == "track" and gone[0]:
        detail = (detail[0], None)
    return prepared._replace(wrapped_keys=wrapped, detail=detail)
