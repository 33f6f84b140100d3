"""The production fold of one batch: what is sequential, in Python, on a bounded working set.

``profile_engine.fold`` is the executable specification: it folds one event at a time over
the whole state in memory. This module computes the same result for one batch of events
while holding only what the batch touches, so memory is bounded by the batch, not by the
number of profiles:

- what each event says on its own (its fingerprint, timeline payload, order, lookup keys) is
  derived by ``prepare`` where the event is decoded, in parallel with the fold;
- before the batch, the store pages in the *stored world* the batch needs: the owner of
  every identifier the batch carries, and for each owner its creation key and its values of
  the identifier types that have a per-profile limit (see ``StoredWorld``);
- ``BatchFold.fold`` then runs identity resolution event by event in the log's order (the
  only inherently sequential work: merges, limit conflicts, erasures), and records for each
  applied event only *what it says*: the profile it landed on, and small per-identifier
  aggregates (first/last seen, bounces, consent and CCPA candidates) in ``IdentifierDelta``;
- ``BatchFold.finish`` resolves every profile id to its final survivor (or erasure) and
  returns ``BatchChanges``, which the store turns into set-based SQL: last-writer-wins traits,
  orders and subscriptions, merges of stored rows, profile aggregates and the timeline are
  computed by DuckDB over the whole batch at once.

Every rule has the specification's meaning; property tests fold random logs through both and
compare every projection table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

import orjson

from profile_engine.events import (
    CHANNEL_ID_TYPE,
    ID_TYPE_CHANNEL,
    Bounce,
    Ccpa,
    Consent,
    Identify,
    ProfileEvent,
    Subscription,
    Track,
)
from profile_engine.fold import SEEN_EVENT_TYPES, FoldConfig, profile_id_for
from profile_engine.keys import IdentifierHashes, content_fingerprint, event_key, identifier_key
from profile_engine.state import OrderKey

IdKey = str  # identifier_key(id_type, value): the 128-bit key the projections join on


IdentifierTuple = tuple[str, str, bool]  # (id_type, normalised value, valid)
TraitRow = tuple[str, str | None, str | None]  # (name, stored text, JSON type); None unsets


class Prepared(NamedTuple):
    """An event as the fold needs it, with everything derived from it alone (see ``prepare``).

    Plain values only: prepared where the event is decoded, in parallel with the fold, and
    sent to the folding process, where a tuple of strings unpickles several times faster
    than the typed event with its payload dicts.
    """

    event_id: str
    timestamp_us: int
    type: str
    identifiers: tuple[IdentifierTuple, ...]  # priority order, as the event carries them
    id_keys: tuple[str, ...]  # identifier_key of each identifier, in the same order
    fingerprint: str  # content_fingerprint: tells a redelivery from a reused event_id
    event_key: str  # event_key(event_id)
    payload: str  # the timeline's payload JSON
    # What the event says, by type: identify (trait rows...), track (event name, order or
    # None), consent (channel, status), bounce (channel, bounce type), subscription (list id,
    # channel, status, identifier value or None), ccpa (request,).
    detail: tuple[Any, ...]
    # Sealed events only (profile_engine.sealing): the data key of each identifier's token, in
    # the order of ``identifiers`` (the first also seals traits and properties), and the key
    # as wrapped under the master key, or None when it was erased.
    key_refs: tuple[str, ...] = ()
    wrapped_keys: tuple[bytes | None, ...] = ()


def prepare(event: ProfileEvent, hashes: IdentifierHashes | None = None) -> Prepared:
    """Derive what folding one event needs that depends on nothing else; raises for an event
    whose values cannot be stored (the caller dead-letters it). ``hashes``: the keyed
    identifier keys and fingerprints of a projection with a master key."""
    if hashes is not None:
        key_of, fingerprint = hashes.identifier_key, hashes.content_fingerprint
    else:
        key_of, fingerprint = identifier_key, content_fingerprint
    return Prepared(
        event.event_id,
        event.timestamp_us,
        event.type,
        tuple((i.id_type, i.value, i.valid) for i in event.identifiers),
        tuple(key_of(i.id_type, i.value) for i in event.identifiers),
        fingerprint(event),
        event_key(event.event_id),
        timeline_payload(event),
        _detail(event, hashes),
    )


def _detail(event: ProfileEvent, hashes: IdentifierHashes | None = None) -> tuple[Any, ...]:
    if isinstance(event, Identify):
        return tuple((name, *_trait_cell(value)) for name, value in event.traits.items())
    if isinstance(event, Track):
        return (event.event, keyed_order(order_of(event), hashes))
    if isinstance(event, Consent):
        return (event.channel, event.status)
    if isinstance(event, Bounce):
        return (event.channel, event.bounce_type)
    if isinstance(event, Subscription):
        return (event.list_id, event.channel, event.status, subscription_identifier(event))
    if isinstance(event, Ccpa):
        return (event.request,)
    raise TypeError(f"unknown event type {event.type!r}")


def _trait_cell(value: Any) -> tuple[str | None, str | None]:
    return (None, None) if value is None else trait_text(value)


@dataclass(frozen=True, slots=True)
class StoredProfile:
    """What identity resolution needs of a stored live profile."""

    created_key: OrderKey
    # Keys of the identifiers of the types that have a per-profile limit (usually
    # customer_id): keys, not values, so sealed values (whose tokens differ from event to
    # event) count once per identifier.
    limited: Mapping[str, frozenset[IdKey]]


@dataclass
class StoredWorld:
    """The part of the stored state a batch can reach, paged in before it is folded."""

    owners: dict[IdKey, str] = field(default_factory=dict)  # identifier key -> live profile
    profiles: dict[str, StoredProfile] = field(default_factory=dict)  # those owners
    # event_id -> fingerprint of events already applied (only the batch's ids are asked for)
    applied: dict[str, str] = field(default_factory=dict)
    # A keyed projection: the data keys (references) stored for each of those identifiers.
    refs: dict[IdKey, set[str]] = field(default_factory=dict)


class IdentifierDelta:
    """One identifier's aggregates over this batch (one incarnation: an erasure restarts it).

    ``fresh`` means the stored row (if any) no longer applies: the identifier was erased in
    this batch and created again, or did not exist before.
    """

    __slots__ = (
        "ccpa",
        "ccpa_key",
        "complaints",
        "explicit_consent",
        "explicit_key",
        "first_seen",
        "fresh",
        "hard_bounces",
        "id_type",
        "last_seen_key",
        "soft_bounce_times",
        "unknown_key",
        "valid",
        "value",
    )

    def __init__(self, ident: IdentifierTuple, fresh: bool) -> None:
        self.id_type, self.value, self.valid = ident
        self.fresh = fresh
        self.first_seen: int | None = None
        self.last_seen_key: OrderKey | None = None
        self.hard_bounces = 0
        self.complaints = 0
        # Every soft bounce of the batch; the store keeps those after the final last seen.
        self.soft_bounce_times: list[int] = []
        self.explicit_consent: str | None = None
        self.explicit_key: OrderKey | None = None
        self.unknown_key: OrderKey | None = None
        self.ccpa: str | None = None
        self.ccpa_key: OrderKey | None = None

    def seen(self, key: OrderKey) -> None:
        if self.first_seen is None or key[0] < self.first_seen:
            self.first_seen = key[0]
        if self.last_seen_key is None or key > self.last_seen_key:
            self.last_seen_key = key

    def set_consent(self, status: str, key: OrderKey) -> None:
        if status == "unknown":
            if self.unknown_key is None or key > self.unknown_key:
                self.unknown_key = key
        elif self.explicit_key is None or key > self.explicit_key:
            self.explicit_consent, self.explicit_key = status, key

    def bounce(self, bounce_type: str, timestamp: int) -> None:
        if bounce_type == "hard":
            self.hard_bounces += 1
        elif bounce_type == "complaint":
            self.complaints += 1
        else:
            self.soft_bounce_times.append(timestamp)

    def set_ccpa(self, request: str, key: OrderKey) -> None:
        if self.ccpa_key is None or key > self.ccpa_key:
            self.ccpa, self.ccpa_key = request, key


class Merge(NamedTuple):
    merged_profile_id: str
    timestamp_us: int
    event_id: str


class Conflict(NamedTuple):
    event_id: str
    timestamp_us: int
    dropped: IdentifierTuple
    owner_profile_id: str | None
    event_profile_id: str
    rule: str


class Applied(NamedTuple):
    """An applied event and the profile it landed on (before later merges in the batch)."""

    prepared: Prepared
    profile_id: str
    in_timeline: bool  # False for the delete that erased its own profile
    # The key of its highest-priority linked identifier: history dates the event on the
    # profile that identifier attached to (a late event belongs there on the days before
    # that profile was merged into the one it landed on).
    anchor: IdKey | None = None


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    REUSED_ID = "reused_id"


REUSED_ID_REASON = "event_id reused with different content"


class HistoryLog:
    """What the history tables need of a batch, recorded while folding (cheap appends).

    Every identifier effect names its *incarnation*: the profile the identifier attached to
    in this batch, or None for one attached in an earlier batch (the store knows where).
    Times are event times in µs; see projections/history_writer.py for the tables.
    """

    __slots__ = ("attached", "bounces", "ccpa", "consents", "erasures", "merges", "roots",
                 "seen", "seen_unread")  # fmt: skip

    def __init__(self) -> None:
        # (id_key, id_type, valid, value, profile attached to, time)
        self.attached: list[tuple[IdKey, str, bool, str, str, int]] = []
        # (key, incarnation, us, eid) of messaging identifiers (ID_TYPE_CHANNEL), whose last
        # seen the reachability inputs read; of the other types in ``seen_unread``: being
        # seen moves nothing the inputs read of them (only a CCPA request does).
        self.seen: list[tuple[IdKey, str | None, int, str]] = []
        self.seen_unread: list[tuple[IdKey, str | None, int, str]] = []
        self.consents: list[tuple[IdKey, str | None, str, int, str]] = []  # + status
        self.bounces: list[tuple[IdKey, str | None, str, int]] = []  # + bounce type
        self.ccpa: list[tuple[IdKey, str | None, str, int, str]] = []  # + request
        self.merges: list[tuple[str, str, int]] = []  # (merged, its survivor then, time)
        self.erasures: list[tuple[str, int]] = []  # (erased root, time)
        # Every profile id the batch reached -> the root of its tree (live or erased).
        self.roots: dict[str, str] = {}


@dataclass
class BatchChanges:
    """Everything a batch changed, with every profile id resolved to its final live profile."""

    applied: list[Applied]
    final_profile: dict[str, str | None]  # every profile id the batch met -> live id or None
    merges: list[tuple[str, str, int, str]]  # (merged id, final survivor, time, event_id)
    erased: set[str]  # profile ids (roots and batch merges into them) erased in the batch
    erased_roots: set[str]
    created: dict[str, OrderKey]  # profiles created in the batch that are still live
    identifiers: dict[IdKey, tuple[str, IdentifierDelta]]  # live identifier -> (profile, delta)
    conflicts: list[Conflict]
    history: HistoryLog = field(default_factory=HistoryLog)
    # Every profile created in the batch (also those merged away or erased in it since).
    created_all: dict[str, OrderKey] = field(default_factory=dict)
    # Keys of the identifiers the batch's erasures took that the batch carried (stored ones
    # it never met are found by the store).
    erased_keys: set[IdKey] = field(default_factory=set)
    # Of those: (id_type, value as the batch carried it, position of the erasure), where
    # a position is the number of events folded in the batch before it (BatchFold.calls):
    # an erasure reaches the batch's dead letters that came before it, not after.
    erased_values: dict[IdKey, tuple[str | None, str | None, int]] = field(default_factory=dict)
    # Each erased profile id -> the position of the erasure that took it.
    erasure_positions: dict[str, int] = field(default_factory=dict)
    # The data keys the batch's erasures destroy: those of the erased identifiers that the
    # fold met up to each erasure (stored, or in the batch's events before it), not versions
    # made later for a person who came back (a rebuild meets those after the erasure too).
    destroyed_refs: set[str] = field(default_factory=set)

    @property
    def touched_profiles(self) -> set[str]:
        """Final live profiles whose rows the batch changes."""
        touched = {pid for pid in self.final_profile.values() if pid is not None}
        touched.update(pid for pid, _ in self.identifiers.values())
        return touched


class BatchFold:
    """Identity resolution and per-identifier aggregates for one batch, in log order."""

    def __init__(self, config: FoldConfig, world: StoredWorld) -> None:
        self._limits = dict(config.id_limits)
        self._owner: dict[IdKey, str] = dict(world.owners)
        self._parent: dict[str, str] = {}
        self._created: dict[str, OrderKey] = {}
        self._limited: dict[str, dict[str, set[str]]] = {}
        for pid, stored in world.profiles.items():
            self._created[pid] = stored.created_key
            self._limited[pid] = {t: set(v) for t, v in stored.limited.items()}
        # Keys of the working set per profile, so an erasure can drop them.
        self._members: dict[str, list[IdKey]] = {}
        for key, pid in world.owners.items():
            self._members.setdefault(pid, []).append(key)
        self._stored_applied = world.applied
        self._batch_applied: dict[str, str] = {}
        self._deltas: dict[IdKey, IdentifierDelta] = {}
        self._reset: set[IdKey] = set()  # erased in this batch: the stored row is gone
        self._new_profiles: dict[str, OrderKey] = {}
        self._erased_roots: set[str] = set()
        self._applied: list[Applied] = []
        self._merges: list[tuple[str, Merge]] = []
        self._conflicts: list[Conflict] = []
        self._met: set[str] = set()
        self._history = HistoryLog()
        self._incarnation: dict[IdKey, str] = {}  # attached in this batch -> to which profile
        self._now = 0  # event time of the event being committed
        # Keys of identifiers erased so far in this batch (crypto-shredding destroys theirs).
        self.erased_keys: set[IdKey] = set()
        self._erased_values: dict[IdKey, tuple[str | None, str | None, int]] = {}
        # The data keys met so far per identifier, and those destroyed by erasures so far.
        self._refs: dict[IdKey, set[str]] = {k: set(v) for k, v in world.refs.items()}
        self.destroyed_refs: set[str] = set()
        self._erased_at: dict[str, int] = {}  # erased root -> position of its erasure
        self.calls = 0  # events given to fold() so far: the position of the next one
        self._position = 0

    # -- the fold ---------------------------------------------------------------------------

    def fold(self, prepared: Prepared) -> Outcome:
        """Fold one event. Everything that can fail is computed before any state changes, so
        an exception leaves the batch as if the event never came (the caller dead-letters it).

        A redelivered event (same event_id, same content) is a duplicate; the same event_id
        with other content is refused (``REUSED_ID``), so a collision is visible.
        """
        self._position = self.calls
        self.calls += 1
        if prepared.key_refs:  # met, whatever becomes of the event: an erasure after it reaches it
            refs = self._refs
            for ikey, ref in zip(prepared.id_keys, prepared.key_refs, strict=True):
                refs.setdefault(ikey, set()).add(ref)
        event_id = prepared.event_id
        known = self._batch_applied.get(event_id)
        if known is None:
            known = self._stored_applied.get(event_id)
        if known is not None:
            return Outcome.DUPLICATE if known == prepared.fingerprint else Outcome.REUSED_ID
        key: OrderKey = (prepared.timestamp_us, event_id)
        plan = self._plan(prepared, key)
        self._commit(prepared, key, plan)
        return Outcome.APPLIED

    def _find(self, pid: str) -> str:
        parent = self._parent
        root = pid
        while root in parent:
            root = parent[root]
        while pid != root:  # path compression
            parent[pid], pid = root, parent[pid]
        return root

    def _owner_of(self, key: IdKey) -> str | None:
        pid = self._owner.get(key)
        if pid is None or pid not in self._parent:
            return pid
        return self._find(pid)

    def _plan(self, prepared: Prepared, key: OrderKey) -> _Plan:
        keys = prepared.id_keys
        owner_of = self._owner_of
        first = owner_of(keys[0]) if keys else None
        if first is not None:
            for ikey in keys[1:]:
                if owner_of(ikey) != first:
                    break
            else:
                return _Plan(first, None, [], list(range(len(keys))), [])
        idents = prepared.identifiers
        # Positions in priority order (the order of event.identifiers), each identifier once.
        first_position: dict[IdKey, int] = {}
        for i, ikey in enumerate(keys):
            first_position.setdefault(ikey, i)
        candidates = list(first_position.values())
        dropped: list[tuple[int, str]] = []
        while True:
            owners = self._owners([keys[i] for i in candidates])
            broken = self._broken_limit([(idents[i][0], keys[i]) for i in candidates], owners)
            if broken is None:
                break
            dropped.append((candidates.pop(), broken))
        if owners:
            survivor = min(owners, key=self._created.__getitem__)
            merged = [o for o in owners if o != survivor]
            return _Plan(survivor, None, merged, candidates, dropped)
        return _Plan(profile_id_for(prepared.event_id), key, [], candidates, dropped)

    def _owners(self, keys: list[IdKey]) -> list[str]:
        owners: dict[str, None] = {}
        for ikey in keys:
            owner = self._owner_of(ikey)
            if owner is not None:
                owners[owner] = None
        return list(owners)

    def _broken_limit(self, candidates: list[tuple[str, IdKey]], owners: list[str]) -> str | None:
        for id_type, limit in self._limits.items():
            values = {key for kind, key in candidates if kind == id_type}
            for owner in owners:
                values.update(self._limited.get(owner, {}).get(id_type, ()))
            if len(values) > limit:
                return f"at most {limit} {id_type} per profile"
        return None

    def _commit(self, prepared: Prepared, key: OrderKey, plan: _Plan) -> None:
        keys = prepared.id_keys
        idents = prepared.identifiers
        target = plan.target
        self._now = key[0]
        if plan.created is not None:
            self._created[target] = plan.created
            self._new_profiles[target] = plan.created
        for other in plan.merged:
            self._merge(target, other, key)
        for i in plan.attached:
            self._attach(keys[i], idents[i], target)
        for i, rule in plan.dropped:
            owner = self._owner_of(keys[i])
            self._conflicts.append(Conflict(key[1], key[0], idents[i], owner, target, rule))
        self._batch_applied[key[1]] = prepared.fingerprint
        self._met.add(target)
        if prepared.type in SEEN_EVENT_TYPES:
            history, incarnation = self._history, self._incarnation
            for i in plan.attached:
                self._delta(keys[i], idents[i]).seen(key)
                log = history.seen if idents[i][0] in ID_TYPE_CHANNEL else history.seen_unread
                log.append((keys[i], incarnation.get(keys[i]), key[0], key[1]))
        erased = self._apply_payload(prepared, key, target)
        anchor = keys[plan.attached[0]] if plan.attached else None
        self._applied.append(Applied(prepared, target, not erased, anchor))

    def _attach(self, ikey: IdKey, ident: IdentifierTuple, target: str) -> None:
        if ikey in self._owner:
            return
        self._owner[ikey] = target
        self._incarnation[ikey] = target
        self._history.attached.append((ikey, ident[0], ident[2], ident[1], target, self._now))
        self._members.setdefault(target, []).append(ikey)
        self._deltas[ikey] = IdentifierDelta(ident, fresh=True)
        if ident[0] in self._limits:
            self._limited.setdefault(target, {}).setdefault(ident[0], set()).add(ikey)

    def _delta(self, ikey: IdKey, ident: IdentifierTuple) -> IdentifierDelta:
        delta = self._deltas.get(ikey)
        if delta is None:  # a stored identifier, first met in this batch
            delta = self._deltas[ikey] = IdentifierDelta(ident, fresh=False)
        return delta

    def _merge(self, survivor: str, other: str, key: OrderKey) -> None:
        self._parent[other] = survivor
        self._members.setdefault(survivor, []).extend(self._members.pop(other, []))
        moved = self._limited.pop(other, {})
        mine = self._limited.setdefault(survivor, {})
        for id_type, values in moved.items():
            mine.setdefault(id_type, set()).update(values)
        self._merges.append((other, Merge(other, key[0], key[1])))
        self._history.merges.append((other, survivor, key[0]))
        self._met.add(other)

    def _apply_payload(self, prepared: Prepared, key: OrderKey, target: str) -> bool:
        """Per-identifier effects; True when the event erased its profile."""
        kind = prepared.type
        if kind == "consent" or kind == "bounce":
            # Consent and bounces belong to the address, even when an identity conflict kept
            # it on another profile.
            channel, value = prepared.detail
            position = _position(prepared.identifiers, CHANNEL_ID_TYPE[channel])
            if position is not None:
                ikey = prepared.id_keys[position]
                if self._owner_of(ikey) is not None:
                    delta = self._delta(ikey, prepared.identifiers[position])
                    incarnation = self._incarnation.get(ikey)
                    if kind == "consent":
                        delta.set_consent(value, key)
                        self._history.consents.append((ikey, incarnation, value, key[0], key[1]))
                    else:
                        delta.bounce(value, key[0])
                        self._history.bounces.append((ikey, incarnation, value, key[0]))
        elif kind == "ccpa":
            (request,) = prepared.detail
            if request == "delete":
                self._history.erasures.append((target, key[0]))
                self._erase(target)
                return True
            for ikey, ident in zip(prepared.id_keys, prepared.identifiers, strict=True):
                if self._owner_of(ikey) == target:
                    self._delta(ikey, ident).set_ccpa(request, key)
                    self._history.ccpa.append(
                        (ikey, self._incarnation.get(ikey), request, key[0], key[1])
                    )
        return False

    def _erase(self, root: str) -> None:
        self._erased_roots.add(root)
        self._erased_at[root] = self._position
        for ikey in self._members.pop(root, []):
            if self._owner_of(ikey) == root:
                del self._owner[ikey]
                delta = self._deltas.pop(ikey, None)
                self._reset.add(ikey)
                self.erased_keys.add(ikey)
                known = (None, None) if delta is None else (delta.id_type, delta.value)
                self._erased_values[ikey] = (*known, self._position)
                self.destroyed_refs |= self._refs.pop(ikey, set())
        self._limited.pop(root, None)

    # -- the result -------------------------------------------------------------------------

    def finish(self) -> BatchChanges:
        final: dict[str, str | None] = {}
        erased: set[str] = set()
        for pid in self._met | set(self._parent):
            root = self._find(pid)
            if root in self._erased_roots:
                final[pid] = None
                erased.add(pid)
            else:
                final[pid] = root
        identifiers: dict[IdKey, tuple[str, IdentifierDelta]] = {}
        for ikey, delta in self._deltas.items():
            owner = self._owner_of(ikey)
            if owner is None:
                continue
            if ikey in self._reset:
                delta.fresh = True
            identifiers[ikey] = (owner, delta)
        merges = [
            (m.merged_profile_id, survivor, m.timestamp_us, m.event_id)
            for merged, m in self._merges
            if (survivor := final.get(merged)) is not None
        ]
        created = {pid: k for pid, k in self._new_profiles.items() if final.get(pid) == pid}
        history = self._history
        # Profiles whose identifiers the batch changed without an event landing on them
        # (consent and bounces on an address an identity conflict kept elsewhere).
        reached = self._met | set(self._parent) | {owner for owner, _ in identifiers.values()}
        history.roots = {pid: self._find(pid) for pid in reached}
        return BatchChanges(
            applied=self._applied,
            final_profile=final,
            merges=merges,
            erased=erased,
            erased_roots=set(self._erased_roots),
            erased_keys=set(self.erased_keys),
            erased_values=dict(self._erased_values),
            erasure_positions={pid: self._erased_at[self._find(pid)] for pid in erased},
            destroyed_refs=set(self.destroyed_refs),
            created=created,
            identifiers=identifiers,
            conflicts=self._conflicts,
            history=history,
            created_all=dict(self._new_profiles),
        )


class _Plan(NamedTuple):
    target: str
    created: OrderKey | None  # the new profile's creation key, when the event creates one
    merged: list[str]  # owners merged into the target
    attached: list[int]  # positions in event.identifiers of the identifiers it links
    dropped: list[tuple[int, str]]  # position and the limit its link would break


def _position(identifiers: tuple[IdentifierTuple, ...], id_type: str) -> int | None:
    for i, ident in enumerate(identifiers):
        if ident[0] == id_type:
            return i
    return None


def order_of(event: Track) -> tuple[str, float] | None:
    """The (order_id, revenue) a purchase sets, or None (the specification's condition)."""
    if event.event != "purchase":
        return None
    props = event.properties
    order_id, revenue = props.get("order_id"), props.get("revenue")
    if order_id is not None and isinstance(revenue, int | float):
        return str(order_id), float(revenue)
    return None


def keyed_order(
    order: tuple[str, float] | None, hashes: IdentifierHashes | None
) -> tuple[str, float] | None:
    """In a projection with a master key, the order id as a keyed hash: it is read from
    sealed properties (it may name the person, and an erasure cannot reach a value stored in
    clear); orders are still told apart by it, the same order alike."""
    if order is None or hashes is None:
        return order
    return hashes.identifier_key("order_id", order[0]), order[1]


def subscription_identifier(event: Subscription) -> str | None:
    ident = event.identifier(CHANNEL_ID_TYPE[event.channel])
    return ident.value if ident else None


def timeline_payload(event: ProfileEvent) -> str:
    """The event's own fields plus its identifiers, as compact JSON (the timeline's payload)."""
    payload = event.payload()
    payload["identifiers"] = {i.id_type: i.value for i in event.identifiers}
    # Decoded at once: orjson's bytes keep an oversized buffer, and holding a batch of them
    # alive until a column is built costs more than the encoding itself.
    return orjson.dumps(payload, default=str).decode()


def trait_text(value: Any) -> tuple[str, str]:
    """A trait's stored text and its JSON type (string|long|double|boolean)."""
    if isinstance(value, bool):
        return ("true" if value else "false"), "boolean"
    if isinstance(value, int):
        return str(value), "long"
    if isinstance(value, float):
        return repr(value), "double"
    return str(value), "string"
