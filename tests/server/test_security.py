"""Who may ask: a token on every request when one is set, loopback host names without one."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kafka import KafkaAdminClient

from tests.profile_engine.builders import identify
from tests.support.serving import Server, new_topics, publish, serving

pytestmark = pytest.mark.kafka

TOKEN = "s3cret-token-for-tests"
HTML = {"Accept": "text/html"}


@pytest.fixture(scope="module")
def guarded(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server with a token for the module (the tests change nothing it holds)."""
    db = tmp_path_factory.mktemp("guarded") / "live.duckdb"
    with new_topics(kafka_admin, "security") as (topic, dead_letters):
        publish(kafka_bootstrap, topic, [identify(0, eid="t-1", email="ann@example.com")])
        with serving(db, kafka_bootstrap, topic, dead_letters, token=TOKEN) as server:
            server.wait_folded(1)
            yield server


def test_every_api_request_needs_the_token(guarded: Server) -> None:
    with httpx.Client(base_url=guarded.url, timeout=60) as anonymous:
        for path in ("/api/counts", "/api/status", "/api/profiles", "/metrics", "/openapi.json"):
            refused = anonymous.get(path)
            assert refused.status_code == 401, path
            assert refused.json()["kind"] == "bad_input"
            assert refused.headers["www-authenticate"].startswith("Bearer")
        wrong = anonymous.get("/api/counts", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert anonymous.post("/api/sql", json={"query": "SELECT 1"}).status_code == 401
    assert guarded.get("/api/counts").status_code == 200


def test_settings_cannot_change_without_the_token(guarded: Server) -> None:
    with httpx.Client(base_url=guarded.url, timeout=60) as anonymous:
        refused = anonymous.put("/api/settings/implicit_consent.sms", json={"value": True})
        assert refused.status_code == 401
    settings = {s["key"]: s for s in guarded.get("/api/settings").json()}
    assert settings["implicit_consent.sms"]["overridden"] is False


def test_pages_send_a_browser_to_the_login_page_and_its_cookie_lets_it_in(
    guarded: Server,
) -> None:
    with httpx.Client(base_url=guarded.url, timeout=60) as browser:
        first = browser.get("/profiles?q=ann", headers=HTML)
        assert first.status_code == 303
        assert first.headers["location"] == "/login?next=/profiles%3Fq%3Dann"
        assert browser.get("/static/app.css").status_code == 200  # the login page needs it
        login = browser.get("/login", headers=HTML)
        assert login.status_code == 200
        assert "test-events" not in login.text and "data-live-status" not in login.text
        failed = browser.post("/login", data={"token": "nope", "next": "/profiles"})
        assert failed.status_code == 401 and "not valid" in failed.text
        assert browser.get("/", headers=HTML).status_code == 303
        signed_in = browser.post("/login", data={"token": TOKEN, "next": "/profiles?q=ann"})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/profiles?q=ann"
        cookie = signed_in.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert browser.get("/profiles?q=ann", headers=HTML).status_code == 200
        assert browser.get("/api/counts").status_code == 200  # the page's own requests


def test_the_login_page_only_redirects_within_the_server(guarded: Server) -> None:
    with httpx.Client(base_url=guarded.url, timeout=60) as browser:
        answer = browser.post("/login", data={"token": TOKEN, "next": "//evil.example/x"})
        assert answer.headers["location"] == "/"


def test_the_cli_uses_the_recorded_token_which_only_its_user_can_read(guarded: Server) -> None:
    record = Path(str(guarded.db_path) + ".server.json")
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    result = subprocess.run(
        [sys.executable, "-m", "profile_engine.cli.main", "counts", "--db",
         str(guarded.db_path), "--month", "2026-03", "--format", "json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert '"total": 1' in result.stdout


def test_without_a_token_only_loopback_host_names_are_answered(
    kafka_bootstrap: str, fresh_topic: str, fresh_dead_letter_topic: str, db_path: Path
) -> None:
    with serving(db_path, kafka_bootstrap, fresh_topic, fresh_dead_letter_topic) as server:
        port = server.url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            answer = httpx.get(server.url + "/api/status", headers={"Host": host}, timeout=60)
            assert answer.status_code == 200, host
        rebound = httpx.get(
            server.url + "/api/status", headers={"Host": f"evil.example:{port}"}, timeout=60
        )
        assert rebound.status_code == 403
        assert rebound.json()["error"] == "this server answers loopback host names only"
        _another_sites_page_cannot_make_it_query_or_write(server.url)


def _another_sites_page_cannot_make_it_query_or_write(url: str) -> None:
    """What a browser sends when a page of another origin (another port of 127.0.0.1 is
    one) posts a form here, loads an image from here, or when the operator types a URL."""
    elsewhere = {"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"}
    form = {"Content-Type": "application/x-www-form-urlencoded", **HTML}
    canary = "SELECT 'canary-ran' AS ran"
    with httpx.Client(base_url=url, timeout=60) as browser:
        posted = browser.post("/sql", content=f"q={canary}", headers={**form, **elsewhere})
        assert posted.status_code == 403 and "canary-ran" not in posted.text
        setting = browser.put(
            "/api/settings/implicit_consent.sms", json={"value": True}, headers=elsewhere
        )
        assert setting.status_code == 403
        settings = {row["key"]: row for row in browser.get("/api/settings").json()}
        assert settings["implicit_consent.sms"]["overridden"] is False
        linked = browser.get("/sql", params={"q": canary}, headers={**HTML, **elsewhere})
        assert linked.status_code == 200 and "A link from another site" in linked.text
        assert "<td" not in linked.text  # shown in the editor, not run
        typed = {"Sec-Fetch-Site": "none", **HTML}
        assert "<td" in browser.get("/sql", params={"q": canary}, headers=typed).text
        own = {"Origin": url, "Sec-Fetch-Site": "same-origin"}
        mine = browser.post("/sql", content=f"q={canary}", headers={**form, **own})
        assert mine.status_code == 200 and "<td" in mine.text
        assert mine.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in mine.headers["content-security-policy"]


def test_no_request_but_a_settings_change_is_a_write(guarded: Server) -> None:
    with guarded.client() as client:
        for method, path in (
            ("POST", "/api/counts"),
            ("PUT", "/api/profiles/email:ann@example.com"),
            ("DELETE", "/api/profiles/email:ann@example.com"),
            ("POST", "/api/settings"),
            ("DELETE", "/api/settings/implicit_consent.sms"),
            ("PATCH", "/api/status"),
        ):
            assert client.request(method, path).status_code == 405, (method, path)
