"""Profiles over time: counts as of a day equal a rebuild of the log cut at that day.

The oracle is the specification fold (profile_engine.fold) of only the events before the end
of day D, in log order; the production fold keeps history batch by batch (random batch
sizes) and answers for every D from it. Logs follow the documented condition (each person's
events in time order, people interleaved), with merges, limit conflicts, erasures, consent
flips, bounces, CCPA, equal timestamps and redeliveries.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import duckdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profile_engine.events import Consent, Identify, ProfileEvent
from profile_engine.fold import FoldConfig
from profile_engine.identifiers import normalise_all
from projections import history, queries
from projections.settings import set_setting
from tests.support.folding import fold_into_db
from tests.support.history_logs import (
    FIRST_DAY,
    cut_us,
    days_to_ask,
    people_logs,
    read,
    rebuilt_counts,
    rebuilt_cut,
)

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
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(log=people_logs(), limits=LIMITS, batch=st.integers(1, 15))
def test_counts_as_of_each_day_equal_a_rebuild_of_the_cut(
    tmp_path: Path, log: list[ProfileEvent], limits: dict[str, int], batch: int
) -> None:
    config = FoldConfig(id_limits=limits)
    production = _production(tmp_path, log, config, batch)
    for day in days_to_ask():
        expected = rebuilt_counts(rebuilt_cut(tmp_path, log, day, config), day)
        assert _as_of(production, day) == expected, f"as of {day} (batch size {batch})"


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(log=people_logs(), batch=st.integers(1, 15))
def test_the_daily_series_is_the_as_of_counts_of_each_day(
    tmp_path: Path, log: list[ProfileEvent], batch: int
) -> None:
    production = _production(tmp_path, log, FoldConfig(), batch)
    days = days_to_ask()
    series = read(production, lambda con: history.daily_rows(con, days[0], days[-1]))
    assert [row["day"] for row in series] == days
    for row in series:
        as_of = _as_of(production, row["day"])
        assert (row["total"], row["reachable_any"], row["mau"]) == (
            as_of["total"], as_of["reachable_any"], as_of["mau"],
        )  # fmt: skip
        for channel, figures in as_of["channels"].items():
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


def _lookup_keys(log: list[ProfileEvent], path: Path) -> list[str]:
    """Every identifier of the log, and every profile id the rebuilt cut knows."""
    keys = {f"{i.id_type}:{i.value}" for e in log for i in e.identifiers}

    def profile_ids(con: duckdb.DuckDBPyConnection) -> list[str]:
        rows = con.execute(
            "SELECT profile_id::VARCHAR FROM profiles UNION ALL"
            " SELECT merged_profile_id::VARCHAR FROM profile_merges"
        ).fetchall()
        return [f"profile_id:{row[0]}" for row in rows]

    return sorted(keys | set(read(path, profile_ids)))


def _still_live(whole: Path, profile_id: str) -> bool:
    """Whether a profile (or the one it merged into) is live after the whole log."""
    key = f"profile_id:{profile_id}"
    return read(whole, lambda con: queries.profile_view(con, key)) is not None


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(log=people_logs(max_people=3), limits=LIMITS, batch=st.integers(1, 15))
def test_a_profile_as_of_each_day_equals_the_profile_in_a_rebuild_of_the_cut(
    tmp_path: Path, log: list[ProfileEvent], limits: dict[str, int], batch: int
) -> None:
    config = FoldConfig(id_limits=limits)
    production = _production(tmp_path, log, config, batch)
    whole = rebuilt_cut(tmp_path, log, date(2100, 1, 1), config)
    for day in days_to_ask():
        cut = rebuilt_cut(tmp_path, log, day, config)
        for key in _lookup_keys(log, cut):
            expected = read(cut, lambda con, k=key: queries.profile_view(con, k))
            if expected is not None and not _still_live(whole, expected["profile_id"]):
                expected = None  # erased since: no history of it is kept
            actual = read(production, lambda con, k=key, d=day: history.profile_as_of(con, k, d))
            assert actual == expected, f"{key} as of {day} (batch size {batch})"
