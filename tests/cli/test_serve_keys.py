"""`serve` with a master key, as a user runs it: sealed events folded live, reads in clear,
an erasure that destroys the person's data keys, and the query commands through the server
printing what they print from the stopped file (README "Erasure that reaches the log")."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumers.key_store import SealingConfig, key_topic_for
from consumers.producer import EventProducer
from consumers.topics import create_topics
from profile_engine.crypto import ERASED
from profile_engine.events import ProfileEvent
from projections.sealed import KEYING_META, PLAIN, check_keying
from projections.store import ProjectionStore
from tests.profile_engine.builders import ccpa, consent, identify
from tests.support.kafka import consume_all
from tests.support.sealed_cli import MASTER, RING, cli_env, key_file, run_cli
from tests.support.serving import serving

pytestmark = pytest.mark.kafka

ANN_EMAIL = "ann.served-sealed@example.com"
BOB_EMAIL = "bob.served-sealed@example.com"
EVENTS = [
    identify(0, {"first_name": "Annwyl", "last_name": "Gold"}, eid="sk-1", email=ANN_EMAIL,
             customer_id="SK-ANN"),
    consent(1, "email", "opted_in", eid="sk-2", email=ANN_EMAIL),
    identify(2, {"first_name": "Bobrik"}, eid="sk-3", email=BOB_EMAIL, customer_id="SK-BOB"),
]  # fmt: skip
DELETE = [ccpa(3, "delete", eid="sk-4", customer_id="SK-ANN")]


@pytest.fixture
def sealed_topic(kafka_bootstrap: str, kafka_admin: Any) -> Iterator[tuple[str, str]]:
    """An events topic, its dead-letter topic and its key topic, as `topics create` makes
    them with a master key; deleted afterwards."""
    topic = f"test-serve-keys-{uuid.uuid4().hex[:8]}"
    dlt = f"{topic}-dead"
    create_topics(kafka_bootstrap, topic, dlt, partitions=3, with_key_topic=True)
    try:
        yield topic, dlt
    finally:
        kafka_admin.delete_topics([topic, dlt, key_topic_for(topic)], raise_errors=False)


def publish_sealed(bootstrap: str, topic: str, events: list[ProfileEvent]) -> None:
    """As `publish` with the master key: data keys to the key topic first, events sealed."""
    sealing = SealingConfig(MASTER, bootstrap, key_topic_for(topic))
    with EventProducer(bootstrap, topic, sealing=sealing) as producer:
        for event in events:
            producer.send(event)
        producer.flush()


QUERIES = [
    ("profile", f"email:{BOB_EMAIL}", "--format", "json"),
    ("profile", f"email:{ANN_EMAIL}"),
    ("sql", "SELECT id_type, id_value FROM identifiers_plain ORDER BY ALL", "--format", "csv"),
    ("profile", f"email:{BOB_EMAIL}", "--as-of", "2026-03-02"),  # refused alike
]


def ask_all(db: Path, out: Path) -> list[Any]:
    answers: list[Any] = []
    for command, *rest in QUERIES:
        result = run_cli(command, "--db", str(db), *rest)
        answers.append((result.returncode, result.stdout, result.stderr))
    result = run_cli("export", "--db", str(db), "--format", "json", "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    answers.append(sorted(lines))
    return answers


@pytest.mark.timeout(240)
def test_serve_with_a_master_key_reads_in_clear_and_erasure_destroys_the_keys(
    kafka_bootstrap: str, sealed_topic: tuple[str, str], db_path: Path, tmp_path: Path
) -> None:
    topic, dlt = sealed_topic
    publish_sealed(kafka_bootstrap, topic, EVENTS)
    extra = ["--key-file", str(key_file(tmp_path))]
    with serving(db_path, kafka_bootstrap, topic, dlt, extra=extra) as server:
        server.wait_folded(len(EVENTS))
        ann = server.get(f"/api/profiles/email:{ANN_EMAIL}")
        assert ann.status_code == 200, ann.text
        document = ann.json()
        assert document["traits"]["first_name"]["value"] == "Annwyl"
        assert {i["value"] for i in document["identifiers"]} == {ANN_EMAIL, "SK-ANN"}
        # Search: the exact identifier (by its blind index), opened in the summaries.
        found = server.get("/api/profiles", params={"q": ANN_EMAIL.upper()}).json()
        assert [p["first_name"] for p in found["profiles"]] == ["Annwyl"]
        assert found["profiles"][0]["identifiers"]["email"] == ANN_EMAIL
        pid = found["profiles"][0]["profile_id"]
        assert server.get("/api/profiles", params={"q": pid[:8]}).json()["total"] == 1
        page = server.get(f"/profiles/email:{ANN_EMAIL}")
        assert page.status_code == 200 and ANN_EMAIL in page.text and "Annwyl" in page.text
        sql = server.client().post(
            "/api/sql", json={"query": "SELECT count(*) FROM traits_plain WHERE value = 'Bobrik'"}
        )
        assert sql.json()["rows"] == [[1]], sql.text

        publish_sealed(kafka_bootstrap, topic, DELETE)
        server.wait_folded(len(EVENTS) + len(DELETE))
        assert server.get(f"/api/profiles/email:{ANN_EMAIL}").status_code == 404
        live = ask_all(db_path, tmp_path / "live.jsonl")
    stopped = ask_all(db_path, tmp_path / "stopped.jsonl")
    assert live == stopped
    assert [answer[0] for answer in live[:4]] == [0, 1, 0, 1]
    assert "master key" in live[3][2]
    assert json.loads(live[0][1])["traits"]["first_name"]["value"] == "Bobrik"
    assert ANN_EMAIL not in live[2][1] and BOB_EMAIL in live[2][1]
    assert BOB_EMAIL in live[4][0] and len(live[4]) == 1

    # The erasure destroyed Ann's data keys on the key topic before its batch committed.
    erased = {m.key.decode() for m in consume_all(kafka_bootstrap, key_topic_for(topic))
              if m.value == ERASED}  # fmt: skip
    blinds = {uuid.UUID(RING.identifier_key(t, v)).hex for t, v in
              [("email", ANN_EMAIL), ("customer_id", "SK-ANN")]}  # fmt: skip
    assert {ref[:32] for ref in erased} == blinds


def serve_refused(db_path: Path, key: Path | None) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "profile_engine.cli.main", "serve", "--db", str(db_path),
        "--port", "0", "--bootstrap-servers", "127.0.0.1:9", "--topic", "never-read",
        *(["--key-file", str(key)] if key else []),
    ]  # fmt: skip
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=cli_env(key=False)
    )


def test_a_keyed_projection_is_not_served_without_its_key_nor_a_plain_one_with_a_key(
    tmp_path: Path,
) -> None:
    keyed, plain = tmp_path / "keyed.duckdb", tmp_path / "plain.duckdb"
    with ProjectionStore(keyed) as store:
        check_keying(store, RING)
    with ProjectionStore(plain) as store:
        store.set_meta(KEYING_META, PLAIN)

    refused = serve_refused(keyed, None)
    assert refused.returncode == 78, refused.stderr
    assert refused.stderr.count("\n") == 1 and "folded with a master key" in refused.stderr
    refused = serve_refused(plain, key_file(tmp_path))
    assert refused.returncode == 78, refused.stderr
    assert refused.stderr.count("\n") == 1 and "without a master key" in refused.stderr
    assert not Path(f"{keyed}.server.json").exists()
