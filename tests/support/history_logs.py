"""Random logs for the history tests, and the oracle: a rebuild of the log cut at a day.

A log is made of *people* (identity components: each has its own identifiers, and events
link them in every way: merges, per-type limit conflicts, erasures). Each person's events are
in event-time order; people are interleaved at random, so the log as a whole is out of time
order. That is the condition under which "as of day D" of the engine's history equals a
rebuild from the events before the end of D (README "Profiles over time").
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
from hypothesis import strategies as st

from profile_engine.events import (
    Bounce,
    Ccpa,
    Consent,
    Identify,
    ProfileEvent,
    Subscription,
    Track,
    datetime_to_us,
)
from profile_engine.fold import FoldConfig
from profile_engine.identifiers import normalise_all
from projections import queries
from projections.readonly import open_readonly
from projections.store import ProjectionStore
from tests.support.spec_projection import spec_fold_into_db, write_spec_fold

FIRST_DAY = date(2026, 3, 1)
DAYS = 6  # events fall on FIRST_DAY .. FIRST_DAY + DAYS - 1
CHANNEL_OF = {"email": "email", "phone": "sms", "push_token": "push"}


def cut_us(day: date) -> int:
    """Midnight (UTC) after ``day``, in µs: as of ``day`` means event time before this."""
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    return datetime_to_us(moment)


def _pools(person: int) -> dict[str, list[str]]:
    return {
        "customer_id": [f"C{person}1", f"C{person}2"],
        "email": [f"p{person}a@x.io", f"p{person}b@x.io"],
        "phone": [f"+1415555{2600 + 10 * person + n}" for n in range(2)],
        "push_token": [f"tok-{person}-{n}" for n in range(2)],
        "anonymous_id": [f"anon-{person}-{n}" for n in range(3)],
    }


@st.composite
def _identifiers(draw: Any, person: int) -> dict[str, str]:
    ids: dict[str, str] = {}
    for id_type, pool in _pools(person).items():
        if draw(st.integers(0, 3)) == 0:
            ids[id_type] = draw(st.sampled_from(pool))
    if not ids:
        ids["anonymous_id"] = draw(st.sampled_from(_pools(person)["anonymous_id"]))
    return ids


@st.composite
def _event(draw: Any, person: int, number: int, timestamp_us: int) -> ProfileEvent:
    raw_ids = draw(_identifiers(person))
    common: dict[str, Any] = {
        "event_id": f"e{number:04d}",
        "timestamp_us": timestamp_us,
        "identifiers": normalise_all(raw_ids),
    }
    kinds = ["identify", "track", "track", "purchase", "subscription", "ccpa", "delete"]
    messaging = [t for t in CHANNEL_OF if t in raw_ids]
    if messaging:
        kinds += ["consent", "consent", "consent", "bounce", "bounce"]
    kind = draw(st.sampled_from(kinds))
    if kind == "identify":
        traits = {
            draw(st.sampled_from(["city", "tier", "first_name"])): draw(
                st.sampled_from(["a", "b", None, 3, 2.5, True])
            )
            for _ in range(draw(st.integers(0, 2)))
        }
        return Identify(traits=traits, **common)
    if kind == "track":
        name = draw(st.sampled_from(["page_viewed", "message_sent", "app_opened"]))
        return Track(event=name, properties={"n": draw(st.integers(0, 3))}, **common)
    if kind == "purchase":
        order = draw(st.sampled_from(["o1", "o2", "o3"]))
        revenue = draw(st.sampled_from([5.0, 7.5, 0.1, 19.99]))
        return Track(event="purchase", properties={"order_id": order, "revenue": revenue},
                     **common)  # fmt: skip
    if kind == "subscription":
        return Subscription(
            list_id=draw(st.sampled_from(["news", "deals"])),
            channel=draw(st.sampled_from(["email", "sms", "push"])),
            status=draw(st.sampled_from(["subscribed", "unsubscribed", "unconfirmed"])),
            **common,
        )
    if kind == "ccpa":
        return Ccpa(request=draw(st.sampled_from(["opt_out", "opt_in"])), **common)
    if kind == "delete":
        return Ccpa(request="delete", **common)
    channel = CHANNEL_OF[draw(st.sampled_from(messaging))]
    if kind == "consent":
        status = draw(st.sampled_from(["opted_in", "opted_out", "pending", "unknown"]))
        return Consent(channel=channel, status=status, **common)
    bounce_type = draw(st.sampled_from(["soft", "soft", "soft", "hard", "complaint"]))
    return Bounce(channel=channel, bounce_type=bounce_type, **common)


@st.composite
def people_logs(draw: Any, max_people: int = 4, max_events: int = 14) -> list[ProfileEvent]:
    """People's events, each person's in time order (equal times common), interleaved."""
    start = datetime_to_us(datetime(FIRST_DAY.year, FIRST_DAY.month, FIRST_DAY.day, tzinfo=UTC))
    queues: list[list[ProfileEvent]] = []
    number = 0
    for person in range(draw(st.integers(1, max_people))):
        # A few distinct hours per day, so equal timestamps happen.
        slots = sorted(
            draw(st.lists(st.tuples(st.integers(0, DAYS - 1), st.sampled_from([0, 9, 23])),
                          min_size=1, max_size=max_events))
        )  # fmt: skip
        queue = []
        for day, hour in slots:
            number += 1
            moment = start + (day * 24 + hour) * 3_600_000_000
            queue.append(draw(_event(person, number, moment)))
        queues.append(queue)
    log: list[ProfileEvent] = []
    while any(queues):
        chosen = draw(st.sampled_from([q for q in queues if q]))
        log.append(chosen.pop(0))
        if draw(st.integers(0, 12)) == 0:
            log.append(draw(st.sampled_from(log)))  # a redelivery
    return log


def rebuilt_cut(
    directory: Path, log: list[ProfileEvent], day: date, config: FoldConfig | None = None
) -> Path:
    """The specification fold of the events before the end of ``day``, in log order."""
    path = directory / f"cut-{day}.duckdb"
    for stale in (path, Path(f"{path}.wal")):
        stale.unlink(missing_ok=True)
    cut = cut_us(day)
    spec_fold_into_db(path, [e for e in log if e.timestamp_us < cut], config)
    return path


class CutOracle:
    """The specification fold of the log cut at each asked day, written one after another
    into one projection (a projection per cut would cost more than the folds)."""

    def __init__(self, directory: Path, log: list[ProfileEvent], config: FoldConfig | None) -> None:
        path = directory / "cuts.duckdb"
        for stale in (path, Path(f"{path}.wal")):
            stale.unlink(missing_ok=True)
        self.log, self.config = log, config
        self.store = ProjectionStore(path)
        self.store.fold_config(config)
        self._loaded: int | None = None

    def at(self, day: date) -> duckdb.DuckDBPyConnection:
        """The projection holding the rebuild of the events before the end of ``day``."""
        cut = [e for e in self.log if e.timestamp_us < cut_us(day)]
        if len(cut) != self._loaded:  # the same size is the same cut (cuts only grow)
            write_spec_fold(self.store, cut, self.config, replace=True)
            self._loaded = len(cut)
        return self.store.con

    def counts(self, day: date) -> dict[str, Any]:
        return queries.counts(self.at(day), day.strftime("%Y-%m"))

    def __enter__(self) -> CutOracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close()


def read(path: Path, work: Any) -> Any:
    con = open_readonly(str(path))
    try:
        return work(con)
    finally:
        con.close()


def rebuilt_counts(path: Path, day: date) -> dict[str, Any]:
    return read(path, lambda con: queries.counts(con, day.strftime("%Y-%m")))


def days_to_ask() -> list[date]:
    """The day before the first event, every day with events, and one after."""
    return [FIRST_DAY + timedelta(days=n) for n in range(-1, DAYS + 1)]
