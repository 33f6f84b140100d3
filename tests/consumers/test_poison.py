"""Poison on the topic never stops the fold: every message is folded, a duplicate or a dead
letter with its reason, and the consumer ends normally (real broker, raw bytes on the wire).

The messages are valid Avro of the envelope written around the contract, as a foreign
producer could: the fold must judge them by the same rule book as `publish`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import duckdb
import fastavro
import pytest
from kafka import KafkaProducer

from consumers.codec import AvroCodec
from consumers.consumer import ConsumeOptions, consume
from consumers.producer import EventProducer
from tests.profile_engine.builders import identify, track

pytestmark = pytest.mark.kafka

CODEC = AvroCodec()
NOW_MS = 1_767_261_600_000  # 2026-01-01T10:00:00Z: the record timestamp of every message


def _message(event_id: str, payload: tuple[str, dict[str, Any]], **fields: Any) -> bytes:
    """Single-object Avro of the current envelope, written without the contract's checks."""
    record = {
        "event_id": event_id,
        "type": fields.pop("type", "track"),
        "timestamp": fields.pop("timestamp", NOW_MS * 1000),
        "identifiers": fields.pop(
            "identifiers", [{"id_type": "anonymous_id", "value": f"p-{event_id}", "valid": True}]
        ),
        "payload": payload,
    }
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(CODEC.schema), record)
    return CODEC._header + out.getvalue()


def _track(event_id: str, properties_json: str, name: str = "page_view") -> bytes:
    payload = ("profile_engine.Track", {"event": name, "properties_json": properties_json})
    return _message(event_id, payload)


def _identify(event_id: str, traits: dict[str, Any]) -> bytes:
    return _message(event_id, ("profile_engine.Identify", {"traits": traits}), type="identify")


def _with_lone_surrogate(message: bytes, placeholder: bytes) -> bytes:
    """Replace a 3-byte placeholder by a UTF-8-encoded lone surrogate (no encoder writes one)."""
    assert message.count(placeholder) == 1
    return message.replace(placeholder, "\ud800".encode("utf-8", "surrogatepass"))


POISON: dict[str, bytes] = {
    "deep nesting": _track("deep", "[" * 300 + "]" * 300),
    "deeper than the parser": _track("deeper", '{"a":' * 5000 + "1" + "}" * 5000),
    # Under the broker's default message size, over the contract's payload limit.
    "huge array": _track("huge", json.dumps({"xs": list(range(100_000))})),
    "NaN property": _track("nan", '{"v": NaN}'),
    "Infinity property": _track("inf", '{"v": Infinity}'),
    "1e308 revenue": _track("big-revenue", '{"order_id": "o1", "revenue": 1e308}', "purchase"),
    "integer beyond 64 bits": _track("int128", '{"v": 123456789012345678901234567890}'),
    "NaN trait": _identify("nan-trait", {"city": float("nan")}),
    "NUL in a trait": _identify("nul", {"city": "Par\x00is"}),
    "lone surrogate": _with_lone_surrogate(_identify("surrogate", {"city": "QQQ"}), b"QQQ"),
    "object order id": _track("object-order", '{"order_id": {"a": 1}, "revenue": 5}', "purchase"),
    "year 9999": _message(
        "far-future",
        ("profile_engine.Track", {"event": "x", "properties_json": "{}"}),
        timestamp=253_402_300_799_000_000,
    ),
    "not an email but valid": _message(
        "bad-email",
        ("profile_engine.Track", {"event": "x", "properties_json": "{}"}),
        identifiers=[{"id_type": "email", "value": "NOT AN EMAIL", "valid": True}],
    ),
    "not avro": b"\xc3\x01garbage",
}


def test_every_kind_of_poison_is_a_dead_letter_and_the_good_events_fold(
    kafka_bootstrap: str, fresh_topic: str, db_path: Path
) -> None:
    good = [identify(0, {"city": "Oslo"}, eid="good-1", email="ann@example.com"),
            track(1, eid="good-2", email="ann@example.com")]  # fmt: skip
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=16 * 1024 * 1024
    )
    sent = [
        producer.send(fresh_topic, key=name.encode(), value=value, timestamp_ms=NOW_MS)
        for name, value in POISON.items()
    ]
    producer.flush()
    producer.close()
    for future in sent:
        future.get(timeout=30)  # every poison message is on the topic
    with EventProducer(kafka_bootstrap, fresh_topic) as events:
        for event in good:
            events.send(event)

    stats = consume(str(db_path), kafka_bootstrap, fresh_topic, None,
                    options=ConsumeOptions(once=True))  # fmt: skip

    assert stats.consumed == stats.folded + stats.duplicates + stats.dead_lettered
    assert stats.consumed == len(POISON) + len(good)
    with duckdb.connect(str(db_path), read_only=True) as con:
        letters = dict(con.execute("SELECT message_key, reason FROM dead_letters").fetchall())
        applied = {r[0] for r in con.execute("SELECT event_id FROM applied_events").fetchall()}
    reasons = {key.decode(): reason for key, reason in letters.items()}
    # The one message that breaks no rule once its identifier is judged from its value: an
    # invalid email is kept, marked invalid (never deliverable).
    assert set(reasons) == set(POISON) - {"not an email but valid"}
    assert all(reason.strip() for reason in reasons.values())
    assert "window" in reasons["year 9999"]
    assert {"good-1", "good-2", "bad-email"} <= applied
    with duckdb.connect(str(db_path), read_only=True) as con:
        (valid,) = con.execute(  # type: ignore[misc]
            "SELECT valid FROM identifiers WHERE id_value = 'not an email'"
        ).fetchone()
    assert valid is False


def test_an_event_id_reused_for_other_content_is_a_dead_letter(
    kafka_bootstrap: str, fresh_topic: str, db_path: Path
) -> None:
    first = track(0, eid="same-id", anonymous_id="a1")
    again = track(0, eid="same-id", anonymous_id="a1")  # a redelivery: a duplicate
    other = track(5, "checkout", eid="same-id", anonymous_id="a2")  # other content
    with EventProducer(kafka_bootstrap, fresh_topic) as producer:
        for event in (first, again, other):
            producer.send(event)
    stats = consume(str(db_path), kafka_bootstrap, fresh_topic, None,
                    options=ConsumeOptions(once=True))  # fmt: skip
    assert (stats.folded, stats.duplicates, stats.dead_lettered) == (1, 1, 1)
    with duckdb.connect(str(db_path), read_only=True) as con:
        reasons = [r[0] for r in con.execute("SELECT reason FROM dead_letters").fetchall()]
    assert reasons == ["event_id reused with different content"]
