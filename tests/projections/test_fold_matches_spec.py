"""The production fold (set-based batches over DuckDB) writes exactly the specification's tables.

The oracle is ``profile_engine.fold.ProfileFold`` folding the whole log in memory
(tests/support/spec_projection.py). Random logs mix people who share identifiers (merges and
per-type limit conflicts), erasures, out-of-order and equal timestamps, redeliveries, consent
flips, bounces, subscriptions, orders and CCPA requests; the production fold takes them in
random batch sizes, each batch paging in its stored world and committing, as a consumer does.
PROFILE_ENGINE_PROPERTY_SCALE=10 runs ten times as many examples locally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profile_engine.events import ProfileEvent
from profile_engine.fold import FoldConfig
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
from tests.snapshots import dump
from tests.support.folding import fold_into_db
from tests.support.properties import examples
from tests.support.spec_projection import spec_fold_into_db

# A small pool of identifiers shared between a few people, so that events link them in
# every possible way: merges, and conflicts when a limit forbids a link.
EMAILS = ["a@x.io", "b@x.io", "c@x.io"]
PHONES = ["+14155552671", "+14155552672"]
CUSTOMERS = ["C1", "C2", "C3"]
ANONYMOUS = ["anon-1", "anon-2", "anon-3", "anon-4"]
TOKENS = ["tok-1", "tok-2"]
CHANNEL_OF = {"email": "email", "phone": "sms", "push_token": "push"}


@st.composite
def identifiers(draw: Any) -> dict[str, str]:
    ids: dict[str, str] = {}
    for id_type, pool in (("customer_id", CUSTOMERS), ("email", EMAILS), ("phone", PHONES),
                          ("push_token", TOKENS), ("anonymous_id", ANONYMOUS)):  # fmt: skip
        if draw(st.integers(0, 3)) == 0:
            ids[id_type] = draw(st.sampled_from(pool))
    if not ids:
        ids["anonymous_id"] = draw(st.sampled_from(ANONYMOUS))
    return ids


@st.composite
def events(draw: Any, number: int) -> ProfileEvent:
    ids = draw(identifiers())
    minute = draw(st.integers(0, 8))  # narrow: equal and out-of-order times are common
    eid = f"e{number:03d}"
    kinds = ["identify", "track", "purchase", "subscription", "ccpa", "delete"]
    messaging = [t for t in CHANNEL_OF if t in ids]
    if messaging:
        kinds += ["consent", "consent", "bounce", "bounce"]
    kind = draw(st.sampled_from(kinds))
    if kind == "identify":
        traits = {
            draw(st.sampled_from(["city", "tier", "first_name"])): draw(
                st.sampled_from(["a", "b", None, 3, 2.5, True])
            )
            for _ in range(draw(st.integers(0, 2)))
        }
        return identify(minute, traits, eid=eid, **ids)
    if kind == "track":
        name = draw(st.sampled_from(["page_viewed", "message_sent"]))
        return track(minute, name, {"n": draw(st.integers(0, 3))}, eid=eid, **ids)
    if kind == "purchase":
        order = draw(st.sampled_from(["o1", "o2", "o3"]))
        revenue = draw(st.sampled_from([5.0, 7.5, 0.1, 0.2, 19.99]))
        return purchase(minute, order, revenue, eid=eid, **ids)
    if kind == "subscription":
        status = draw(st.sampled_from(["subscribed", "unsubscribed", "unconfirmed"]))
        channel = draw(st.sampled_from(["email", "sms", "push"]))
        return subscription(minute, draw(st.sampled_from(["news", "deals"])), channel, status,
                            eid=eid, **ids)  # fmt: skip
    if kind == "ccpa":
        return ccpa(minute, draw(st.sampled_from(["opt_out", "opt_in"])), eid=eid, **ids)
    if kind == "delete":
        return ccpa(minute, "delete", eid=eid, **ids)
    channel = CHANNEL_OF[draw(st.sampled_from(messaging))]
    if kind == "consent":
        status = draw(st.sampled_from(["opted_in", "opted_out", "pending", "unknown"]))
        return consent(minute, channel, status, eid=eid, **ids)
    bounce_type = draw(st.sampled_from(["soft", "soft", "soft", "hard", "complaint"]))
    return bounce(minute, channel, bounce_type, eid=eid, **ids)


@st.composite
def logs(draw: Any) -> list[ProfileEvent]:
    log: list[ProfileEvent] = []
    for number in range(draw(st.integers(1, 40))):
        if log and draw(st.integers(0, 9)) == 0:
            log.append(draw(st.sampled_from(log)))  # a redelivery of an earlier event
        else:
            log.append(draw(events(number)))
    return log


LIMITS = st.sampled_from(
    [{"customer_id": 1}, {"customer_id": 1, "email": 2}, {"customer_id": 2, "phone": 1}, {}]
)


def _compare(tmp_path: Path, log: list[ProfileEvent], config: FoldConfig, batch: int) -> None:
    spec, production = tmp_path / "spec.duckdb", tmp_path / "production.duckdb"
    for path in (spec, production, Path(f"{spec}.wal"), Path(f"{production}.wal")):
        path.unlink(missing_ok=True)
    spec_fold_into_db(spec, log, config)
    fold_into_db(production, log, config, batch_size=batch)
    expected, actual = dump(spec), dump(production)
    for table, rows in expected.items():
        assert actual[table] == rows, f"table {table} differs (batch size {batch})"


@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(log=logs(), limits=LIMITS, batch=st.integers(1, 12))
def test_every_table_equals_the_specification_fold(
    tmp_path: Path, log: list[ProfileEvent], limits: dict[str, int], batch: int
) -> None:
    _compare(tmp_path, log, FoldConfig(id_limits=limits), batch)


def test_a_generated_stream_gives_the_specification_tables(tmp_path: Path) -> None:
    from profile_engine.contract import ContractError, parse_event

    log = []
    for raw in generate_events(20_000, seed=5):
        try:
            log.append(parse_event(raw))
        except (ContractError, TypeError):
            continue
    _compare(tmp_path, log, FoldConfig(), batch=3_000)
    assert dump(tmp_path / "production.duckdb")["profile_merges"]  # merges were exercised


def test_the_tables_are_the_same_when_every_column_is_converted_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch writer converts its columns ARROW_STEP values at a time, and the pipeline
    lets go of a batch's records a slice at a time: with steps of a few values both happen
    in every batch, and the tables are still the specification's."""
    from consumers import pipeline
    from profile_engine.contract import ContractError, parse_event
    from projections import rows

    monkeypatch.setattr(rows, "ARROW_STEP", 7)
    monkeypatch.setattr(pipeline, "RELEASE_STEP", 5)
    log = []
    for raw in generate_events(4_000, seed=11):
        try:
            log.append(parse_event(raw))
        except (ContractError, TypeError):
            continue
    _compare(tmp_path, log, FoldConfig(), batch=700)
