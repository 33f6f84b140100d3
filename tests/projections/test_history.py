"""Profiles over time: counts as of a day equal a rebuild of the log cut at that day.

The oracle is the specification fold (profile_engine.fold) of only the events before the end
of day D, in log order; the production fold keeps history batch by batch (random batch
sizes) and answers for every D from it. Logs follow the documented condition (each person's
events in time order, people interleaved), with merges, limit conflicts, erasures, consent
flips, bounces, CCPA, equal timestamps and redeliveries. The example counts suit CI (about
a minute in all); PROFILE_ENGINE_PROPERTY_SCALE=10 runs ten times as many locally.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profile_engine.events import Bounce, Ccpa, Consent, Identify, ProfileEvent, Track
from profile_engine.fold import FoldConfig
from profile_engine.identifiers import normalise_all
from projections import history, queries
from projections.settings import set_setting
from tests.profile_engine.builders import bounce, identify, track
from tests.support.folding import fold_into_db
from tests.support.history_logs import (
    FIRST_DAY,
    CutOracle,
    cut_us,
    days_to_ask,
    people_logs,
    read,
    rebuilt_counts,
    rebuilt_cut,
)
from tests.support.properties import examples

LIMITS = st.sampled_from([{"customer_id": 1}, {"customer_id": 1, "email": 1}, {}])


def _fresh(path: Path) -> Path:
    for stale in (path, Path(f"{path}.wal")):
        stale.unlink(missing_ok=True)
    return path


def _production(tmp_path: Path, log: list[ProfileEvent], config: FoldConfig, batch: int) -> Path:
    path = _fresh(tmp_path / "production.duckdb")
    fold_into_db(path, log, config, batch_size=batch)
    return path


def _as_of(path: Path, day: date) -> dict[str, Any]:
    return read(path, lambda con: history.counts_as_of(con, day))


@settings(
    max_examples=examples(15),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(log=people_logs(), limits=LIMITS, batch=st.integers(1, 15))
def test_counts_as_of_each_day_and_the_daily_series_equal_a_rebuild_of_the_cut(
    tmp_path: Path, log: list[ProfileEvent], limits: dict[str, int], batch: int
) -> None:
    config = FoldConfig(id_limits=limits)
    production = _production(tmp_path, log, config, batch)
    days = days_to_ask()

    def answers(con: duckdb.DuckDBPyConnection) -> tuple[dict[date, Any], list[dict[str, Any]]]:
        as_of = {day: history.counts_as_of(con, day) for day in days}
        return as_of, history.daily_rows(con, days[0], days[-1])

    as_of, series = read(production, answers)
    with CutOracle(tmp_path, log, config) as rebuilt:
        for day in days:
            assert as_of[day] == rebuilt.counts(day), f"as of {day} (batch size {batch})"
    # The daily series (the CSV, the chart) is the as-of answer of each of its days.
    assert [row["day"] for row in series] == days
    for row in series:
        counts = as_of[row["day"]]
        assert (row["total"], row["reachable_any"], row["mau"]) == (
            counts["total"], counts["reachable_any"], counts["mau"],
        )  # fmt: skip
        for channel, figures in counts["channels"].items():
            assert row[f"{channel}_reachable"] == figures["reachable"]
            assert row[f"{channel}_unreachable"] == figures["unreachable"]


def test_a_settings_change_moves_every_past_day_at_once(tmp_path: Path) -> None:
    day_us = cut_us(FIRST_DAY) - 86_400_000_000
    # Day 1: two people with unknown SMS consent; day 2: one opts in.
    log = [
        Identify(event_id="a1", timestamp_us=day_us + 1, traits={},
                 identifiers=normalise_all({"phone": "+14155552671"})),
        Identify(event_id="b1", timestamp_us=day_us + 2, traits={},
                 identifiers=normalise_all({"phone": "+14155552672"})),
        Consent(event_id="a2", timestamp_us=day_us + 86_400_000_000, channel="sms",
                status="opted_in", identifiers=normalise_all({"phone": "+14155552671"})),
    ]  # fmt: skip
    path = _production(tmp_path, log, FoldConfig(), 10)
    first, second = FIRST_DAY, date.fromordinal(FIRST_DAY.toordinal() + 1)

    def sms(con: duckdb.DuckDBPyConnection) -> list[int]:
        return [row["sms_reachable"] for row in history.daily_rows(con, first, second)]

    assert read(path, sms) == [0, 1]  # implicit consent for sms is off by default
    with duckdb.connect(str(path)) as con:
        set_setting(con, "implicit_consent.sms", True)
    assert read(path, sms) == [2, 2]  # both days moved, no rebuild


def _lookup_keys(log: list[ProfileEvent], con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every identifier of the log, and every profile id the rebuilt cut knows."""
    keys = {f"{i.id_type}:{i.value}" for e in log for i in e.identifiers}
    rows = con.execute(
        "SELECT profile_id::VARCHAR FROM profiles UNION ALL"
        " SELECT merged_profile_id::VARCHAR FROM profile_merges"
    ).fetchall()
    return sorted(keys | {f"profile_id:{row[0]}" for row in rows})


@settings(
    max_examples=examples(10),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    log=people_logs(max_people=3),
    limits=LIMITS,
    batch=st.integers(1, 15),
    # A few of the days each time (every key is asked on each): across examples, all days.
    days=st.lists(st.sampled_from(days_to_ask()), min_size=1, max_size=3, unique=True),
)
def test_a_profile_as_of_a_day_equals_the_profile_in_a_rebuild_of_the_cut(
    tmp_path: Path, log: list[ProfileEvent], limits: dict[str, int], batch: int, days: list[date]
) -> None:
    config = FoldConfig(id_limits=limits)
    production = _production(tmp_path, log, config, batch)
    whole = rebuilt_cut(tmp_path, log, date(2100, 1, 1), config)

    live: dict[str, bool] = {}

    def still_live(profile_id: str) -> bool:
        """Whether a profile (or the one it merged into) is live after the whole log."""
        if profile_id not in live:
            key = f"profile_id:{profile_id}"
            live[profile_id] = read(whole, lambda con: queries.profile_view(con, key)) is not None
        return live[profile_id]

    def expected_profiles(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        return {key: queries.profile_view(con, key) for key in _lookup_keys(log, con)}

    payloads_now = read(whole, _payloads)

    with CutOracle(tmp_path, log, config) as rebuilt:
        cuts = {day: expected_profiles(rebuilt.at(day)) for day in days}
    for day, expected in cuts.items():
        actual = read(
            production,
            lambda con, d=day, keys=list(expected): {
                k: history.profile_as_of(con, k, d) for k in keys
            },
        )
        for key, then in expected.items():
            if then is not None and not still_live(then["profile_id"]):
                then = None  # erased since: no history of it is kept
            if then is not None:
                then = _without_identifiers_erased_since(then, payloads_now)
            assert actual[key] == then, f"{key} as of {day} (batch size {batch})"


def _payloads(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    rows = con.execute("SELECT event_id, payload::VARCHAR FROM events").fetchall()
    return {event_id: json.loads(payload) for event_id, payload in rows}


def _without_identifiers_erased_since(
    profile: dict[str, Any], payloads_now: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The cut's profile, its timeline payloads without the identifiers an erasure since took
    out of them (README "CCPA": an event applied to another profile because an identity
    conflict kept one of its identifiers on the erased one loses that identifier). Only
    identifiers can go: every other part of the payload must be the cut's."""
    timeline = []
    for item in profile["timeline"]:
        now = payloads_now.get(item["event_id"])
        payload = item["payload"]
        if now is not None and "identifiers" in payload:
            kept = now.get("identifiers", {})
            payload = {**payload, "identifiers": {
                id_type: value for id_type, value in payload["identifiers"].items()
                if id_type in kept
            }}  # fmt: skip
        timeline.append({**item, "payload": payload})
    return {**profile, "timeline": timeline}


def test_an_erasure_takes_its_identifiers_out_of_another_profiles_past_timeline(
    tmp_path: Path,
) -> None:
    """Bob's identify also names Ann's email, which the customer_id limit keeps on Ann's
    profile, so it applies to Bob's without it; Ann is erased the next day. As of the first
    day, Bob's profile is as it was then, except that its event no longer shows Ann's email:
    no personal data of an erased person stays for history's sake."""
    ann, bob = {"customer_id": "C1", "email": "ann@x.io"}, {"customer_id": "C2"}
    log = [
        Identify(event_id="e1", timestamp_us=_on(1), traits={}, identifiers=normalise_all(ann)),
        Identify(event_id="e2", timestamp_us=_on(1, 13), traits={},
                 identifiers=normalise_all({**bob, "email": "ann@x.io"})),
        Ccpa(event_id="e3", timestamp_us=_on(2), request="delete",
             identifiers=normalise_all({"email": "ann@x.io"})),
    ]  # fmt: skip
    config = FoldConfig(id_limits={"customer_id": 1})
    path = _production(tmp_path, log, config, 1)
    then = read(path, lambda con: history.profile_as_of(con, "customer_id:C2", _march(1)))
    assert then is not None
    assert [item["payload"]["identifiers"] for item in then["timeline"]] == [bob]
    assert read(path, lambda con: history.profile_as_of(con, "email:ann@x.io", _march(1))) is None
    cut = rebuilt_cut(tmp_path, log, _march(1), config)
    before = read(cut, lambda con: queries.profile_view(con, "customer_id:C2"))
    assert before is not None  # the cut, which has not seen the erasure, still shows it
    assert [item["payload"]["identifiers"] for item in before["timeline"]] == [
        {**bob, "email": "ann@x.io"}
    ]


# -- hand-made: late events ---------------------------------------------------------------------

DAY_US = 86_400_000_000
MAR_1_US = cut_us(FIRST_DAY) - DAY_US  # midnight at the start of FIRST_DAY (2026-03-01)


def _on(day: int, hour: int = 12) -> int:
    """Event time on 2026-03-``day`` at ``hour`` (UTC), in µs."""
    return MAR_1_US + (day - 1) * DAY_US + hour * 3_600_000_000


def _march(day: int) -> date:
    return date(2026, 3, day)


def test_late_events_on_a_known_identifier_change_past_days_as_a_rebuild_of_the_cut(
    tmp_path: Path,
) -> None:
    ann, bob = normalise_all({"email": "ann@x.io"}), normalise_all({"phone": "+14155552671"})
    in_time = [
        Identify(event_id="a1", timestamp_us=_on(1), traits={}, identifiers=ann),
        Consent(event_id="a2", timestamp_us=_on(1, 13), channel="email", status="opted_in",
                identifiers=ann),
        Identify(event_id="b1", timestamp_us=_on(1), traits={}, identifiers=bob),
        Consent(event_id="b2", timestamp_us=_on(1, 13), channel="sms", status="opted_in",
                identifiers=bob),
        Track(event_id="a3", timestamp_us=_on(4), event="page_viewed", properties={},
              identifiers=ann),
    ]  # fmt: skip
    # Published after day 4's events, dated days 2 and 3: a rebuild of a cut at day 2 or 3
    # holds them, so as of those days they must count.
    late = [
        Consent(event_id="a4", timestamp_us=_on(2), channel="email", status="opted_out",
                identifiers=ann),
        Bounce(event_id="b3", timestamp_us=_on(3), channel="sms", bounce_type="hard",
               identifiers=bob),
        Track(event_id="b4", timestamp_us=_on(2, 8), event="app_opened", properties={},
              identifiers=bob),
    ]  # fmt: skip
    path = _fresh(tmp_path / "production.duckdb")
    fold_into_db(path, in_time, FoldConfig(), batch_size=2)
    days = [_march(d) for d in range(1, 6)]

    def figures(con: duckdb.DuckDBPyConnection) -> list[tuple[int, int, int, int]]:
        rows = history.daily_rows(con, days[0], days[-1])
        return [(r["total"], r["email_reachable"], r["sms_reachable"], r["mau"]) for r in rows]

    #                          total email sms mau
    assert read(path, figures) == [(2, 1, 1, 0), (2, 1, 1, 0), (2, 1, 1, 0), (2, 1, 1, 1),
                                   (2, 1, 1, 1)]  # fmt: skip
    fold_into_db(path, late, FoldConfig(), batch_size=2)
    assert read(path, figures) == [(2, 1, 1, 0), (2, 0, 1, 1), (2, 0, 0, 1), (2, 0, 0, 2),
                                   (2, 0, 0, 2)]  # fmt: skip
    for day in days:  # and each day is what a rebuild of the log cut there answers
        expected = rebuilt_counts(rebuilt_cut(tmp_path, [*in_time, *late], day), day)
        assert _as_of(path, day) == expected, f"as of {day}"
    bob_then = read(path, lambda con: history.profile_as_of(con, "phone:+14155552671", days[1]))
    assert bob_then is not None and [i["deliverable"] for i in bob_then["identifiers"]] == [True]
    bob_after = read(path, lambda con: history.profile_as_of(con, "phone:+14155552671", days[2]))
    assert bob_after is not None and [i["deliverable"] for i in bob_after["identifiers"]] == [False]


def test_a_late_event_on_a_profile_merged_since_is_on_that_profile_on_the_days_before(
    tmp_path: Path,
) -> None:
    """m@x.io's profile merged into anon-1's on day 5; a purchase by m@x.io dated day 3 is
    folded after that. On days 3 and 4 the purchase (and its activity) is m@x.io's profile's,
    as a fold of the log cut there has it, not the survivor's it landed on."""
    anon, m = normalise_all({"anonymous_id": "anon-1"}), normalise_all({"email": "m@x.io"})
    log = [
        Track(event_id="m0", timestamp_us=_on(1), event="page_viewed", properties={},
              identifiers=anon),
        Identify(event_id="m1", timestamp_us=_on(3, 8), traits={"first_name": "M"},
                 identifiers=m),
        Identify(event_id="m2", timestamp_us=_on(5, 8), traits={},
                 identifiers=normalise_all({"email": "m@x.io", "anonymous_id": "anon-1"})),
        Track(event_id="m3", timestamp_us=_on(3, 9), event="purchase",
              properties={"order_id": "O1", "revenue": 10.0}, identifiers=m),
        Identify(event_id="m4", timestamp_us=_on(4), traits={"last_name": "Late"},
                 identifiers=m),
    ]  # fmt: skip
    for batch, path, day, cut in _each_day_against_the_cut(tmp_path, log, range(1, 7)):
        for key in ("email:m@x.io", "anonymous_id:anon-1"):
            then = read(path, lambda con, k=key, d=day: history.profile_as_of(con, k, d))
            assert then == read(cut, lambda con, k=key: queries.profile_view(con, k)), (
                f"{key} as of {day}, batch {batch}"
            )


def _each_day_against_the_cut(
    tmp_path: Path, log: list[ProfileEvent], days: range
) -> Iterator[tuple[int, Path, date, Path]]:
    """(batch size, production, day, the log's cut there): the log folded in batches of 1 and
    of 10, its counts as of each day of March checked against a fold of the cut first."""
    for batch in (1, 10):
        path = _production(tmp_path, log, FoldConfig(), batch)
        for day in map(_march, days):
            cut = rebuilt_cut(tmp_path, log, day)
            assert _as_of(path, day) == rebuilt_counts(cut, day), f"as of {day}, batch {batch}"
            yield batch, path, day, cut


def test_a_late_event_dated_before_its_profile_began_moves_the_beginning_back(
    tmp_path: Path,
) -> None:
    """A phone's profile began on day 2; a track of it dated day 1 is folded after. As of day
    1 the profile exists (total 1, as active as the cut says), holding that track."""
    phone = normalise_all({"phone": "+14155550101"})
    log = [
        Identify(event_id="x1", timestamp_us=_on(2, 9), traits={"first_name": "S"},
                 identifiers=phone),
        Track(event_id="x2", timestamp_us=_on(1), event="page_viewed", properties={},
              identifiers=phone),
        Consent(event_id="x3", timestamp_us=_on(1, 13), channel="sms", status="opted_in",
                identifiers=phone),
    ]  # fmt: skip
    folded = {
        batch: path for batch, path, _, _ in _each_day_against_the_cut(tmp_path, log, range(1, 4))
    }
    for batch, path in folded.items():
        first = read(path, lambda con: history.profile_as_of(con, "phone:+14155550101", _march(1)))
        assert first is not None, f"batch {batch}"
        assert [item["event_id"] for item in first["timeline"]] == ["x3", "x2"]
        assert [i["type"] for i in first["identifiers"]] == ["phone"]
        last = read(path, lambda con: history.profile_as_of(con, "phone:+14155550101", date.max))
        assert last == read(
            path, lambda con: history.profile_as_of(con, "phone:+14155550101", _march(3))
        )  # the last day there is: no overflow


def test_a_late_event_that_links_identifiers_resolves_as_the_full_fold_did_not_as_the_cut(
    tmp_path: Path,
) -> None:
    """The documented divergence (README "Profiles over time"): customer_id C2 arrives first
    (dated Mar 5) on the profile of email e; then a late event dated Mar 2 links e with C1.
    With one customer_id per profile the engine keeps C1 out (a conflict: the event lands on
    a profile of its own), so as of Mar 3 e's profile has neither C1 nor C2 and C1 is another
    profile, whereas a fold of the log cut at Mar 3 links C1 to e's profile."""
    e = {"email": "e@x.io"}
    log = [
        Identify(event_id="e1", timestamp_us=_on(1), traits={"tier": "a"},
                 identifiers=normalise_all(e)),
        Identify(event_id="e2", timestamp_us=_on(5), traits={},
                 identifiers=normalise_all({**e, "customer_id": "C2"})),
        Identify(event_id="e3", timestamp_us=_on(2), traits={"tier": "b"},
                 identifiers=normalise_all({**e, "customer_id": "C1"})),  # late
    ]  # fmt: skip
    config = FoldConfig(id_limits={"customer_id": 1})
    production = _production(tmp_path, log, config, batch=1)
    cut = rebuilt_cut(tmp_path, log, _march(3), config)

    def as_of(key: str, day: int) -> dict[str, Any] | None:
        found: dict[str, Any] | None = read(
            production, lambda con: history.profile_as_of(con, key, _march(day))
        )
        return found

    def summary(document: dict[str, Any] | None) -> tuple[list[str], Any]:
        assert document is not None
        ids = sorted(f"{i['type']}:{i['value']}" for i in document["identifiers"])
        return ids, document["traits"]["tier"]["value"]

    rebuilt = read(cut, lambda con: queries.profile_view(con, "email:e@x.io"))
    assert summary(rebuilt) == (["customer_id:C1", "email:e@x.io"], "b")  # the cut: linked
    e_then, c1_then = as_of("email:e@x.io", 3), as_of("customer_id:C1", 3)
    assert summary(e_then) == (["email:e@x.io"], "a")  # the engine: neither C1 nor C2 then
    assert summary(c1_then) == (["customer_id:C1"], "b")  # and C1 a profile of its own
    assert e_then is not None and c1_then is not None
    assert c1_then["profile_id"] != e_then["profile_id"]
    assert _as_of(production, _march(3))["total"] == 2
    assert rebuilt_counts(cut, _march(3))["total"] == 1
    # Where identity did not diverge yet, the engine and the cut agree.
    assert _as_of(production, _march(1)) == rebuilt_counts(
        rebuilt_cut(tmp_path, log, _march(1), config), _march(1)
    )
    # After the last event the engine's answer is the full fold's (C2 on e's profile).
    assert summary(as_of("email:e@x.io", 6)) == (["customer_id:C2", "email:e@x.io"], "a")
    assert as_of("email:e@x.io", 6) == read(
        production, lambda con: queries.profile_view(con, "email:e@x.io")
    )


HISTORY_TABLES = ("profile_lineage", "identifier_attachments", "identifier_day_states",
                  "profile_reachability_history", "activity_days", "event_landings")  # fmt: skip


def _history_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    return read(
        path,
        lambda con: {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
                     for t in HISTORY_TABLES},
    )  # fmt: skip


def _spans(path: Path) -> list[tuple[Any, ...]]:
    return read(
        path,
        lambda con: con.execute(
            "SELECT valid_from, valid_to, email_soft_bounces FROM profile_reachability_history"
            " ORDER BY valid_from"
        ).fetchall(),
    )


def test_a_span_a_later_batch_leaves_as_it_was_goes_on_rather_than_repeating(
    tmp_path: Path,
) -> None:
    """Ann is seen on Mar 1; on Mar 3 a soft bounce (one batch), then a visit the same day
    (the next batch) that resets her soft bounces: at the end of Mar 3 her inputs are those
    of Mar 1 again, so Mar 1's span goes on, as in a fold of the log in one batch."""
    log = [
        identify(0, eid="s-1", email="ann@example.com"),
        bounce(2 * 1440 + 60, "email", "soft", eid="s-2", email="ann@example.com"),
        track(2 * 1440 + 600, eid="s-3", email="ann@example.com"),
    ]
    in_two = _fresh(tmp_path / "two.duckdb")
    fold_into_db(in_two, log, FoldConfig(), batch_size=2)
    assert _spans(in_two) == [(_march(1), None, 0)]
    in_one = _fresh(tmp_path / "one.duckdb")
    fold_into_db(in_one, log, FoldConfig(), batch_size=len(log))
    assert _history_rows(in_two) == _history_rows(in_one)


@settings(
    max_examples=examples(15),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(log=people_logs(), limits=LIMITS, batch=st.integers(1, 6))
def test_the_history_tables_are_the_same_whatever_the_batch_sizes(
    tmp_path: Path, log: list[ProfileEvent], limits: dict[str, int], batch: int
) -> None:
    """Not only the answers: every row of every history table, so that a projection
    rebuilt from the log (other batches than the consumer's) is the same projection."""
    config = FoldConfig(id_limits=limits)
    in_batches = _production(tmp_path, log, config, batch)
    whole = _fresh(tmp_path / "whole.duckdb")
    fold_into_db(whole, log, config, batch_size=max(1, len(log)))
    assert _history_rows(in_batches) == _history_rows(whole)
