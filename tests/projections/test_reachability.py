"""Reachability rules, one at a time, on small hand-made event logs folded into DuckDB."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from projections import queries
from projections.readonly import open_readonly
from projections.settings import set_setting
from tests.projections.logs import T0, fold


def identify(**ids: str) -> dict[str, Any]:
    return {"type": "identify", "identifiers": ids, "traits": {}}


def consent(channel: str, status: str, **ids: str) -> dict[str, Any]:
    return {"type": "consent", "identifiers": ids, "channel": channel, "status": status}


def bounce(channel: str, bounce_type: str, **ids: str) -> dict[str, Any]:
    return {"type": "bounce", "identifiers": ids, "channel": channel, "bounce_type": bounce_type}


def ccpa(request: str, **ids: str) -> dict[str, Any]:
    return {"type": "ccpa", "identifiers": ids, "request": request}


def reachability(db_path: Path) -> dict[str, tuple[bool, bool, bool]]:
    """(email, sms, push) per customer_id, from the profile_reachability view.

    Every call also checks that the profile page (the same rules applied in Python) agrees
    with the views, profile by profile and identifier by identifier.
    """
    con = open_readonly(str(db_path))
    try:
        rows = con.execute(
            "SELECT i.id_value, r.email, r.sms, r.push FROM profile_reachability r"
            " JOIN identifiers i ON i.profile_id = r.profile_id AND i.id_type = 'customer_id'"
        ).fetchall()
        assert_profile_page_agrees_with_views(con)
    finally:
        con.close()
    return {cid: (email, sms, push) for cid, email, sms, push in rows}


def assert_profile_page_agrees_with_views(con: duckdb.DuckDBPyConnection) -> None:
    by_view = {
        row[0]: {"email": row[1], "sms": row[2], "push": row[3]}
        for row in con.execute(
            "SELECT profile_id, email, sms, push FROM profile_reachability"
        ).fetchall()
    }
    tags_by_view = {
        (row[0], row[1], row[2]): row[3:]
        for row in con.execute(
            "SELECT profile_id, id_type, id_value, is_last_seen, deliverable, eligible, reason"
            " FROM identifier_status"
        ).fetchall()
    }
    for profile_id, reachable in by_view.items():
        document = queries.profile_document(con, profile_id)
        assert document is not None
        assert document["reachable"] == reachable, profile_id
        ccpa_opted_out = document["ccpa_opted_out"]
        for row in queries.identifier_rows(con, profile_id, ccpa_opted_out):
            tags = (row["is_last_seen"], row["deliverable"], row["eligible"], row["reason"])
            assert tags == tags_by_view[(profile_id, row["type"], row["value"])], row


def channel_counts(db_path: Path) -> dict[str, tuple[int, int, int]]:
    con = open_readonly(str(db_path))
    try:
        rows = con.execute("SELECT * FROM reachability_counts").fetchall()
    finally:
        con.close()
    return {
        channel: (total, reachable, unreachable) for channel, total, reachable, unreachable in rows
    }


def change_setting(db_path: Path, key: str, value: Any) -> None:
    con = duckdb.connect(str(db_path))
    try:
        set_setting(con, key, value)
    finally:
        con.close()


# -- email and sms: consent ----------------------------------------------------------------


def test_opted_in_deliverable_email_is_reachable(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", email="a@example.com"),
         consent("email", "opted_in", email="a@example.com"))  # fmt: skip
    assert reachability(db_path)["c1"][0] is True


def test_unknown_email_consent_is_reachable_by_default_implicit_consent(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", email="a@example.com"))
    assert reachability(db_path)["c1"][0] is True


def test_unknown_sms_consent_is_not_reachable_by_default(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", phone="+14155552671"))
    assert reachability(db_path)["c1"][1] is False


def test_unknown_push_consent_is_reachable_by_default(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", push_token="tok-1"))
    assert reachability(db_path)["c1"][2] is True


def test_opted_out_email_is_not_reachable(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", email="a@example.com"),
         consent("email", "opted_out", email="a@example.com"))  # fmt: skip
    assert reachability(db_path)["c1"][0] is False


def test_pending_consent_is_never_reachable_even_with_implicit_consent(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", email="a@example.com", phone="+14155552671"),
         consent("email", "pending", email="a@example.com"),
         consent("sms", "pending", phone="+14155552671"))  # fmt: skip
    change_setting(db_path, "implicit_consent.sms", True)
    assert reachability(db_path)["c1"][:2] == (False, False)


def test_opted_in_sms_is_reachable(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", phone="+14155552671"),
         consent("sms", "opted_in", phone="+14155552671"))  # fmt: skip
    assert reachability(db_path)["c1"][1] is True


# -- deliverability ------------------------------------------------------------------------


@pytest.mark.parametrize("bounce_type", ["hard", "complaint"])
def test_hard_bounce_or_complaint_makes_the_email_unreachable(
    db_path: Path, bounce_type: str
) -> None:
    fold(db_path, identify(customer_id="c1", email="a@example.com"),
         consent("email", "opted_in", email="a@example.com"),
         bounce("email", bounce_type, email="a@example.com"))  # fmt: skip
    assert reachability(db_path)["c1"][0] is False


def test_soft_bounce_alone_keeps_the_email_reachable(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", email="a@example.com"),
         bounce("email", "soft", email="a@example.com"))  # fmt: skip
    assert reachability(db_path)["c1"][0] is True


def test_invalid_email_syntax_is_never_reachable(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", email="not-an-email"),
         consent("email", "opted_in", email="not-an-email"))  # fmt: skip
    assert reachability(db_path)["c1"][0] is False


def test_soft_bounce_limit_setting_applies_at_query_time(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", email="a@example.com"),
         bounce("email", "soft", email="a@example.com"),
         bounce("email", "soft", email="a@example.com"))  # fmt: skip
    assert reachability(db_path)["c1"][0] is True  # default 0 = off
    change_setting(db_path, "bounce.soft_bounce_limit", 2)
    assert reachability(db_path)["c1"][0] is False
    change_setting(db_path, "bounce.soft_bounce_limit", 3)
    assert reachability(db_path)["c1"][0] is True


# -- only the last-seen email / phone counts -----------------------------------------------


def test_older_deliverable_email_does_not_make_the_profile_reachable(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", email="old@example.com"),
         consent("email", "opted_in", email="old@example.com", customer_id="c1"),
         identify(customer_id="c1", email="new@example.com"),
         consent("email", "opted_out", email="new@example.com"))  # fmt: skip
    assert reachability(db_path)["c1"][0] is False


def test_newer_deliverable_email_makes_the_profile_reachable(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", email="old@example.com"),
         consent("email", "opted_out", email="old@example.com", customer_id="c1"),
         identify(customer_id="c1", email="new@example.com"))  # fmt: skip
    assert reachability(db_path)["c1"][0] is True


def test_only_the_last_seen_phone_counts(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", phone="+14155552671"),
         consent("sms", "opted_in", phone="+14155552671", customer_id="c1"),
         identify(customer_id="c1", phone="+14155552672"))  # fmt: skip
    assert reachability(db_path)["c1"][1] is False  # the newer phone has unknown consent


def test_last_seen_tie_goes_to_the_later_event_in_the_log(db_path: Path) -> None:
    same_time = (T0 + timedelta(hours=1)).isoformat()
    fold(db_path,
         identify(customer_id="c1", email="good@example.com"),
         identify(customer_id="c1", email="bad@example.com"),
         bounce("email", "hard", email="bad@example.com"),
         {**identify(customer_id="c1", email="good@example.com"), "timestamp": same_time},
         {**identify(customer_id="c1", email="bad@example.com"), "timestamp": same_time},
    )  # fmt: skip
    assert reachability(db_path)["c1"][0] is False
    con = open_readonly(str(db_path))
    try:
        last = con.execute(
            "SELECT id_value FROM identifier_status WHERE id_type = 'email' AND is_last_seen"
        ).fetchall()
    finally:
        con.close()
    assert last == [("bad@example.com",)]


# -- push: any token -----------------------------------------------------------------------


def test_any_eligible_push_token_makes_push_reachable(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", push_token="tok-old"),
         identify(customer_id="c1", push_token="tok-new"),
         bounce("push", "hard", push_token="tok-new"))  # fmt: skip
    assert reachability(db_path)["c1"][2] is True


def test_push_is_unreachable_when_no_token_passes(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", push_token="tok-1"),
         identify(customer_id="c1", push_token="tok-2"),
         consent("push", "opted_out", push_token="tok-1"),
         consent("push", "pending", push_token="tok-2"))  # fmt: skip
    assert reachability(db_path)["c1"][2] is False


# -- CCPA ----------------------------------------------------------------------------------


def test_ccpa_opt_out_blocks_every_channel_by_default(db_path: Path) -> None:
    fold(db_path,
         identify(customer_id="c1", email="a@example.com", phone="+14155552671",
                  push_token="tok-1"),
         consent("sms", "opted_in", phone="+14155552671"),
         ccpa("opt_out", customer_id="c1"))  # fmt: skip
    assert reachability(db_path)["c1"] == (False, False, False)


def test_ccpa_blocks_setting_false_lets_that_channel_through(db_path: Path) -> None:
    fold(db_path,
         identify(customer_id="c1", email="a@example.com", phone="+14155552671"),
         consent("sms", "opted_in", phone="+14155552671"),
         ccpa("opt_out", email="a@example.com"))  # fmt: skip
    change_setting(db_path, "ccpa_blocks.email", False)
    assert reachability(db_path)["c1"][:2] == (True, False)


# -- implicit consent settings -------------------------------------------------------------


def test_implicit_consent_settings_change_unknown_consent_at_once(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", email="a@example.com", phone="+14155552671"))
    assert reachability(db_path)["c1"][:2] == (True, False)
    change_setting(db_path, "implicit_consent.email", False)
    change_setting(db_path, "implicit_consent.sms", True)
    assert reachability(db_path)["c1"][:2] == (False, True)


# -- who is counted ------------------------------------------------------------------------


def test_erased_profiles_are_not_counted(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1", email="a@example.com"),
         identify(customer_id="c2", email="b@example.com"),
         ccpa("delete", customer_id="c2"))  # fmt: skip
    assert channel_counts(db_path)["email"] == (1, 1, 0)


def test_merged_profiles_are_counted_once(db_path: Path) -> None:
    fold(db_path, identify(customer_id="c1"), identify(email="a@example.com"),
         identify(customer_id="c1", email="a@example.com"))  # fmt: skip
    assert channel_counts(db_path)["email"] == (1, 1, 0)


def test_unreachable_is_total_minus_reachable_and_any_is_at_least_one_channel(
    db_path: Path,
) -> None:
    fold(db_path,
         identify(customer_id="c1", email="a@example.com"),  # email only
         identify(customer_id="c2", push_token="tok-2"),  # push only
         identify(customer_id="c3", phone="+14155552673"),  # nothing (sms unknown)
         identify(anonymous_id="anon-4"))  # no messaging identifier at all  # fmt: skip
    counts = channel_counts(db_path)
    assert counts == {
        "email": (4, 1, 3),
        "sms": (4, 0, 4),
        "push": (4, 1, 3),
        "any": (4, 2, 2),
    }


# -- the per-identifier view explains and agrees --------------------------------------------


def test_identifier_reachability_names_the_failing_rule(db_path: Path) -> None:
    fold(db_path,
         identify(customer_id="c1", email="old@example.com"),
         identify(customer_id="c1", email="new@example.com", phone="+14155552671",
                  push_token="tok-1"),
         bounce("email", "hard", email="new@example.com"),
         consent("push", "pending", push_token="tok-1"))  # fmt: skip
    con = open_readonly(str(db_path))
    try:
        rows = con.execute(
            "SELECT id_value, eligible, reason FROM identifier_reachability ORDER BY id_value"
        ).fetchall()
    finally:
        con.close()
    assert rows == [
        ("+14155552671", False, "consent_unknown"),
        ("new@example.com", False, "hard_bounce"),
        ("old@example.com", False, "not_last_seen"),
        ("tok-1", False, "consent_pending"),
    ]


def test_profile_reachability_agrees_with_identifier_reachability(db_path: Path) -> None:
    fold(db_path,
         identify(customer_id="c1", email="a@example.com", push_token="t1"),
         consent("email", "opted_out", email="a@example.com"),
         identify(customer_id="c1", email="b@example.com"),
         identify(customer_id="c2", phone="+14155552672", push_token="t2"),
         consent("sms", "opted_in", phone="+14155552672"),
         bounce("push", "complaint", push_token="t2"),
         identify(customer_id="c3", email="c@example.com"),
         ccpa("opt_out", customer_id="c3"))  # fmt: skip
    con = open_readonly(str(db_path))
    try:
        mismatches = con.execute(
            "SELECT p.profile_id FROM profile_reachability p LEFT JOIN ("
            "  SELECT profile_id,"
            "    coalesce(bool_or(eligible) FILTER (channel = 'email'), false) AS email,"
            "    coalesce(bool_or(eligible) FILTER (channel = 'sms'), false) AS sms,"
            "    coalesce(bool_or(eligible) FILTER (channel = 'push'), false) AS push"
            "  FROM identifier_reachability GROUP BY profile_id) i USING (profile_id)"
            " WHERE (p.email, p.sms, p.push)"
            "   IS DISTINCT FROM (coalesce(i.email, false), coalesce(i.sms, false),"
            "                     coalesce(i.push, false))"
        ).fetchall()
    finally:
        con.close()
    assert mismatches == []
    assert reachability(db_path) == {
        "c1": (True, False, True),
        "c2": (False, True, False),
        "c3": (False, False, False),
    }
