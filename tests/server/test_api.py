"""The HTTP API of `serve` against a real broker: the server folds, the API answers.

One server per module (starting one costs seconds); each test reads what the module's log
produced, and tests that add events or change settings restore what they change.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from projections import history, queries
from projections.readonly import open_readonly
from tests.profile_engine.builders import (
    bounce,
    ccpa,
    consent,
    identify,
    purchase,
    subscription,
    track,
)
from tests.support.folding import fold_into_db
from tests.support.serving import Server, new_topics, publish, serving

pytestmark = pytest.mark.kafka

MONTH = "2026-03"  # the builders' events start on 2026-03-01
LOG = [
    identify(0, {"first_name": "Ann", "last_name": "Lee"}, eid="s-01", email="Ann@Example.com",
             customer_id="C1", anonymous_id="anon-1"),
    consent(1, "email", "opted_in", eid="s-02", email="ann@example.com"),
    purchase(2, "o-1", 20.0, eid="s-03", customer_id="C1"),
    purchase(3, "o-2", 30.0, eid="s-04", customer_id="C1"),
    identify(4, {"first_name": "Bob"}, eid="s-05", email="bob@example.com", phone="+14155552671"),
    bounce(5, "email", "hard", eid="s-06", email="bob@example.com"),
    subscription(6, "news", "email", "subscribed", eid="s-07", email="ann@example.com"),
    track(7, "page_viewed", eid="s-08", anonymous_id="anon-2"),
    ccpa(8, "opt_out", eid="s-09", phone="+14155552671"),
    identify(9, {"first_name": "Annabel"}, eid="s-10", email="annabel@example.com",
             push_token="tok-9"),
    track(10, "page_viewed", eid="s-11", customer_id="C1"),
]  # fmt: skip
GARBAGE = [b"not avro at all", b"\xc3\x01broken"]


@pytest.fixture(scope="module")
def topics(kafka_admin: KafkaAdminClient) -> Iterator[tuple[str, str]]:
    with new_topics(kafka_admin, "api") as names:
        yield names


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    """The same log folded straight into a file: what the CLI would answer from it."""
    path = tmp_path_factory.mktemp("reference") / "reference.duckdb"
    fold_into_db(path, LOG)
    con = open_readonly(str(path))
    yield con
    con.close()


@pytest.fixture(scope="module")
def server(
    kafka_bootstrap: str, topics: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    topic, dead_letters = topics
    publish(kafka_bootstrap, topic, LOG)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for value in GARBAGE:
        producer.send(topic, key=b"garbage", value=value)
    producer.flush()
    producer.close()
    db = tmp_path_factory.mktemp("served") / "live.duckdb"
    with serving(db, kafka_bootstrap, topic, dead_letters) as running:
        running.wait_folded(len(LOG) + len(GARBAGE))
        yield running


def get_json(server: Server, path: str, **params: Any) -> Any:
    response = server.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


# -- counts and profiles: exactly what the CLI prints ------------------------------------------


def test_counts_are_the_json_of_the_counts_command(
    server: Server, reference: duckdb.DuckDBPyConnection
) -> None:
    for channel in (None, "email", "sms", "push"):
        params = {"month": MONTH} | ({"channel": channel} if channel else {})
        assert get_json(server, "/api/counts", **params) == queries.counts(
            reference, MONTH, channel
        )
    answer = get_json(server, "/api/counts", month=MONTH)
    assert (answer["total"], answer["mau"]) == (4, 2)  # anon-2 is its own profile


def test_every_answer_says_how_long_the_server_took_in_server_timing(server: Server) -> None:
    for path, status in (("/api/counts", 200), ("/api/profiles/email:nobody@example.com", 404)):
        started = time.perf_counter()
        response = server.get(path)
        elapsed_ms = (time.perf_counter() - started) * 1000
        assert response.status_code == status
        name, _, duration = response.headers["Server-Timing"].partition(";dur=")
        assert name == "app"
        assert 0 < float(duration) <= elapsed_ms  # the server's part of what the client waited


def test_counts_refuse_a_bad_month_with_a_json_error(server: Server) -> None:
    response = server.get("/api/counts", params={"month": "March"})
    assert response.status_code == 400
    assert response.json() == {
        "error": "month 'March' is not YYYY-MM (e.g. 2026-01)",
        "kind": "bad_input",
    }


# -- profiles over time: counts as of a day, the daily series, a profile as it was ----------------


def as_json(value: Any) -> Any:
    """What the API's JSON of ``value`` decodes to (the CLI's ``default=str``)."""
    return json.loads(json.dumps(value, default=str))


def test_counts_as_of_a_day_are_the_json_of_counts_as_of(
    server: Server, reference: duckdb.DuckDBPyConnection
) -> None:
    for day in ("2026-02-28", "2026-03-01", "2026-03-02"):
        for channel in (None, "sms"):
            params = {"as_of": day} | ({"channel": channel} if channel else {})
            expected = history.counts_as_of(reference, date.fromisoformat(day), channel)
            assert get_json(server, "/api/counts", **params) == as_json(expected)
    before = get_json(server, "/api/counts", as_of="2026-02-28")
    assert (before["total"], before["reachable_any"], before["mau"]) == (0, 0, 0)
    on_the_day = get_json(server, "/api/counts", as_of="2026-03-01")
    assert on_the_day == get_json(server, "/api/counts", month=MONTH)  # the log is all that day
    refused = server.get("/api/counts", params={"as_of": "2026-02-30"})
    assert refused.status_code == 400
    assert refused.json()["error"] == "as_of '2026-02-30' is not a real date"


def test_the_daily_series_is_the_json_and_csv_of_counts_daily(
    server: Server, reference: duckdb.DuckDBPyConnection
) -> None:
    first, last = date(2026, 2, 27), date(2026, 3, 3)
    for channel in (None, "email"):
        params = {"from": str(first), "to": str(last)} | ({"channel": channel} if channel else {})
        rows = history.daily_rows(reference, first, last, channel)
        answer = get_json(server, "/api/counts/daily", **params)
        assert answer["columns"] == history.daily_columns(channel)
        assert answer["days"] == as_json(rows)
        assert [d["total"] for d in answer["days"]] == [0, 0, 4, 4, 4]
        as_csv = server.get("/api/counts/daily", params=params | {"format": "csv"})
        assert as_csv.status_code == 200
        assert as_csv.headers["content-type"].startswith("text/csv")
        assert as_csv.text == history.daily_csv(rows, history.daily_columns(channel))
    backwards = server.get("/api/counts/daily", params={"from": "2026-03-02", "to": "2026-03-01"})
    assert backwards.status_code == 400
    assert "before" in backwards.json()["error"]


def test_a_profile_as_of_a_day_is_the_json_of_profile_as_of(
    server: Server, reference: duckdb.DuckDBPyConnection
) -> None:
    for key in ("email:ann@example.com", "customer_id:C1", "phone:+14155552671"):
        expected = history.profile_as_of(reference, key, date(2026, 3, 1))
        answer = get_json(server, f"/api/profiles/{key}", as_of="2026-03-01")
        assert answer == as_json(expected)
        assert answer["profile_id"] == get_json(server, f"/api/profiles/{key}")["profile_id"]
    not_yet = server.get("/api/profiles/email:ann@example.com", params={"as_of": "2026-02-28"})
    assert not_yet.status_code == 404
    assert not_yet.json()["error"] == "no profile found for email:ann@example.com as of 2026-02-28"


@pytest.mark.parametrize(
    "key",
    ["email:ann@example.com", "email:ANN@example.com", "customer_id:C1", "phone:+14155552671"],
)
def test_profile_is_the_json_of_the_profile_command(
    server: Server, reference: duckdb.DuckDBPyConnection, key: str
) -> None:
    assert get_json(server, f"/api/profiles/{key}") == queries.profile_view(reference, key)


def test_a_profile_that_resolves_to_nothing_is_a_404_with_a_json_error(server: Server) -> None:
    response = server.get("/api/profiles/email:nobody@example.com")
    assert response.status_code == 404
    assert response.json()["error"] == "no profile found for email:nobody@example.com"
    malformed = server.get("/api/profiles/nocolon")
    assert malformed.status_code == 400
    assert "TYPE:VALUE" in malformed.json()["error"]


def test_identifiers_carry_tags_eligibility_and_the_reason(server: Server) -> None:
    rows = get_json(server, "/api/profiles/phone:+14155552671/identifiers")
    by_value = {r["value"]: r for r in rows}
    email = by_value["bob@example.com"]
    assert (email["is_last_seen"], email["deliverable"], email["eligible"]) == (True, False, False)
    assert email["reason"] == "ccpa_opted_out"  # CCPA comes first, then the hard bounce
    phone = by_value["+14155552671"]
    assert (phone["channel"], phone["eligible"], phone["reason"]) == (
        "sms",
        False,
        "ccpa_opted_out",
    )


def test_timeline_pages_newest_first_and_filters_by_type(server: Server) -> None:
    everything = get_json(server, "/api/profiles/customer_id:C1/timeline", limit=2)
    assert everything["total"] == 6
    assert everything["types"] == {"consent": 1, "identify": 1, "subscription": 1, "track": 3}
    assert [e["event_id"] for e in everything["events"]] == ["s-11", "s-07"]
    older = get_json(server, "/api/profiles/customer_id:C1/timeline", limit=2, offset=2)
    assert [e["event_id"] for e in older["events"]] == ["s-04", "s-03"]
    tracks = get_json(server, "/api/profiles/customer_id:C1/timeline", type=["track"])
    assert [e["event_id"] for e in tracks["events"]] == ["s-11", "s-04", "s-03"]
    assert tracks["total"] == 3


@pytest.mark.parametrize("suffix", ["identifiers", "timeline"])
def test_a_key_ending_in_a_sub_resource_name_is_a_key(server: Server, suffix: str) -> None:
    """customer_id "C1/identifiers" (its "/" sent as %2F) is another key than C1's
    identifiers: no profile has it."""
    response = server.get(f"/api/profiles/customer_id:C1%2F{suffix}")
    assert response.status_code == 404, response.text
    assert response.json()["error"] == f"no profile found for customer_id:C1/{suffix}"
    assert server.get(f"/api/profiles/customer_id:C1/{suffix}").status_code == 200


# -- search -----------------------------------------------------------------------------------


def search(server: Server, q: str, **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = get_json(server, "/api/profiles", q=q, **params)
    return result


def names(result: dict[str, Any]) -> list[str | None]:
    return [p["first_name"] for p in result["profiles"]]


def test_search_matches_prefixes_of_identifiers_names_and_ids_in_any_case(server: Server) -> None:
    assert sorted(names(search(server, "ANN"))) == ["Ann", "Annabel"]  # email and name
    assert names(search(server, "lee")) == ["Ann"]  # last name
    assert names(search(server, "ann lee")) == ["Ann"]  # first and last name
    assert names(search(server, "c1")) == ["Ann"]  # customer id
    assert names(search(server, "415555")) == ["Bob"]  # a phone as typed, stored E.164
    assert names(search(server, "tok-")) == ["Annabel"]  # push token
    ann = search(server, "ann@")["profiles"][0]
    assert names(search(server, ann["profile_id"][:8])) == ["Ann"]
    assert search(server, "zzz") == {"profiles": [], "total": 0, "next_cursor": None}


def test_search_pages_with_a_cursor_through_every_profile_once(server: Server) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        page = search(server, "", limit=1, **({"cursor": cursor} if cursor else {}))
        assert page["total"] == 4
        seen += [p["profile_id"] for p in page["profiles"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 4
    last_seen = [p["last_seen"] for p in search(server, "", limit=10)["profiles"]]
    assert last_seen == sorted(last_seen, reverse=True)


def test_search_refuses_a_cursor_it_did_not_hand_out(server: Server) -> None:
    forged = base64.urlsafe_b64encode(b'["2026-11-11T12:00:00", "59a6517a"]').decode()
    for cursor in ("nonsense", forged):
        response = server.get("/api/profiles", params={"cursor": cursor})
        assert response.status_code == 400, response.text
        assert "cursor" in response.json()["error"]


def test_a_timeline_offset_past_any_number_is_refused_not_a_failure(server: Server) -> None:
    path = "/api/profiles/customer_id:C1/timeline"
    response = server.get(path, params={"offset": 2**63})
    assert response.status_code == 400, response.text
    assert str(server.db_path) not in response.text
    assert get_json(server, path, offset=2**31 - 1)["events"] == []


# -- SQL --------------------------------------------------------------------------------------


def post_sql(server: Server, query: str, **extra: Any) -> Any:
    with server.client() as client:
        return client.post("/api/sql", json={"query": query, **extra})


def test_sql_answers_rows_as_json_with_a_row_limit(server: Server) -> None:
    answer = post_sql(server, "SELECT channel, total FROM reachability_counts ORDER BY channel")
    assert answer.status_code == 200
    assert answer.json() == {
        "columns": ["channel", "total"],
        "rows": [["any", 4], ["email", 4], ["push", 4], ["sms", 4]],
        "truncated": False,
    }
    limited = post_sql(server, "SELECT * FROM range(10)", limit=3).json()
    assert (limited["rows"], limited["truncated"]) == ([[0], [1], [2]], True)


def test_a_long_query_on_the_sql_page_holds_up_no_other_request(server: Server) -> None:
    slow = (
        "SELECT count(*) FROM range(20000) AS a, range(20000) AS b"
        " WHERE (a.range * 7 + b.range) % 13 = 0"
    )
    finished: dict[str, float] = {}

    def run_on_the_page() -> None:
        with server.client() as client:
            page = client.post("/sql", data={"q": slow}, headers={"Accept": "text/html"})
        assert page.status_code == 200 and "30769231" in page.text.replace(",", "")
        finished["page"] = time.monotonic()

    started = time.monotonic()
    page = threading.Thread(target=run_on_the_page)
    page.start()
    time.sleep(0.3)  # the query is running
    assert server.get("/api/status").status_code == 200
    finished["status"] = time.monotonic()
    page.join(60)
    assert finished["page"] - started > 1.0, "the query was too quick to show anything"
    assert finished["status"] < finished["page"] - 0.5


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM profiles",
        "UPDATE settings SET value = 'x'",
        "CREATE TABLE t (a INT)",
        "INSERT INTO settings VALUES ('ccpa_blocks.sms', 'false')",
        "COPY profiles TO 'leak.csv'",
        "ATTACH 'other.duckdb' AS other",
        "SET threads = 1",
        "SELECT 1; DELETE FROM profiles",
        "SELECT * FROM read_text('/etc/hostname')",
    ],
)
def test_sql_never_writes_or_reaches_outside_the_projection(server: Server, statement: str) -> None:
    before = get_json(server, "/api/counts", month=MONTH)
    answer = post_sql(server, statement)
    assert answer.status_code == 400, answer.text
    assert answer.json()["kind"] == "bad_input"
    assert "\n" not in answer.json()["error"]
    assert get_json(server, "/api/counts", month=MONTH) == before
    assert not (server.db_path.parent / "leak.csv").exists()
    assert not (server.db_path.parent / "other.duckdb").exists()


# -- export -----------------------------------------------------------------------------------


def exported_rows(text: str, output_format: str) -> list[dict[str, Any]]:
    if output_format == "csv":
        return sorted(csv.DictReader(io.StringIO(text)), key=lambda r: r["profile_id"])
    return sorted((json.loads(line) for line in text.splitlines()), key=lambda r: r["profile_id"])


@pytest.mark.parametrize("output_format", ["csv", "json"])
def test_export_streams_what_the_export_command_writes(
    server: Server, reference: duckdb.DuckDBPyConnection, tmp_path: Path, output_format: str
) -> None:
    out = tmp_path / f"reference.{output_format}"
    queries.export_profiles(reference, str(out), output_format, "email_reachable OR sms_reachable")
    response = server.get(
        "/api/export", params={"format": output_format, "where": "email_reachable OR sms_reachable"}
    )
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("attachment")
    expected = exported_rows(out.read_text(), output_format)
    assert exported_rows(response.text, output_format) == expected
    assert len(expected) == 2  # Ann (opted in), Annabel (implicit email consent); not Bob (CCPA)


def test_export_of_a_search_holds_only_its_profiles(server: Server) -> None:
    response = server.get("/api/export", params={"format": "json", "q": "ann"})
    rows = exported_rows(response.text, "json")
    assert sorted(r["email"] for r in rows) == ["ann@example.com", "annabel@example.com"]


@pytest.mark.parametrize("output_format", ["csv", "json"])
def test_an_export_of_no_profile_is_empty_not_an_error(server: Server, output_format: str) -> None:
    response = server.get("/api/export", params={"format": output_format, "q": "zzzz-nobody"})
    assert response.status_code == 200, response.text
    assert exported_rows(response.text, output_format) == []


def test_export_refuses_a_bad_condition_before_streaming(server: Server) -> None:
    response = server.get("/api/export", params={"format": "csv", "where": "no_such_column"})
    assert response.status_code == 400
    assert response.json()["kind"] == "bad_input"


# -- settings: the one write ------------------------------------------------------------------


def test_settings_change_at_once_and_reset(server: Server) -> None:
    with server.client() as client:
        before = client.get("/api/counts", params={"month": MONTH, "channel": "push"}).json()
        changed = client.put("/api/settings/implicit_consent.push", json={"value": False})
        assert changed.status_code == 200
        assert changed.json()["value"] is False and changed.json()["overridden"] is True
        after = client.get("/api/counts", params={"month": MONTH, "channel": "push"}).json()
        assert after["channels"]["push"]["reachable"] == before["channels"]["push"]["reachable"] - 1
        reset = client.put("/api/settings/implicit_consent.push", json={"reset": True})
        assert reset.json()["overridden"] is False
        restored = client.get("/api/counts", params={"month": MONTH, "channel": "push"}).json()
        assert restored == before
        listed = {s["key"]: s for s in client.get("/api/settings").json()}
        assert listed["implicit_consent.push"]["value"] is True


def test_a_setting_of_the_wrong_type_or_name_is_refused(server: Server) -> None:
    with server.client() as client:
        wrong = client.put("/api/settings/implicit_consent.sms", json={"value": "yes"})
        assert wrong.status_code == 400
        assert wrong.json()["error"] == (
            'implicit_consent.sms: "yes" is not a boolean (true or false)'
        )
        assert client.put("/api/settings/nope", json={"value": True}).status_code == 404
        assert client.delete("/api/settings/implicit_consent.sms").status_code == 405
        both = client.put("/api/settings/implicit_consent.sms", json={"value": True, "reset": True})
        assert both.status_code == 400
        assert both.json()["error"] == 'give either "value" or "reset": true, not both'
        settings = {row["key"]: row for row in client.get("/api/settings").json()}
        assert settings["implicit_consent.sms"]["overridden"] is False


# -- status, metrics, the consumer group, live updates ----------------------------------------


def test_status_gives_offsets_lag_counters_and_the_last_batch(server: Server) -> None:
    status = server.status()
    assert status["state"] == "following"
    assert status["broker"]["reachable"] is True
    total = sum(p["next_offset"] for p in status["partitions"])
    assert total == sum(p["log_end_offset"] for p in status["partitions"])
    assert [p["lag"] for p in status["partitions"]] == [0] * 6 and status["lag"] == 0
    counters = status["since_start"]
    assert counters["consumed"] >= len(LOG) + len(GARBAGE)
    assert counters["consumed"] == (
        counters["folded"] + counters["duplicates"] + counters["dead_lettered"]
    )
    assert counters["dead_lettered"] >= len(GARBAGE)
    assert status["last_batch"]["at"] is not None and status["last_batch"]["events"] > 0
    assert status["group_id"] == server.group_id


def test_metrics_are_the_status_in_prometheus_text_format(server: Server) -> None:
    status = server.status()
    response = server.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    lag = {s.labels["partition"]: s.value for s in families["profile_engine_consumer_lag"].samples}
    assert lag == {str(p["partition"]): 0.0 for p in status["partitions"]}
    offsets = families["profile_engine_projection_next_offset"].samples
    assert sum(s.value for s in offsets) == sum(p["next_offset"] for p in status["partitions"])
    dead = families["profile_engine_events_dead_lettered"].samples[0]
    assert dead.value >= len(GARBAGE)
    assert families["profile_engine_broker_up"].samples[0].value == 1.0


def test_the_consumer_group_holds_the_projection_offsets(
    server: Server, kafka_admin: KafkaAdminClient, topics: tuple[str, str]
) -> None:
    status = server.status()
    expected = {p["partition"]: p["next_offset"] for p in status["partitions"]}
    deadline = time.monotonic() + 60
    while True:
        committed = kafka_admin.list_group_offsets(server.group_id).get(server.group_id, {})
        found = {tp.partition: o.offset for tp, o in committed.items() if tp.topic == topics[0]}
        if found == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert found == expected


def test_events_published_while_it_runs_show_up_in_counts(
    server: Server, kafka_bootstrap: str, topics: tuple[str, str]
) -> None:
    before = get_json(server, "/api/counts", month=MONTH)["total"]
    publish(kafka_bootstrap, topics[0], [identify(20, eid="s-20", email="new@example.com")])
    published = time.monotonic()
    while get_json(server, "/api/counts", month=MONTH)["total"] == before:
        assert time.monotonic() - published < 60, "the new profile never appeared"
        time.sleep(0.05)
    # The issue asks for 2 s; timing is printed, not asserted, on this shared machine.
    print(f"new event visible in /api/counts after {time.monotonic() - published:.2f} s")
    assert get_json(server, "/api/counts", month=MONTH)["total"] == before + 1


def test_the_openapi_description_lists_the_api(server: Server) -> None:
    paths = get_json(server, "/openapi.json")["paths"]
    for path in ("/api/counts", "/api/profiles", "/api/profiles/{key}", "/api/sql",
                 "/api/export", "/api/settings", "/api/settings/{key}", "/api/status",
                 "/metrics"):  # fmt: skip
        assert path in paths


def test_head_is_answered_as_get_without_a_body(server: Server) -> None:
    """Uptime checkers ask HEAD."""
    with server.client() as client:
        for path in ("/", "/api/counts", "/api/status"):
            answer = client.head(path)
            assert answer.status_code == 200, path
            assert answer.content == b""
            assert int(answer.headers["content-length"]) > 0


def test_the_default_chart_range_follows_the_log_and_a_refused_one_keeps_the_dates_typed(
    server: Server,
) -> None:
    """The overview's chart panel: without a range asked for, the page's script redraws the
    default one (ending at the newest event) after each batch instead of pinning the days it
    first showed; a range it refuses is shown again in the form, to be corrected."""
    html = {"Accept": "text/html"}
    default = server.get("/", params={"fragment": "chart"}, headers=html).text
    assert 'data-follows="true"' in default
    asked = server.get(
        "/", params={"fragment": "chart", "from": "2026-03-01", "to": "2026-03-05"}, headers=html
    ).text
    assert 'data-follows="false"' in asked
    refused = server.get(
        "/", params={"fragment": "chart", "from": "2000-01-01", "to": "2026-03-05"}, headers=html
    ).text
    assert "at most" in refused
    assert 'value="2000-01-01"' in refused and 'value="2026-03-05"' in refused


def test_the_settings_page_refuses_a_bad_value_or_name_and_changes_nothing(
    server: Server,
) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"}
    with server.client() as client:
        before = client.get("/api/settings").json()
        negative = client.post(
            "/settings/bounce.soft_bounce_limit", content="value=-5", headers=form
        )
        assert negative.status_code == 400
        assert "is not a whole number from 0" in negative.text
        unknown = client.post("/settings/nope", content="value=1", headers=form)
        assert unknown.status_code == 400 and "unknown setting" in unknown.text
        assert client.get("/api/settings").json() == before
