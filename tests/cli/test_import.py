"""`profile-engine attributes`, `import` and `imports`, against a real broker where it matters."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from profile_engine.cli.main import cli
from profile_engine.events import Identify, ProfileEvent

TS = "2026-01-01T00:00:00Z"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def attrs(tmp_path: Path) -> Path:
    path = tmp_path / "registry" / "attributes.json"
    for name, type_name in [("vip", "boolean"), ("points", "long"), ("note", "string")]:
        result = invoke("attributes", "add", name, type_name, "--attributes", str(path))
        assert result.exit_code == 0, result.output
    return path


def import_args(data: Path, attrs: Path, bootstrap: str, topic: str, *extra: str) -> list[str]:
    return [
        "import", str(data), "--id-column", "email", "--attributes", str(attrs),
        "--bootstrap-servers", bootstrap, "--topic", topic, *extra,
    ]  # fmt: skip


def write_csv(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> list[bytes]:
    """Every message of the topic, from the beginning (waits for at least `expected`)."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        messages: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                messages.extend(m.value for m in batch)
            done = all(consumer.position(tp) >= end[tp] for tp in partitions)
            if done and len(messages) >= expected:
                break
        return messages
    finally:
        consumer.close()


def decode(messages: list[bytes]) -> list[ProfileEvent]:
    from consumers.codec import AvroCodec

    codec = AvroCodec()
    return [codec.decode(m) for m in messages]


# -- attributes ------------------------------------------------------------------------------


def test_attributes_add_then_list_shows_standard_and_custom(attrs: Path) -> None:
    result = invoke("attributes", "list", "--attributes", str(attrs), "--format", "json")
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["first_name"]["kind"] == "standard"
    assert rows["birthday_day"]["range"] == "1..31"
    assert (rows["vip"]["type"], rows["vip"]["kind"], rows["vip"]["sql_type"]) == (
        "boolean",
        "custom",
        "BOOLEAN",
    )
    assert json.loads(attrs.read_text())["version"] == 3


def test_attributes_add_refuses_a_type_change_in_one_line(attrs: Path) -> None:
    result = CliRunner().invoke(
        cli, ["attributes", "add", "vip", "long", "--attributes", str(attrs)]
    )
    assert result.exit_code == 1
    assert "already registered as boolean" in result.output
    assert "Traceback" not in result.output


def test_attributes_add_with_db_refreshes_the_typed_view(attrs: Path, db_path: Path) -> None:
    import duckdb

    result = invoke(
        "attributes", "add", "shoe_size", "long", "--attributes", str(attrs), "--db", str(db_path)
    )
    assert result.exit_code == 0, result.output
    con = duckdb.connect(str(db_path), read_only=True)
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'profile_traits'"
        ).fetchall()
    )
    assert types["shoe_size"] == "BIGINT"
    assert types["vip"] == "BOOLEAN"


# -- import: refused files send nothing -----------------------------------------------------


@pytest.mark.kafka
def test_unregistered_column_refuses_the_file_and_sends_nothing(
    attrs: Path, tmp_path: Path, kafka_bootstrap: str, fresh_topic: str
) -> None:
    data = write_csv(
        tmp_path / "people.csv",
        "email,first_name,shoe_size\na@example.com,Ada,38\nb@example.com,Bob,44\n",
    )
    args = import_args(data, attrs, kafka_bootstrap, fresh_topic, "--timestamp", TS)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "unregistered attribute(s) 'shoe_size'" in result.output
    assert "nothing was imported" in result.output
    assert consume_all(kafka_bootstrap, fresh_topic, expected=0, timeout_s=3) == []
    assert not (tmp_path / "people.rejects.csv").exists()
    history = invoke("imports", "--attributes", str(attrs), "--format", "json")
    (entry,) = json.loads(history.output)
    assert entry["status"] == "refused"
    assert entry["accepted"] == 0


# -- import: a mixed file -------------------------------------------------------------------

MIXED = (
    "Email,first_name,VIP,points,note\r\n"
    'ada@example.com,Ada,TRUE,10,"Height: 6\'1"""\r\n'
    "bob@example.com,Bob,y,20,plain\r\n"
    'cy@example.com,Cy,false,not-a-number,"with, comma"\r\n'
    "null,Nobody,true,1,junk id\r\n"
    'dee@example.com,,,,"two\r\nlines"\r\n'
    "eve@example.com,Eve,true,5\r\n"
)


@pytest.mark.kafka
def test_mixed_file_publishes_valid_rows_and_keeps_the_invalid_ones(
    attrs: Path, tmp_path: Path, kafka_bootstrap: str, fresh_topic: str
) -> None:
    data = write_csv(tmp_path / "mixed.csv", MIXED)
    args = import_args(data, attrs, kafka_bootstrap, fresh_topic, "--timestamp", TS)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1  # something was rejected
    assert "2 accepted, 4 rejected" in result.stdout
    assert "line 3: column vip: boolean must be true or false" in result.stderr
    assert "line 4: column points: long must be an integer" in result.stderr
    assert "line 5: column Email: 'null' is a placeholder" in result.stderr
    assert "line 8: expected 5 columns, got 4" in result.stderr

    events = decode(consume_all(kafka_bootstrap, fresh_topic, expected=2))
    by_email = {e.identifiers[0].value: e for e in events}
    assert set(by_email) == {"ada@example.com", "dee@example.com"}
    ada = by_email["ada@example.com"]
    assert isinstance(ada, Identify)
    assert ada.traits == {"first_name": "Ada", "vip": True, "points": 10, "note": "Height: 6'1\""}
    dee = by_email["dee@example.com"]
    assert isinstance(dee, Identify) and dee.traits == {"note": "two\r\nlines"}

    with (tmp_path / "mixed.rejects.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["Email", "first_name", "VIP", "points", "note", "reason"]
    assert [r[0] for r in rows[1:]] == [
        "bob@example.com",
        "cy@example.com",
        "null",
        "eve@example.com",
    ]
    assert rows[2][4] == "with, comma"  # original cells kept verbatim
    assert rows[4][:5] == ["eve@example.com", "Eve", "true", "5", ""]
    assert rows[4][5] == "line 8: expected 5 columns, got 4"

    history = json.loads(invoke("imports", "--attributes", str(attrs), "--format", "json").output)
    assert [(h["status"], h["accepted"], h["rejected"]) for h in history] == [("rejects", 2, 4)]


@pytest.mark.kafka
def test_a_quote_never_closed_keeps_the_lines_it_took_in_the_rejects_file(
    attrs: Path, tmp_path: Path, kafka_bootstrap: str, fresh_topic: str
) -> None:
    """The reader cannot tell where the record should have ended: what it read goes to the
    rejects file whole (it was a reason alone, and two good-looking rows were lost)."""
    data = tmp_path / "unterm.csv"
    data.write_text('email,note\ng3@example.com,"unterminated\nh@example.com,x\ni@example.com,y\n')
    result = CliRunner().invoke(cli, import_args(data, attrs, kafka_bootstrap, fresh_topic))
    assert result.exit_code == 1
    assert "0 accepted, 1 rejected" in result.stdout
    with (tmp_path / "unterm.rejects.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[1] == [
        'g3@example.com,"unterminated\nh@example.com,x\ni@example.com,y',
        "",
        "line 2: malformed CSV: unexpected end of data; lines 2-4 kept as read in the first column",
    ]


@pytest.mark.kafka
def test_re_importing_a_file_sends_the_same_event_ids(
    attrs: Path, tmp_path: Path, kafka_bootstrap: str, fresh_topic: str
) -> None:
    data = write_csv(tmp_path / "twice.csv", "email,points\na@example.com,1\nb@example.com,2\n")
    args = import_args(data, attrs, kafka_bootstrap, fresh_topic)
    assert invoke(*args).exit_code == 0
    assert invoke(*args).exit_code == 0
    events = sorted(
        decode(consume_all(kafka_bootstrap, fresh_topic, expected=4)), key=lambda e: e.event_id
    )
    ids = [e.event_id for e in events]
    assert len(ids) == 4 and ids[0] == ids[1] and ids[2] == ids[3] and ids[1] != ids[2]
    # The same events, time included (the file's), so the fold counts the second as
    # duplicates rather than ids reused with other content.
    assert events[0] == events[1] and events[2] == events[3]
    assert not (tmp_path / "twice.rejects.csv").exists()
    at_another_time = [*args, "--timestamp", "2026-01-02T00:00:00Z"]
    assert invoke(*at_another_time).exit_code == 0
    later = decode(consume_all(kafka_bootstrap, fresh_topic, expected=6))
    assert len({e.event_id for e in later}) == 4  # new events, not ids reused


@pytest.mark.kafka
def test_imported_rows_land_typed_in_the_projection(
    attrs: Path, tmp_path: Path, kafka_bootstrap: str, fresh_topic: str, db_path: Path
) -> None:
    import duckdb

    from profile_engine.attributes import AttributeRegistry
    from projections.typed_traits import refresh_typed_traits_view
    from tests.support.folding import fold_into_db

    data = write_csv(tmp_path / "mixed.csv", MIXED)
    args = import_args(data, attrs, kafka_bootstrap, fresh_topic, "--timestamp", TS)
    CliRunner().invoke(cli, args)
    events = decode(consume_all(kafka_bootstrap, fresh_topic, expected=2))
    fold_into_db(db_path, events)
    con = duckdb.connect(str(db_path))
    refresh_typed_traits_view(con, AttributeRegistry.load(attrs))
    rows = con.execute(
        "SELECT i.id_value, t.first_name, t.vip, t.points, t.note FROM profile_traits t"
        " JOIN identifiers i USING (profile_id) ORDER BY i.id_value"
    ).fetchall()
    assert rows == [
        ("ada@example.com", "Ada", True, 10, "Height: 6'1\""),
        ("dee@example.com", None, None, None, "two\r\nlines"),
    ]
    assert con.execute("SELECT sum(points) FROM profile_traits WHERE vip").fetchone() == (10,)


# -- import: argument errors ---------------------------------------------------------------


def test_bad_timestamp_is_a_one_line_error(attrs: Path, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "a.csv", "email\na@example.com\n")
    result = CliRunner().invoke(
        cli,
        ["import", str(data), "--id-column", "email", "--attributes", str(attrs),
         "--timestamp", "2026-01-01T00:00:00"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "--timestamp must carry a UTC offset" in result.output


def test_non_utf8_file_is_refused(attrs: Path, tmp_path: Path) -> None:
    data = tmp_path / "latin1.csv"
    data.write_bytes("email,first_name\na@example.com,Zo\xe9\n".encode("latin-1"))
    result = CliRunner().invoke(
        cli, ["import", str(data), "--id-column", "email", "--attributes", str(attrs)]
    )
    assert result.exit_code == 1
    assert "not UTF-8" in result.output


def test_imports_lists_nothing_before_the_first_import(tmp_path: Path) -> None:
    result = invoke("imports", "--attributes", str(tmp_path / "a.json"), "--format", "csv")
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "file,started_at,status,accepted,rejected,seconds,id_type,topic,rejects_file,message"
    ]
    table = invoke("imports", "--attributes", str(tmp_path / "a.json"))
    assert table.exit_code == 0 and table.output.startswith("No imports yet (")


@pytest.mark.kafka
def test_a_missing_topic_fails_fast_and_is_recorded(
    attrs: Path, tmp_path: Path, kafka_bootstrap: str
) -> None:
    data = write_csv(tmp_path / "a.csv", "email,points\na@example.com,1\n")
    result = CliRunner().invoke(cli, import_args(data, attrs, kafka_bootstrap, "no-such-topic"))
    assert result.exit_code == 78  # needs an operator: create the topic
    assert "topic no-such-topic does not exist" in result.output
    history = json.loads(invoke("imports", "--attributes", str(attrs), "--format", "json").output)
    assert [h["status"] for h in history] == ["failed"]


# -- import: faults are told, nothing is lost -----------------------------------------------------


@pytest.mark.kafka
def test_a_row_larger_than_the_topic_accepts_is_rejected_and_the_rest_go(
    attrs: Path, tmp_path: Path, kafka_bootstrap: str, small_messages_topic: str
) -> None:
    data = write_csv(
        tmp_path / "notes.csv",
        f"email,note\na@example.com,short\nb@example.com,{'x' * 30_000}\nc@example.com,fine\n",
    )
    result = CliRunner().invoke(
        cli, import_args(data, attrs, kafka_bootstrap, small_messages_topic, "--timestamp", TS)
    )
    assert result.exit_code == 1
    assert "line 3: the row's message takes 30," in result.output
    assert "more than the topic accepts (max.message.bytes 20,000)" in result.output
    events = decode(consume_all(kafka_bootstrap, small_messages_topic, expected=2))
    assert sorted(e.identifiers[0].value for e in events) == ["a@example.com", "c@example.com"]
    with (tmp_path / "notes.rejects.csv").open(newline="", encoding="utf-8") as handle:
        (rejected,) = list(csv.DictReader(handle))
    assert rejected["email"] == "b@example.com"


def emails_in(bootstrap: str) -> set[str]:
    return {e.identifiers[0].value for e in decode(consume_all(bootstrap, "profile-events", 0))}


@pytest.mark.kafka
def test_a_broker_killed_mid_import_ends_it_in_bounded_time_and_loses_no_row(
    attrs: Path, tmp_path: Path
) -> None:
    from tests.support.kafka import end_offsets, kill_broker, private_broker

    rows = 100_000
    lines = ["email,points"] + [f"user{n}@example.com,{n}" for n in range(rows)]
    data = write_csv(tmp_path / "big.csv", "\n".join(lines) + "\n")
    with private_broker(tmp_path / "kafka") as broker:
        bootstrap = broker.bootstrap_servers
        assert invoke("topics", "create", "--bootstrap-servers", bootstrap).exit_code == 0
        command = [
            sys.executable, "-m", "profile_engine.cli.main",
            *import_args(data, attrs, bootstrap, "profile-events", "--timestamp", TS),
            "--delivery-timeout", "5",
        ]  # fmt: skip
        importer = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 300
            while end_offsets(bootstrap, "profile-events") == 0:
                assert importer.poll() is None, importer.communicate()
                assert time.monotonic() < deadline, "the import sent nothing"
                time.sleep(0.2)
            kill_broker(broker)
            killed_at = time.monotonic()
            _, stderr = importer.communicate(timeout=240)
        finally:
            importer.kill()
        assert time.monotonic() - killed_at < 120  # bounded: the timeout, plus closing up

        assert importer.returncode == 75, stderr
        (error,) = [line for line in stderr.splitlines() if line.startswith("Error:")]
        assert f"no confirmation from Kafka at {bootstrap} for 5 s" in error
        assert f"importing {data} again is safe" in error
        confirmed = int(error.split(" line(s) confirmed")[0].rsplit(" ", 1)[1].replace(",", ""))
        listing = tmp_path / "big.unconfirmed.txt"
        unconfirmed = {int(n) for n in listing.read_text().split()}
        history = json.loads(
            invoke("imports", "--attributes", str(attrs), "--format", "json").output
        )
        assert history[-1]["status"] == "failed" and "confirmed" in history[-1]["message"]

        broker.start(timeout=180, stop_with_owner=True)
        logged = {
            e.identifiers[0].value for e in decode(consume_all(bootstrap, "profile-events", 0))
        }
        # Line n + 2 holds user n (line 1 is the header).
        not_listed = {f"user{line - 2}@example.com" for line in range(2, rows + 2)} - {
            f"user{line - 2}@example.com" for line in unconfirmed
        }
        assert not_listed <= logged and len(not_listed) == confirmed

        again = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr
        logged = {
            e.identifiers[0].value for e in decode(consume_all(bootstrap, "profile-events", 0))
        }
        assert logged == {f"user{n}@example.com" for n in range(rows)}
        assert not listing.exists()
