"""The profile document (projections.queries.profile_view) on hand-made logs."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from projections import queries
from projections.readonly import open_readonly
from tests.projections.logs import T0, fold


def identify(traits: dict[str, Any] | None = None, **ids: str) -> dict[str, Any]:
    return {"type": "identify", "identifiers": ids, "traits": traits or {}}


def view(db_path: Path, key: str) -> dict[str, Any] | None:
    con = open_readonly(str(db_path))
    try:
        return queries.profile_view(con, key)
    finally:
        con.close()


def _found(db_path: Path, key: str) -> dict[str, Any]:
    document = view(db_path, key)
    assert document is not None, f"{key} resolved to nothing"
    return document


def test_the_document_has_exactly_the_documented_keys(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", email="a@example.com"))
    document = _found(db_path, "customer_id:c1")
    assert list(document) == [
        "profile_id", "first_seen", "ccpa_opted_out", "email_hash_number", "traits",
        "identifiers", "reachable", "subscriptions", "orders", "timeline",
    ]  # fmt: skip
    assert list(document["identifiers"][0]) == [
        "type", "value", "is_last_seen", "valid", "deliverable", "consent", "first_seen",
        "last_seen",
    ]  # fmt: skip
    assert list(document["orders"]) == ["count", "revenue", "average", "last_purchase_at"]
    assert list(document["reachable"]) == ["email", "sms", "push"]


def test_lookup_values_are_normalised_like_the_events(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", email="Ann@Example.com", phone="+1 415 555 2671"))
    by_email = _found(db_path, "email:  ANN@example.COM ")
    by_phone = _found(db_path, "phone:(415) 555-2671")
    assert by_email["profile_id"] == by_phone["profile_id"]


def test_a_profile_id_lookup_finds_the_profile(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1"))
    profile_id = _found(db_path, "customer_id:c1")["profile_id"]
    assert _found(db_path, f"profile_id:{profile_id}")["profile_id"] == profile_id


def test_a_merged_away_profile_id_resolves_to_its_survivor(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1"), identify(email="a@example.com"))
    first = _found(db_path, "customer_id:c1")["profile_id"]
    second = _found(db_path, "email:a@example.com")["profile_id"]
    fold(db_path, identify(customer_id="c1", email="a@example.com") | {"event_id": "merge"})
    survivor = _found(db_path, "customer_id:c1")["profile_id"]
    merged_away = second if survivor == first else first
    assert merged_away != survivor
    assert _found(db_path, f"profile_id:{merged_away}")["profile_id"] == survivor


@pytest.mark.parametrize("key", ["email:nobody@example.com", "profile_id:nope", "email:null"])
def test_an_identifier_that_resolves_to_nothing_gives_none(db_path: Path, key: str) -> None:
    fold(db_path, identify(customer_id="c1", email="a@example.com"))
    assert view(db_path, key) is None


def test_an_erased_profile_is_not_found(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1"),
         {"type": "ccpa", "identifiers": {"customer_id": "c1"}, "request": "delete"})  # fmt: skip
    assert view(db_path, "customer_id:c1") is None


@pytest.mark.parametrize("key", ["email", "fax:123", "email:"])
def test_a_malformed_lookup_key_is_a_query_error(db_path: Path, key: str) -> None:
    fold(db_path, identify(customer_id="c1"))
    with pytest.raises(queries.QueryError):
        view(db_path, key)


def test_traits_are_typed_with_time_and_source(db_path: Path) -> None:
    fold(
        db_path, identify({"name": "Ann", "points": 12, "ltv": 2.5, "vip": True}, customer_id="c1")
    )
    traits = _found(db_path, "customer_id:c1")["traits"]
    assert traits == {
        "ltv": {"value": 2.5, "updated_at": "2026-01-10T12:01:00Z", "source": "e0001"},
        "name": {"value": "Ann", "updated_at": "2026-01-10T12:01:00Z", "source": "e0001"},
        "points": {"value": 12, "updated_at": "2026-01-10T12:01:00Z", "source": "e0001"},
        "vip": {"value": True, "updated_at": "2026-01-10T12:01:00Z", "source": "e0001"},
    }


def test_identifiers_are_tagged_last_seen_with_iso_times(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", email="old@example.com"),
         identify(customer_id="c1", email="new@example.com"),
         {"type": "bounce", "identifiers": {"email": "new@example.com"}, "channel": "email",
          "bounce_type": "hard"})  # fmt: skip
    emails = [i for i in _found(db_path, "customer_id:c1")["identifiers"] if i["type"] == "email"]
    assert emails == [
        {"type": "email", "value": "new@example.com", "is_last_seen": True, "valid": True,
         "deliverable": False, "consent": "unknown", "first_seen": "2026-01-10T12:02:00Z",
         "last_seen": "2026-01-10T12:02:00Z"},
        {"type": "email", "value": "old@example.com", "is_last_seen": False, "valid": True,
         "deliverable": True, "consent": "unknown", "first_seen": "2026-01-10T12:01:00Z",
         "last_seen": "2026-01-10T12:01:00Z"},
    ]  # fmt: skip


def test_reachable_follows_the_rules(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", email="a@example.com", phone="+14155552671",
                           push_token="tok"))  # fmt: skip
    assert _found(db_path, "customer_id:c1")["reachable"] == {
        "email": True, "sms": False, "push": True,
    }  # fmt: skip


def test_email_hash_number_is_a_stable_bucket_of_the_last_seen_email(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", email="old@example.com"),
         identify(customer_id="c1", email="new@example.com"),
         identify(customer_id="c2"))  # fmt: skip
    expected = int(hashlib.sha256(b"new@example.com").hexdigest()[:8], 16) % 100
    assert _found(db_path, "customer_id:c1")["email_hash_number"] == expected
    assert _found(db_path, "customer_id:c2")["email_hash_number"] is None


def test_subscriptions_and_orders(db_path: Path) -> None:
    fold(db_path,
         {"type": "subscription", "identifiers": {"email": "a@example.com"}, "list_id": "news",
          "channel": "email", "status": "subscribed"},
         {"type": "track", "identifiers": {"email": "a@example.com"}, "event": "purchase",
          "properties": {"order_id": "o1", "revenue": 30.0}},
         {"type": "track", "identifiers": {"email": "a@example.com"}, "event": "purchase",
          "properties": {"order_id": "o2", "revenue": 10.0}})  # fmt: skip
    document = _found(db_path, "email:a@example.com")
    assert document["subscriptions"] == [
        {"list_id": "news", "channel": "email", "status": "subscribed",
         "identifier": "a@example.com", "updated_at": "2026-01-10T12:01:00Z"},
    ]  # fmt: skip
    assert document["orders"] == {
        "count": 2, "revenue": 40.0, "average": 20.0, "last_purchase_at": "2026-01-10T12:03:00Z",
    }  # fmt: skip


def test_no_orders_gives_a_null_average(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1"))
    orders = _found(db_path, "customer_id:c1")["orders"]
    assert orders == {"count": 0, "revenue": 0.0, "average": None, "last_purchase_at": None}


def test_timeline_is_the_latest_twenty_newest_first(db_path: Path) -> None:
    fold(db_path, *[
        {"type": "track", "identifiers": {"customer_id": "c1"}, "event": f"view_{n}",
         "properties": {"n": n}}
        for n in range(1, 26)
    ])  # fmt: skip
    timeline = _found(db_path, "customer_id:c1")["timeline"]
    assert [e["event_name"] for e in timeline] == [f"view_{n}" for n in range(25, 5, -1)]
    assert timeline[0]["event_id"] == "e0025"
    assert timeline[0]["type"] == "track"
    assert timeline[0]["timestamp"] == "2026-01-10T12:25:00Z"
    assert timeline[0]["payload"]["properties"] == {"n": 25}


def test_timeline_events_of_the_same_time_come_by_event_id_newest_first(db_path: Path) -> None:
    same = (T0 + timedelta(hours=1)).isoformat()
    fold(db_path, *[
        {"type": "track", "identifiers": {"customer_id": "c1"}, "event": "view",
         "event_id": event_id, "timestamp": same}
        for event_id in ("b", "d", "a", "c")
    ], {"type": "track", "identifiers": {"customer_id": "c1"}, "event": "earlier"})  # fmt: skip
    timeline = _found(db_path, "customer_id:c1")["timeline"]
    assert [e["event_id"] for e in timeline] == ["d", "c", "b", "a", "e0005"]
