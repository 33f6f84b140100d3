"""Mutable fold state: plain slotted classes, cheap in the hot loop.

Every last-writer-wins value carries its order key ``(timestamp_us, event_id)``. Comparing
keys instead of arrival order is what makes the state independent of how partitions were
interleaved: the same set of events always gives the same state.
"""

from __future__ import annotations

from profile_engine.events import Identifier

OrderKey = tuple[int, str]
TraitValue = str | int | float | bool | None

NO_KEY: OrderKey = (-(2**63), "")


class IdentifierState:
    __slots__ = (
        "ccpa",
        "ccpa_key",
        "complaints",
        "explicit_consent",
        "explicit_key",
        "first_seen",
        "hard_bounces",
        "id_type",
        "last_seen_key",
        "profile_id",
        "recent_soft_bounces",
        "soft_bounces",
        "unknown_key",
        "valid",
        "value",
    )

    def __init__(self, ident: Identifier, profile_id: str) -> None:
        self.id_type = ident.id_type
        self.value = ident.value
        self.valid = ident.valid
        self.profile_id = profile_id
        self.first_seen: int | None = None
        # (timestamp, event_id) of the latest identify/track/consent/subscription carrying it.
        self.last_seen_key: OrderKey | None = None
        self.hard_bounces = 0
        self.complaints = 0
        self.soft_bounces = 0
        # Timestamps of soft bounces after last_seen: "consecutive" soft bounces, kept as a
        # set of times so the count does not depend on arrival order.
        self.recent_soft_bounces: list[int] = []
        # Consent is resolved from two candidates (see ``consent``).
        self.explicit_consent: str | None = None  # latest opted_in | opted_out | pending
        self.explicit_key: OrderKey | None = None
        self.unknown_key: OrderKey | None = None  # latest "unknown"
        self.ccpa: str | None = None  # opt_out | opt_in, LWW
        self.ccpa_key: OrderKey | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.id_type, self.value)

    @property
    def deliverable(self) -> bool:
        return self.valid and self.hard_bounces == 0 and self.complaints == 0

    @property
    def consent(self) -> str:
        """Latest consent, except that ``unknown`` never replaces opted_in or opted_out."""
        explicit, unknown_key = self.explicit_consent, self.unknown_key
        if explicit is None:
            return "unknown"
        if explicit in ("opted_in", "opted_out") or unknown_key is None:
            return explicit
        assert self.explicit_key is not None
        return "unknown" if unknown_key > self.explicit_key else explicit

    def consent_with_key(self) -> tuple[str, OrderKey | None]:
        """``consent`` and the key of the event that set it, resolved once."""
        consent = self.consent
        return consent, (self.unknown_key if consent == "unknown" else self.explicit_key)

    @property
    def consecutive_soft_bounces(self) -> int:
        return len(self.recent_soft_bounces)

    def seen(self, key: OrderKey) -> None:
        timestamp = key[0]
        if self.first_seen is None or timestamp < self.first_seen:
            self.first_seen = timestamp
        if self.last_seen_key is None or key > self.last_seen_key:
            self.last_seen_key = key
            if self.recent_soft_bounces:
                self.recent_soft_bounces = [t for t in self.recent_soft_bounces if t > timestamp]

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
            self.soft_bounces += 1
            last_seen = self.last_seen_key[0] if self.last_seen_key else None
            if last_seen is None or timestamp > last_seen:
                self.recent_soft_bounces.append(timestamp)

    def set_ccpa(self, request: str, key: OrderKey) -> None:
        if self.ccpa_key is None or key > self.ccpa_key:
            self.ccpa, self.ccpa_key = request, key


class ProfileState:
    __slots__ = (
        "created_key",
        "event_count",
        "first_seen",
        "identifiers",
        "last_seen",
        "orders",
        "profile_id",
        "subscriptions",
        "traits",
    )

    def __init__(self, profile_id: str, created_key: OrderKey) -> None:
        self.profile_id = profile_id
        self.created_key = created_key
        # id_type -> {value: IdentifierState}
        self.identifiers: dict[str, dict[str, IdentifierState]] = {}
        # name -> (value, key); a None value is a tombstone: a later null unset it.
        self.traits: dict[str, tuple[TraitValue, OrderKey]] = {}
        # order_id -> (revenue, key)
        self.orders: dict[str, tuple[float, OrderKey]] = {}
        # (list_id, channel) -> (status, identifier value or None, key)
        self.subscriptions: dict[tuple[str, str], tuple[str, str | None, OrderKey]] = {}
        self.first_seen = created_key[0]
        self.last_seen = created_key[0]
        self.event_count = 0

    def all_identifiers(self) -> list[IdentifierState]:
        return [state for by_value in self.identifiers.values() for state in by_value.values()]

    def ccpa_state(self) -> tuple[bool, OrderKey | None]:
        """(opted out, latest CCPA request key): opted out when any identifier's latest
        request is an opt-out."""
        opted_out = False
        latest: OrderKey | None = None
        for by_value in self.identifiers.values():
            for state in by_value.values():
                if state.ccpa_key is not None:
                    opted_out = opted_out or state.ccpa == "opt_out"
                    if latest is None or state.ccpa_key > latest:
                        latest = state.ccpa_key
        return opted_out, latest

    @property
    def ccpa_opted_out(self) -> bool:
        return self.ccpa_state()[0]

    def touch(self, timestamp: int) -> None:
        self.event_count += 1
        if timestamp < self.first_seen:
            self.first_seen = timestamp
        if timestamp > self.last_seen:
            self.last_seen = timestamp

    def set_trait(self, name: str, value: TraitValue, key: OrderKey) -> None:
        current = self.traits.get(name)
        if current is None or key > current[1]:
            self.traits[name] = (value, key)

    def set_order(self, order_id: str, revenue: float, key: OrderKey) -> None:
        current = self.orders.get(order_id)
        if current is None or key > current[1]:
            self.orders[order_id] = (revenue, key)

    def set_subscription(
        self, list_id: str, channel: str, status: str, identifier: str | None, key: OrderKey
    ) -> None:
        slot = (list_id, channel)
        current = self.subscriptions.get(slot)
        if current is None or key > current[2]:
            self.subscriptions[slot] = (status, identifier, key)

    def absorb(self, other: ProfileState) -> None:
        """Take over another profile's state (a merge): per-value last-writer-wins."""
        for id_type, by_value in other.identifiers.items():
            mine = self.identifiers.setdefault(id_type, {})
            for id_value, state in by_value.items():
                state.profile_id = self.profile_id
                mine[id_value] = state
        for name, (trait, key) in other.traits.items():
            self.set_trait(name, trait, key)
        for order_id, (revenue, key) in other.orders.items():
            self.set_order(order_id, revenue, key)
        for (list_id, channel), (status, ident, key) in other.subscriptions.items():
            self.set_subscription(list_id, channel, status, ident, key)
        self.first_seen = min(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen, other.last_seen)
        self.event_count += other.event_count
