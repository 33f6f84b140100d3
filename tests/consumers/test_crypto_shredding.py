"""Erasure that reaches the log, end to end on a real broker, as a user runs it (the CLI).

One scenario, many assertions (each CLI run costs seconds): a person's events are published
sealed (identify with traits, a purchase, consent, and a limit conflict that puts their email
into another profile's event), a tampered copy of one of them, a foreign plaintext event of
another person, an archive taken before the delete, then the delete; consume, rebuild from
Kafka and rebuild from the archive. Afterwards no byte of the erased person's email, phone or
name is left in the topic (keys and values), the dead-letter topic, the key topic, the
archive, or the database files of the three projections; the others still read in clear and
fold alike. A key store that was lost turns sealed events into dead letters that say so.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import duckdb
import fastavro
import pytest
from kafka import KafkaProducer

from profile_engine.crypto import ERASED
from profile_engine.events import ProfileEvent
from projections import queries
from tests.profile_engine.builders import ccpa, consent, identify, purchase, track
from tests.support.kafka import consume_all
from tests.support.sealed_cli import MASTER_KEY, RING, ok, run_cli, write_events

# The erased person: values distinctive enough that a byte scan cannot meet them by chance.
ANN_EMAIL = "ann.quixotic-erasure@example.com"
ANN_PHONE = "+14155550187"
ANN_NAME = "Annabelqwyn"
ANN_CUSTOMER = "cust-ann-83921"
ANN_ORDER = "order-ann-55817"
ANN_SECRETS = [ANN_EMAIL, ANN_PHONE, ANN_PHONE[2:], ANN_NAME, ANN_CUSTOMER, ANN_ORDER]

BOB_EMAIL = "bob.keeps@example.com"
CAROL_EMAIL = "carol.keeps@example.com"
DAN_EMAIL = "dan.imported@example.com"


def ann_events() -> list[ProfileEvent]:
    return [
        identify(
            0,
            {"first_name": ANN_NAME, "last_name": "Gold"},
            eid="ann-1",
            customer_id=ANN_CUSTOMER,
            email=ANN_EMAIL,
            phone=ANN_PHONE,
        ),
        purchase(1, ANN_ORDER, 42.5, eid="ann-2", customer_id=ANN_CUSTOMER),
        consent(2, "email", "opted_in", eid="ann-3", email=ANN_EMAIL),
        track(3, "page_viewed", {"title": ANN_NAME}, eid="ann-4", phone=ANN_PHONE),
    ]


def others_events() -> list[ProfileEvent]:
    return [
        identify(4, {"first_name": "Bob"}, eid="bob-1", customer_id="cust-bob", email=BOB_EMAIL),
        identify(5, {"first_name": "Carol"}, eid="carol-1", email=CAROL_EMAIL),
        # customer_id allows one per profile: Ann's email cannot join Bob's profile, so it is
        # dropped there, but this event of Bob's profile carries it (sealed) in its payload.
        identify(6, {"last_name": "Silver"}, eid="bob-2", customer_id="cust-bob", email=ANN_EMAIL),
        consent(7, "email", "opted_in", eid="bob-3", email=BOB_EMAIL),
    ]


def tampered_copy(bootstrap: str, topic: str, event_id: str) -> tuple[bytes, bytes]:
    """A message of the topic with one base64 character of a trait value's token changed."""
    for message in consume_all(bootstrap, topic):
        if event_id.encode() in message.value:
            value = message.value
            start = value.index(b"pe1:", value.index(b"last_name"))  # the "last_name" trait's token
            at = start + 60  # inside its base64 body, past the key reference
            flipped = b"A" if value[at : at + 1] != b"A" else b"B"
            return message.key, value[:at] + flipped + value[at + 1 :]
    raise AssertionError(f"{event_id} is not on the topic")


def produce_raw(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        producer.send(topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close()


def leaks(data: bytes) -> list[str]:
    lowered = data.lower()
    return [s for s in ANN_SECRETS if s.lower().encode() in lowered]


def topic_bytes(bootstrap: str, topic: str) -> bytes:
    return b"\x00".join(
        (m.key or b"") + b"\x00" + (m.value or b"") for m in consume_all(bootstrap, topic)
    )


def database_bytes(db: Path) -> bytes:
    files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]  # .duckdb, .wal
    assert db in files
    return b"".join(p.read_bytes() for p in files)


def profile(db: Path, lookup: str) -> dict[str, Any] | None:
    """The profile page as `profile --format json` prints it (read in process: faster)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return queries.profile_view(con, lookup, RING)
    finally:
        con.close()


def sql_rows(db: Path, query: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def archive_bytes(path: Path) -> bytes:
    """The archive's raw bytes and its records decoded (its blocks are compressed)."""
    with path.open("rb") as handle:
        records = [repr(record).encode() for record in fastavro.reader(handle)]
    return path.read_bytes() + b"\x00".join(records)


@pytest.mark.timeout(300)
def test_an_erasure_leaves_no_readable_byte_of_the_person_anywhere(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    bootstrap = kafka_bootstrap
    topic = f"test-crypto-{uuid.uuid4().hex[:8]}"
    dlt = f"{topic}-dead"
    common = ("--bootstrap-servers", bootstrap, "--topic", topic)
    ok(run_cli("topics", "create", *common, "--dead-letter-topic", dlt, "--partitions", "3"))

    # Sealed events of three people, then a foreign producer's plaintext event of Carol.
    sealed = write_events(tmp_path / "sealed.jsonl", ann_events() + others_events())
    ok(run_cli("publish", str(sealed), *common))
    plain = [track(8, "page_viewed", {"title": "plain"}, eid="carol-2", email=CAROL_EMAIL)]
    ok(run_cli("publish", str(write_events(tmp_path / "p.jsonl", plain)), *common, key=False))
    # A CSV import is sealed like a publish.
    rows = tmp_path / "dan.csv"
    rows.write_text(f"email,first_name\n{DAN_EMAIL},Danforth\n")
    ok(run_cli("import", str(rows), "--id-column", "email", *common,
               "--timestamp", "2026-03-01T00:10:00+00:00",
               "--attributes", str(tmp_path / "attributes.json")))  # fmt: skip
    assert DAN_EMAIL.encode() not in topic_bytes(bootstrap, topic)
    # Nor a plain hash of the file in the events' ids (of a one-row file, a hash of Dan).
    assert hashlib.sha256(rows.read_bytes()).hexdigest()[:24].encode() not in topic_bytes(
        bootstrap, topic
    )
    assert CAROL_EMAIL.encode() in topic_bytes(bootstrap, topic)  # plaintext still goes in
    assert not leaks(topic_bytes(bootstrap, topic))  # sealed: nothing of Ann in clear

    # A copy of Ann's identify with one ciphertext character changed (a new event id would
    # change nothing: the id is authenticated through the keyed fingerprint).
    key, tampered = tampered_copy(bootstrap, topic, "ann-1")
    produce_raw(bootstrap, topic, key, tampered)

    archive = tmp_path / "before-delete.avro"
    ok(run_cli("archive", *common, "--out", str(archive)))
    delete = [ccpa(9, "delete", eid="ann-del", customer_id=ANN_CUSTOMER)]
    ok(run_cli("publish", str(write_events(tmp_path / "d.jsonl", delete)), *common))

    consumed = tmp_path / "consumed.duckdb"
    ok(run_cli("consume", "--db", str(consumed), *common, "--dead-letter-topic", dlt, "--once"))
    rebuilt = tmp_path / "rebuilt.duckdb"
    ok(run_cli("rebuild", "--db", str(rebuilt), *common))
    from_archive = tmp_path / "from-archive.duckdb"
    ok(run_cli("rebuild", "--db", str(from_archive), *common, "--from-file", str(archive)))

    # Tampering made a dead letter (authentication failed), not a profile.
    reasons = sql_rows(consumed, "SELECT reason FROM dead_letters")
    assert len(reasons) == 1 and "fails authentication" in reasons[0][0], reasons
    assert len(consume_all(bootstrap, dlt, expected=1)) == 1

    # Ann is gone from the projections, everywhere her keys reached.
    for db in (consumed, rebuilt):
        for lookup in (f"email:{ANN_EMAIL}", f"customer_id:{ANN_CUSTOMER}", f"phone:{ANN_PHONE}"):
            assert profile(db, lookup) is None, (db, lookup)
    # The archive predates the delete: her profile folds by blind index, but unreadable.
    archived_ann = profile(from_archive, f"customer_id:{ANN_CUSTOMER}")
    assert archived_ann is not None
    assert ANN_NAME not in json.dumps(archived_ann)

    # The others read in clear, alike in consume and rebuild; Carol's plaintext event joined
    # her sealed profile (plaintext events get blind indexes too). The archive predates the
    # delete, yet Ann's email in Bob's event reads as erased there too: its key is gone.
    for lookup in (f"email:{BOB_EMAIL}", f"email:{CAROL_EMAIL}"):
        pages = [profile(db, lookup) for db in (consumed, rebuilt, from_archive)]
        assert pages[0] is not None and pages[0] == pages[1], lookup
        # The archive holds the topic in the fold's order: the same profiles, ids included
        # (the timeline aside: without the delete, Bob's event keeps Ann's sealed email).
        assert {k: v for k, v in pages[0].items() if k != "timeline"} == {
            k: v for k, v in (pages[2] or {}).items() if k != "timeline"
        }, lookup
    carol, bob = json.dumps(pages[0]), json.dumps(profile(consumed, f"email:{BOB_EMAIL}"))
    assert CAROL_EMAIL in carol and "Carol" in carol and "carol-2" in carol
    assert BOB_EMAIL in bob and "Silver" in bob and ANN_EMAIL not in bob

    # SQL users read the personal columns in clear through views on the sandboxed connection.
    query = "SELECT id_value FROM identifiers_plain WHERE id_type = 'email' ORDER BY 1"
    emails = ok(run_cli("sql", "--db", str(consumed), query)).stdout
    assert BOB_EMAIL in emails and DAN_EMAIL in emails and ANN_EMAIL not in emails
    dan = profile(consumed, f"email:{DAN_EMAIL}")
    assert dan is not None and dan["traits"]["first_name"]["value"] == "Danforth"

    # Without the master key a keyed projection is refused with one line, not misread.
    refused = run_cli("profile", "--db", str(consumed), f"email:{BOB_EMAIL}", key=False)
    assert refused.returncode == 1, refused.stderr
    assert "master key" in refused.stderr
    assert "Traceback" not in refused.stderr
    as_of = run_cli("profile", "--db", str(consumed), "--as-of", "2026-03-02", f"email:{BOB_EMAIL}")
    assert as_of.returncode == 1 and "master key" in as_of.stderr, as_of.stderr

    # The delete destroyed the keys: an erased marker over each of her identifiers' keys.
    markers = [m for m in consume_all(bootstrap, f"{topic}-keys") if m.value == ERASED]
    assert len({m.key for m in markers}) == 3  # customer_id, email, phone

    # The byte scans: nothing of Ann anywhere, by SQL or by raw bytes.
    places = {
        "topic": topic_bytes(bootstrap, topic),
        "dead-letter topic": topic_bytes(bootstrap, dlt),
        "key topic": topic_bytes(bootstrap, f"{topic}-keys"),
        "archive": archive_bytes(archive),
        "consumed db": database_bytes(consumed),
        "rebuilt db": database_bytes(rebuilt),
        "archive db": database_bytes(from_archive),
    }
    assert {where: leaks(data) for where, data in places.items() if leaks(data)} == {}
    # The scans do see plaintext where there is some: Carol's foreign plaintext event.
    for where in ("topic", "archive", "consumed db", "rebuilt db", "archive db"):
        assert CAROL_EMAIL.encode() in places[where], where

    # A lost key store is not silent: sealed events become dead letters that say so.
    lost = f"test-crypto-lost-{uuid.uuid4().hex[:8]}"
    ok(run_cli("topics", "create", "--bootstrap-servers", bootstrap, "--topic", lost,
               "--dead-letter-topic", f"{lost}-dead", "--partitions", "1"))  # fmt: skip
    orphan = tmp_path / "orphan.duckdb"
    ok(run_cli("rebuild", "--db", str(orphan), "--bootstrap-servers", bootstrap,
               "--topic", lost, "--from-file", str(archive)))  # fmt: skip
    letters = sql_rows(orphan, "SELECT reason FROM dead_letters")
    assert letters and all("key store lost?" in r or "fails" in r for (r,) in letters), letters
    assert any("no key for" in r for (r,) in letters)
    # The plaintext event still folds.
    assert sql_rows(orphan, "SELECT count(*) FROM events WHERE event_id = 'carol-2'") == [(1,)]


@pytest.mark.timeout(300)
def test_a_delete_scrubs_a_plaintext_dead_letter_in_a_keyed_projection(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A keyed projection stores the person's identifiers sealed, but a foreign producer's
    plaintext event that became a dead letter holds them in clear: the erasure opens the
    values it takes (their keys still exist then) and finds them there, in the consumer's
    batches and in a rebuild's, and leaves no byte of them in either database file."""
    topic = f"test-crypto-dl-{uuid.uuid4().hex[:8]}"
    dlt = f"{topic}-dead"
    common = ("--bootstrap-servers", kafka_bootstrap, "--topic", topic)
    ok(run_cli("topics", "create", *common, "--dead-letter-topic", dlt, "--partitions", "1"))
    ok(run_cli("publish", str(write_events(tmp_path / "s.jsonl", ann_events())), *common))
    # Plaintext, reusing the event id of Ann's consent with other content: a dead letter.
    reused = [consent(3, "email", "opted_out", eid="ann-3", email=ANN_EMAIL)]
    ok(run_cli("publish", str(write_events(tmp_path / "p.jsonl", reused)), *common, key=False))
    consumed = tmp_path / "consumed.duckdb"
    consume = ("consume", "--db", str(consumed), *common, "--dead-letter-topic", dlt, "--once")
    ok(run_cli(*consume))
    # Nothing of hers in clear but the plaintext dead letter (her order id is stored as a
    # keyed hash: it was in clear in `orders`, where an erasure left it in freed pages).
    assert leaks(database_bytes(consumed)) == [ANN_EMAIL]
    delete = [ccpa(9, "delete", eid="ann-del", customer_id=ANN_CUSTOMER)]
    ok(run_cli("publish", str(write_events(tmp_path / "d.jsonl", delete)), *common))
    ok(run_cli(*consume))
    rebuilt = tmp_path / "rebuilt.duckdb"
    ok(run_cli("rebuild", "--db", str(rebuilt), *common))
    for db in (consumed, rebuilt):
        letters = sql_rows(db, "SELECT raw IS NULL, reason FROM dead_letters")
        assert [(gone, reason.endswith("by a ccpa delete]")) for gone, reason in letters] == [
            (True, True)
        ], (db, letters)
    # The rebuild scrubbed it before writing it. (The consumer's file may keep the plaintext
    # row's old bytes in freed pages until it is rebuilt: README "What it does not reach".)
    assert leaks(database_bytes(rebuilt)) == []
    assert set(leaks(database_bytes(consumed))) <= {ANN_EMAIL}


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path, db_path: Path) -> None:
    key_file = tmp_path / "master.key"
    key_file.write_text(MASTER_KEY + "\n")
    key_file.chmod(0o644)
    source = write_events(tmp_path / "log.jsonl", others_events())
    args = ("rebuild", "--db", str(db_path), "--from-file", str(source),
            "--key-file", str(key_file))  # fmt: skip
    refused = run_cli(*args, key=False)
    assert refused.returncode == 78, refused.stderr
    assert "chmod 600" in refused.stderr and "Traceback" not in refused.stderr
    assert MASTER_KEY not in refused.stderr + refused.stdout
    assert not db_path.exists()
