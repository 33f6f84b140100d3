"""The web page in a real browser: Debian's Chromium driven by Playwright, against a real server.

Screenshots of every page go to ``artifacts/screenshots/`` (gitignored; set
PROFILE_ENGINE_ARTIFACTS to put them elsewhere) so a person can look at them.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient

from consumers.broker_process import free_port
from profile_engine.synthetic import generate_events
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
from tests.support.serving import Server, new_topics, publish, publish_generated, serving

pytestmark = pytest.mark.kafka

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS = Path(
    os.environ.get("PROFILE_ENGINE_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts")
)
SHOWCASE = [
    identify(0, {"first_name": "Zelda", "last_name": "Quist", "city": "Lyon"}, eid="b-01",
             email="z.old@quist.example", customer_id="ZQ-1", anonymous_id="zq-anon"),
    bounce(1, "email", "hard", eid="b-02", email="z.old@quist.example"),
    identify(2, {"birthday_month": 4}, eid="b-03", email="zelda@quist.example", customer_id="ZQ-1",
             phone="+14155550123"),
    consent(3, "email", "opted_in", eid="b-04", email="zelda@quist.example"),
    consent(4, "sms", "opted_out", eid="b-05", phone="+14155550123"),
    subscription(5, "newsletter", "email", "subscribed", eid="b-06", email="zelda@quist.example"),
    subscription(6, "sms-deals", "sms", "unsubscribed", eid="b-07", phone="+14155550123"),
    purchase(7, "Z-100", 120.0, eid="b-08", customer_id="ZQ-1"),
    purchase(8, "Z-101", 80.5, eid="b-09", customer_id="ZQ-1"),
    track(9, "product_viewed", {"sku": "A1"}, eid="b-10", customer_id="ZQ-1"),
    identify(11, {"first_name": "Yann", "last_name": "Opted"}, eid="b-11",
             email="yann@opted.example"),
    ccpa(12, "opt_out", eid="b-12", email="yann@opted.example"),
]  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed: `make browser` (apt-get install chromium, root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("browser") / "live.duckdb"
    with new_topics(kafka_admin, "browser") as (topic, dead_letters):
        sent = publish_generated(kafka_bootstrap, topic, generate_events(3_000, seed=11))
        sent += publish(kafka_bootstrap, topic, SHOWCASE)
        with serving(db, kafka_bootstrap, topic, dead_letters) as running:
            running.wait_folded(sent)
            running.topic = topic  # type: ignore[attr-defined]
            yield running


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server.url)
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    yield tab
    context.close()


def shoot(page: Any, name: str) -> None:
    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def figure(value: int) -> str:
    return f"{value:,}"


def test_overview_shows_live_counts_filtered_by_channel_and_the_stream(
    page: Any, server: Server, kafka_bootstrap: str
) -> None:
    counts = server.get("/api/counts").json()
    page.goto("/")
    assert page.locator("[data-f=total]").inner_text() == figure(counts["total"])
    assert page.locator("[data-live-label]").inner_text() == "Live"
    assert page.locator("[data-s=lag]").inner_text() == "0"
    page.get_by_role("link", name="SMS", exact=True).click()
    assert page.locator("[data-f=channel-label]").inner_text() == "on SMS"
    expected_sms = figure(counts["channels"]["sms"]["reachable"])
    page.wait_for_function(
        f"document.querySelector('[data-f=reachable]').textContent === '{expected_sms}'"
    )
    assert page.url.endswith("channel=sms") or "channel=sms" in page.url
    shoot(page, "overview")

    publish(kafka_bootstrap, server.topic, [identify(30, eid="b-30", email="new@late.example")])  # type: ignore[attr-defined]
    grown = figure(counts["total"] + 1)
    page.wait_for_function(  # no reload: the page follows the fold
        f"document.querySelector('[data-f=total]').textContent === '{grown}'", timeout=60_000
    )


def sql_value(server: Server, query: str) -> Any:
    with server.client() as client:
        answer = client.post("/api/sql", json={"query": query})
    answer.raise_for_status()
    return answer.json()["rows"][0][0]


def daily(server: Server, first: str, last: str, channel: str | None = None) -> list[Any]:
    params = {"from": first, "to": last} | ({"channel": channel} if channel else {})
    answer = server.get("/api/counts/daily", params=params)
    answer.raise_for_status()
    rows: list[Any] = answer.json()["days"]
    return rows


def chart_attribute(page: Any, name: str) -> str:
    value: str = page.locator("[data-history-chart]").get_attribute(name)
    return value


def test_the_chart_of_profiles_over_time_follows_range_channel_view_and_exports_its_rows(
    page: Any, server: Server
) -> None:
    newest = date.fromisoformat(str(sql_value(server, "SELECT max(timestamp)::DATE FROM events")))
    first = newest - timedelta(days=89)  # default: the last 90 days of event time
    page.goto("/")
    chart = page.locator("[data-history-chart]")
    assert (chart_attribute(page, "data-from"), chart_attribute(page, "data-to")) == (
        str(first),
        str(newest),
    )
    assert chart.locator("figure.chart svg").is_visible()
    assert chart.locator("figure.chart svg").bounding_box()["width"] > 900
    rows = daily(server, str(first), str(newest))
    assert len(rows) == 90 and rows[-1]["total"] > 0
    assert chart.locator("[data-k=total]").inner_text() == figure(rows[-1]["total"])
    assert chart.locator("[data-k=reachable]").inner_text() == figure(rows[-1]["reachable_any"])
    shoot(page, "overview-chart")

    with page.expect_download() as download:  # the CSV holds exactly the plotted rows
        chart.get_by_role("link", name="Export CSV").click()
    exported = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert exported == [{k: str(v) for k, v in row.items()} for row in rows]

    page.get_by_role("link", name="SMS", exact=True).click()
    page.wait_for_function(
        "document.querySelector('[data-history-chart]').dataset.chartChannel === 'sms'"
    )
    sms_rows = daily(server, str(first), str(newest), "sms")
    chart = page.locator("[data-history-chart]")
    assert chart.locator("[data-k=reachable]").inner_text() == figure(sms_rows[-1]["sms_reachable"])
    assert "reachable on SMS" in chart.locator("[data-chart-caption]").inner_text()
    assert "channel=sms" in chart.get_by_role("link", name="Export CSV").get_attribute("href")

    page.get_by_role("link", name="Monthly active users").click()
    page.wait_for_function("document.querySelector('[data-history-chart]').dataset.view === 'mau'")
    assert page.locator("[data-k=mau]").inner_text() == figure(sms_rows[-1]["mau"])
    shoot(page, "overview-chart-mau")

    page.locator("[data-chart-range] input[name=from]").fill("2026-01-01")
    page.locator("[data-chart-range] input[name=to]").fill("2026-01-31")
    page.get_by_role("button", name="Show").click()
    page.wait_for_function(
        "document.querySelector('[data-history-chart]').dataset.from === '2026-01-01'"
    )
    assert chart_attribute(page, "data-days") == "31"
    assert chart_attribute(page, "data-view") == "mau"
    assert "from=2026-01-01" in page.url and "channel=sms" in page.url
    january = daily(server, "2026-01-01", "2026-01-31", "sms")
    assert page.locator("[data-k=mau]").inner_text() == figure(january[-1]["mau"])
    page.reload()  # the address holds the whole choice
    assert chart_attribute(page, "data-days") == "31"
    assert chart_attribute(page, "data-chart-channel") == "sms"
    shoot(page, "overview-chart-range")


def test_the_mau_card_opens_on_the_newest_month_with_activity(page: Any, server: Server) -> None:
    newest_active = sql_value(server, "SELECT max(month) FROM monthly_active_users")
    page.goto("/")
    assert page.locator("[data-overview]").get_attribute("data-month") == newest_active
    mau = server.get("/api/counts", params={"month": newest_active}).json()["mau"]
    assert mau > 0 and page.locator("[data-f=mau]").inner_text() == figure(mau)


def test_slash_focuses_search_and_search_finds_a_profile_as_you_type(page: Any) -> None:
    page.goto("/")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Search profiles"
    page.keyboard.type("zel")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/profiles\?q=zel"))
    assert page.get_by_role("link", name="Zelda Quist").is_visible()
    box = page.locator("[data-live-search] input[type=search]")
    box.fill("quist")  # live search: no Enter
    page.wait_for_function("location.search.includes('q=quist')")
    page.get_by_text("1 profile matching “quist”").wait_for()
    assert page.locator("tbody tr").count() == 1
    shoot(page, "profiles-search")
    box.fill("")
    page.wait_for_function("document.querySelectorAll('tbody tr').length === 25")
    page.locator("select[name=limit]").select_option("10")
    page.wait_for_function("document.querySelectorAll('tbody tr').length === 10")
    shoot(page, "profiles")


def test_a_profile_shows_orders_identifier_tags_consent_and_eligibility(page: Any) -> None:
    page.goto("/profiles?q=zelda")
    page.get_by_role("link", name="Zelda Quist").click()
    page.wait_for_url(re.compile(r"/profiles/profile_id:"))
    assert page.locator("h1").inner_text().strip() == "Zelda Quist"
    stats = page.locator(".order-stats").inner_text()
    assert "Orders\n2" in stats and "200.50" in stats and "100.25" in stats
    old = page.locator("tr", has_text="z.old@quist.example")
    assert old.locator(".pill", has_text="Undeliverable").is_visible()
    assert old.get_by_text("Not the last-seen email").is_visible()
    current = page.locator("tr", has_text="zelda@quist.example")
    for tag in ("Last Seen", "Deliverable", "Opted in"):
        assert current.locator(".pill", has_text=tag).first.is_visible(), tag
    assert current.get_by_text("Eligible for Email").is_visible()
    phone = page.locator("tr", has_text="+14155550123")
    assert phone.locator(".pill", has_text="Opted out").is_visible()
    assert phone.get_by_text("Opted out", exact=True).count() == 2  # the pill and the reason
    shoot(page, "profile-identifiers")


def test_the_timeline_is_newest_first_filterable_and_the_tabs_show_details(page: Any) -> None:
    page.goto("/profiles/customer_id:ZQ-1?tab=events")
    items = page.locator(".timeline li")
    assert items.count() == 10
    times = [items.nth(i).locator("time").get_attribute("datetime") for i in range(10)]
    assert times == sorted(times, reverse=True)
    assert "product_viewed" in items.first.inner_text()
    items.first.locator("summary").click()
    assert '"sku": "A1"' in items.first.locator("pre").inner_text()
    shoot(page, "profile-timeline")
    page.locator(".chip", has_text="track").click()
    page.wait_for_url(re.compile(r"type=track"))
    assert page.locator(".timeline li").count() == 3
    assert set(page.locator(".timeline li .pill").all_inner_texts()) == {"track"}
    page.get_by_role("link", name=re.compile("Customer details")).click()
    city = page.locator("tr", has_text="city")
    assert "Lyon" in city.inner_text()
    shoot(page, "profile-details")
    page.get_by_role("link", name=re.compile("List subscriptions")).click()
    assert "Subscribed" in page.locator("tr", has_text="newsletter").inner_text()
    assert "Unsubscribed" in page.locator("tr", has_text="sms-deals").inner_text()
    shoot(page, "profile-subscriptions")


def test_a_ccpa_opted_out_profile_says_so(page: Any) -> None:
    page.goto("/profiles/email:yann@opted.example")
    assert page.locator("h1 .pill", has_text="CCPA Opt-out").is_visible()
    assert page.get_by_text("CCPA opt-out blocks this channel").first.is_visible()
    shoot(page, "profile-ccpa")


def test_the_sql_page_runs_a_query_and_shows_errors(page: Any) -> None:
    page.goto("/sql")
    page.locator("textarea").fill("SELECT channel, total FROM reachability_counts ORDER BY channel")
    page.keyboard.press("Control+Enter")
    page.locator(".result-table").wait_for()
    assert page.locator(".result-table tbody tr").count() == 4
    assert page.locator(".result-table th").all_inner_texts() == ["CHANNEL", "TOTAL"]
    shoot(page, "sql")
    page.get_by_role("button", name="Why not eligible").click()
    page.get_by_role("button", name="Run query").click()
    page.locator(".result-table").wait_for()
    page.locator("textarea").fill("DELETE FROM profiles")
    page.get_by_role("button", name="Run query").click()
    assert "read-only" in page.get_by_role("alert").last.inner_text()
    shoot(page, "sql-error")


def test_a_missing_profile_has_its_own_page(page: Any) -> None:
    response = page.goto("/profiles/email:nobody@nowhere.example")
    assert response.status == 404
    assert page.locator("h1").inner_text() == "Not found"
    assert "no profile found for email:nobody@nowhere.example" in page.content()
    shoot(page, "profile-not-found")


def test_narrow_screens_get_a_single_column(browser: Any, server: Server) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=server.url)
    phone = context.new_page()
    try:
        phone.goto("/")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        shoot(phone, "overview-narrow")
        phone.goto("/profiles/customer_id:ZQ-1")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        shoot(phone, "profile-narrow")
    finally:
        context.close()


def test_a_broker_outage_shows_on_every_page(browser: Any, tmp_path: Path) -> None:
    db = tmp_path / "offline.duckdb"
    fold_into_db(db, SHOWCASE)
    with serving(db, f"127.0.0.1:{free_port()}", "profile-events") as offline:
        offline.wait_until(lambda s: s["broker"]["reachable"] is False, timeout_s=60)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        tab = context.new_page()
        try:
            tab.goto(offline.url + "/")
            banner = tab.locator("[data-banner]")
            assert banner.is_visible() and "cannot reach Kafka" in banner.inner_text()
            assert tab.locator("[data-live-label]").inner_text() == "Kafka unreachable"
            assert tab.locator("[data-f=total]").inner_text() == "2"  # reads still answer
            shoot(tab, "broker-down")
            tab.goto(offline.url + "/profiles?q=yann")
            assert tab.locator("[data-banner]").is_visible()
        finally:
            context.close()


def test_the_settings_page_changes_a_setting_and_the_counts_move_at_once(
    page: Any, server: Server
) -> None:
    def sms_reachable() -> int:
        counts = server.get("/api/counts").json()
        return int(counts["channels"]["sms"]["reachable"])

    before = sms_reachable()
    page.goto("/settings")
    row = page.locator("li[id='implicit_consent.sms']")
    checkbox = row.locator("input[type=checkbox]")
    assert not checkbox.is_checked()  # off by default
    checkbox.check()
    row.get_by_role("button", name="Save").click()
    page.wait_for_url("**/settings?saved=implicit_consent.sms*")
    assert "Saved: Implicit consent · SMS" in page.locator("[role=status].notice").inner_text()
    row = page.locator("li[id='implicit_consent.sms']")
    assert row.locator("input[type=checkbox]").is_checked()
    assert "changed" in row.inner_text()
    shoot(page, "settings")
    assert sms_reachable() > before  # unknown consent counts on SMS now
    row.get_by_role("button", name="Reset").click()
    page.wait_for_url("**/settings?saved=implicit_consent.sms*")
    assert sms_reachable() == before
    assert not page.locator("li[id='implicit_consent.sms'] input[type=checkbox]").is_checked()
