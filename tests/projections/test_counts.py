"""`counts` (projections.queries.counts) and monthly active users, on hand-made logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from projections import queries
from projections.readonly import open_readonly
from projections.settings import set_setting
from tests.projections.logs import fold


def track(name: str, at: str | None = None, **ids: str) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "track", "identifiers": ids, "event": name}
    return event if at is None else {**event, "timestamp": at}


def identify(**ids: str) -> dict[str, Any]:
    return {"type": "identify", "identifiers": ids, "traits": {}}


@pytest.fixture
def query(db_path: Path) -> Any:
    """queries.counts on a fresh read-only connection, closed again (so settings can change)."""

    def run(month: str = "2026-01", channel: str | None = None) -> dict[str, Any]:
        con = open_readonly(str(db_path))
        try:
            return queries.counts(con, month, channel)
        finally:
            con.close()

    return run


def mau(query: Any, month: str = "2026-01") -> int:
    return int(query(month)["mau"])


# -- monthly active users ------------------------------------------------------------------


def test_a_track_event_in_the_month_makes_the_profile_active(db_path: Path, query: Any) -> None:
    fold(db_path, track("page_view", customer_id="c1"), identify(customer_id="c2"))
    assert mau(query) == 1


def test_only_events_inside_the_utc_month_count(db_path: Path, query: Any) -> None:
    fold(db_path,
         track("page_view", "2025-12-31T23:59:59Z", customer_id="c1"),
         # 22:30 at UTC-02:00 on Jan 31 is Feb 1 00:30 UTC: February activity.
         track("page_view", "2026-01-31T22:30:00-02:00", customer_id="c2"),
         track("page_view", "2026-01-01T00:00:00Z", customer_id="c3"))  # fmt: skip
    assert (mau(query, "2025-12"), mau(query, "2026-01"), mau(query, "2026-02")) == (1, 1, 1)


def test_message_sent_is_not_activity_by_default(db_path: Path, query: Any) -> None:
    fold(db_path, track("message_sent", customer_id="c1"))
    assert mau(query) == 0


@pytest.mark.parametrize(
    "event",
    [
        {"type": "identify", "identifiers": {"customer_id": "c1"}, "traits": {"a": 1}},
        {"type": "consent", "identifiers": {"email": "a@example.com"}, "channel": "email",
         "status": "opted_in"},
        {"type": "bounce", "identifiers": {"email": "a@example.com"}, "channel": "email",
         "bounce_type": "soft"},
        {"type": "subscription", "identifiers": {"email": "a@example.com"}, "list_id": "news",
         "channel": "email", "status": "subscribed"},
        {"type": "ccpa", "identifiers": {"customer_id": "c1"}, "request": "opt_out"},
    ],
    ids=["identify", "consent", "bounce", "subscription", "ccpa"],
)  # fmt: skip
def test_other_event_types_are_never_activity(
    db_path: Path, query: Any, event: dict[str, Any]
) -> None:
    fold(db_path, event)
    assert (query()["total"], mau(query)) == (1, 0)


def test_anonymous_only_profiles_count(db_path: Path, query: Any) -> None:
    fold(db_path, track("page_view", anonymous_id="anon-1"))
    assert mau(query) == 1


def test_a_profile_counts_once_however_many_events(db_path: Path, query: Any) -> None:
    fold(db_path, *[track("page_view", customer_id="c1") for _ in range(5)])
    assert mau(query) == 1


def test_merged_profiles_count_once(db_path: Path, query: Any) -> None:
    fold(db_path, track("page_view", anonymous_id="anon-1"), track("page_view", customer_id="c1"),
         identify(anonymous_id="anon-1", customer_id="c1"))  # fmt: skip
    assert mau(query) == 1


def test_erased_profiles_do_not_count(db_path: Path, query: Any) -> None:
    fold(db_path, track("page_view", customer_id="c1"),
         {"type": "ccpa", "identifiers": {"customer_id": "c1"}, "request": "delete"})  # fmt: skip
    assert mau(query) == 0


def test_an_erasure_in_a_later_batch_leaves_the_counts_and_their_tally(
    db_path: Path, query: Any
) -> None:
    fold(db_path, identify(customer_id="c1", email="ann@example.com"),
         identify(customer_id="c2", email="bob@example.com"),
         identify(customer_id="c3", phone="+14155550100"))  # fmt: skip
    assert (query()["total"], query()["channels"]["email"]["reachable"]) == (3, 2)
    fold(db_path, {"event_id": "later-1", "type": "ccpa", "identifiers": {"customer_id": "c1"},
                   "request": "delete"})  # fmt: skip
    assert (query()["total"], query()["channels"]["email"]["reachable"]) == (2, 1)
    # The tally `counts` judges is the live profiles' inputs, grouped, after every batch.
    con = open_readonly(str(db_path))
    try:
        tally, grouped = (
            con.execute(f"SELECT * FROM {source} ORDER BY ALL").fetchall()
            for source in (
                "reachability_input_tally",
                "(SELECT * EXCLUDE (profile_id), count(*) FROM profile_reachability_inputs"
                " GROUP BY ALL)",
            )
        )
    finally:
        con.close()
    assert tally == grouped and sum(row[-1] for row in tally) == 2


def test_excluded_events_setting_moves_mau_without_a_rebuild(db_path: Path, query: Any) -> None:
    fold(db_path, track("message_sent", customer_id="c1"), track("sync", customer_id="c2"))
    assert mau(query) == 1
    con = duckdb.connect(str(db_path))
    set_setting(con, "mau.excluded_events", ["sync"])
    con.close()
    assert mau(query) == 1  # now c1 counts and c2 does not
    con = duckdb.connect(str(db_path))
    set_setting(con, "mau.excluded_events", [])
    con.close()
    assert mau(query) == 2


def test_sql_users_get_the_same_mau_from_the_monthly_view(db_path: Path) -> None:
    fold(db_path, track("page_view", "2025-12-05T00:00:00Z", customer_id="c1"),
         track("page_view", "2026-01-05T00:00:00Z", customer_id="c1"),
         track("page_view", "2026-01-06T00:00:00Z", customer_id="c2"))  # fmt: skip
    con = open_readonly(str(db_path))
    try:
        rows = con.execute("SELECT month, mau FROM monthly_active_users").fetchall()
    finally:
        con.close()
    assert rows == [("2025-12", 1), ("2026-01", 2)]


# -- the counts document -------------------------------------------------------------------


def test_counts_has_exactly_the_documented_shape(db_path: Path, query: Any) -> None:
    fold(db_path, identify(customer_id="c1", email="a@example.com"),
         track("page_view", customer_id="c2"))  # fmt: skip
    assert query() == {
        "total": 2,
        "reachable_any": 1,
        "mau": 1,
        "month": "2026-01",
        "channels": {
            "email": {"reachable": 1, "unreachable": 1},
            "sms": {"reachable": 0, "unreachable": 2},
            "push": {"reachable": 0, "unreachable": 2},
        },
    }


def test_channel_keeps_only_that_channel(db_path: Path, query: Any) -> None:
    fold(db_path, identify(customer_id="c1", push_token="tok"))
    assert query(channel="push")["channels"] == {"push": {"reachable": 1, "unreachable": 0}}


def test_an_empty_projection_counts_zero(db_path: Path, query: Any) -> None:
    fold(db_path)
    result = query()
    assert (result["total"], result["reachable_any"], result["mau"]) == (0, 0, 0)


@pytest.mark.parametrize("month", ["2026-1", "2026-13", "01-2026", "2026-01-01"])
def test_a_malformed_month_is_refused(db_path: Path, query: Any, month: str) -> None:
    fold(db_path)
    with pytest.raises(queries.QueryError, match="YYYY-MM"):
        query(month)
