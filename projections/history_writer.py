"""The history tables, kept batch by batch in the batch's transaction (see schema.sql).

History is the engine's own decisions, each stamped with the event time of the event that
caused it: profile creations, merges and erasures (``profile_lineage``), which profile each
identifier attached to (``identifier_attachments``), each identifier's state at the end of
every UTC day on which events changed it (``identifier_day_states``), the first active day of
a month per profile and event name (``activity_days``) and, for events whose profile was
merged away, the profile they landed on (``event_landings``). From these,
``profile_reachability_history`` holds the reachability inputs of each profile at the end of
every UTC day on which they changed, computed with the same rule SQL that writes
``profile_reachability_inputs``. A late event (an earlier event time than what was already
folded) lands in its own day, so the days after it move, as they would in a rebuild.

**Incremental.** A batch rewrites only what its events can have changed, from the earliest
day they touch:

- an identifier's state is a merge of its facts that does not depend on their order (latest
  wins by (time, event id), counts add, soft bounces after the last seen), so the state at
  the end of day d after the batch is the stored state at d merged with the batch's facts up
  to d: only the rows from the batch's first day for that identifier on are rewritten, from
  the stored row before them;
- a profile tree (a root with everything merged into it) is recomputed from the earliest day
  of any of its changes in the batch that can move its inputs (identifier states other than
  a non-messaging identifier seen again, attachments, creations, merges, erasures): the
  stored span running into that day is the starting point, and only the days from then on
  on which something the inputs read moved are judged again, from only the identifiers the
  inputs read (see ``_states_and_change_days``);
- the stored day states it reads are found without scanning identifier_day_states (the
  largest history table, keyed by random ids that no zonemap narrows): the rows from the
  batch's earliest day on, by a filter on ``day``, and before them each identifier's current
  state, from the identifier rows the batch writer paged in (see ``_prior_states``).
  activity_days is matched from the batch's earliest month on in the same way.

So a batch costs what its own events touch, not the length of the history behind them; in
time order that is the last few days. (Lookups by profile or identifier id in
identifier_attachments, profile_lineage, profile_merges, profile_reachability_history and,
for merges, events and event_landings still scan the id column, filtered by the batch's ids:
DuckDB joins by hash, not by index, and these ids are random.) Every row of every history
table is the same whatever the batch sizes (property tests fold random logs in batches and
in one): a span is written only where the inputs change, also across a batch boundary (see
``_recompute_spans``).

``write_history`` runs first in ``batch_writer.write_changes``, right after the stored
identifier rows of the batch's profiles are paged in: it reads the stored state from before
the batch (the timeline before merges move it, identifier states before the batch's). Rows
keyed by identifier, and the landings, of an erased profile are deleted with it; what stays
holds no identifier value or trait.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from profile_engine.batch_fold import BatchChanges, HistoryLog
from projections.connection import registered
from projections.rows import NEVER_US, REACHABILITY_INPUT_COLUMNS, arrow_array
from projections.store import arrow

_STR = pa.string()
_I64 = pa.int64()

_INPUTS = REACHABILITY_INPUT_COLUMNS
_TEMP_TABLES = ("_h_att", "_h_landed", "_h_first_effect", "_h_moved", "_h_batch", "_h_id_from",
                "_h_old", "_h_late", "_h_running", "_h_members",
                "_h_tree_from", "_h_lineage", "_h_intervals", "_h_spans", "_h_owned",
                "_h_values", "_h_want", "_h_current", "_h_recent", "_h_prior", "_h_lookup",
                "_h_states", "_h_change_days", "_h_seeds", "_h_activity_batch")  # fmt: skip


def write_history(con: duckdb.DuckDBPyConnection, changes: BatchChanges, applied: pa.Table) -> None:
    """Bring the history tables up to date with one batch (inside its transaction).
    ``applied``: the batch writer's table of the applied events (one row each, in order:
    event_id, type, ts, event_name, in_timeline, pid its final profile)."""
    log = changes.history
    tables = _tables(changes, log, applied)
    with registered(con, **tables):
        _lineage(con, log)
        _history_landings(con)
        _activity(con)
        _landings(con, log)
        has_effects = len(tables["_h_effects"]) > 0
        if has_effects:
            _batch_facts(con)  # before the batch's attachments: effects on stored ones
        _earlier_starts(con)
        con.execute("INSERT INTO identifier_attachments SELECT * EXCLUDE (id_value) FROM _h_att")
        trees = bool(log.roots) and _members(con, has_effects)
        if trees:
            _root_intervals(con)
            _owned_spans(con)
        since = _prior_states(con, has_effects, trees)
        if has_effects:
            _identifier_states(con, since)
        if trees:
            _owned_identifiers(con, since)
            _states_and_change_days(con, since)
            _recompute_spans(con)
        if log.erasures:
            _forget_erased(con)
    for name in _TEMP_TABLES:
        con.execute(f"DROP TABLE IF EXISTS {name}")


def _columns(
    names: tuple[str, ...], types: tuple[pa.DataType, ...], rows: Sequence[tuple[Any, ...]]
) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    return pa.table({n: arrow_array(c, t) for n, t, c in zip(names, types, columns, strict=True)})


_EFFECT_NAMES = ("id_key", "inc", "us", "eid", "status")
_EFFECT_TYPES = (_STR, _STR, _I64, _STR, _STR)


def _effects(log: HistoryLog) -> pa.Table:
    """Every identifier effect of the batch as one table (kind, key, incarnation, time, event
    id, status, and ``reads``: whether it can move a reachability input), built column by
    column from the log's tuples (no per-row Python)."""
    parts = []
    for kind, rows, names, reads in (
        ("seen", log.seen, ("id_key", "inc", "us", "eid"), True),
        ("seen", log.seen_unread, ("id_key", "inc", "us", "eid"), False),
        ("consent", log.consents, ("id_key", "inc", "status", "us", "eid"), True),
        ("bounce", log.bounces, ("id_key", "inc", "status", "us"), True),
        ("ccpa", log.ccpa, ("id_key", "inc", "status", "us", "eid"), True),
    ):
        if not rows:
            continue
        given = dict(zip(names, zip(*rows, strict=True), strict=True))
        columns = {
            name: arrow_array(given[name], kind_type)
            if name in given
            else pa.nulls(len(rows), kind_type)
            for name, kind_type in zip(_EFFECT_NAMES, _EFFECT_TYPES, strict=True)
        }
        columns["kind"] = arrow_array([kind] * len(rows), _STR)
        columns["reads"] = arrow_array([reads] * len(rows), pa.bool_())
        parts.append(pa.table(columns))
    if not parts:
        return _columns((*_EFFECT_NAMES, "kind", "reads"), (*_EFFECT_TYPES, _STR, pa.bool_()), [])
    return pa.concat_tables(parts)


def _tables(changes: BatchChanges, log: HistoryLog, applied: pa.Table) -> dict[str, pa.Table]:
    # The batch writer's row per applied event, with the profile it landed on (before the
    # batch's later merges): for activity_days and event_landings.
    landed = arrow_array([a.profile_id for a in changes.applied], _STR)
    anchors = arrow_array([a.anchor for a in changes.applied], _STR)
    return {
        "_h_created": _columns(
            ("pid", "created_us"), (_STR, _I64),
            [(pid, key[0]) for pid, key in changes.created_all.items()],
        ),
        "_h_merges": _columns(("merged", "into", "at_us"), (_STR, _STR, _I64), log.merges),
        "_h_erasures": _columns(("pid", "at_us"), (_STR, _I64), log.erasures),
        "_h_roots": _columns(("pid", "root"), (_STR, _STR), list(log.roots.items())),
        "_h_attached": _columns(
            ("id_key", "id_type", "valid", "id_value", "pid", "at_us"),
            (_STR, _STR, pa.bool_(), _STR, _STR, _I64),
            log.attached,
        ),
        "_h_effects": _effects(log),
        "_h_applied": applied.select(["event_id", "type", "ts", "event_name", "in_timeline", "pid"])
        .append_column("landed", landed).append_column("anchor", anchors),
    }  # fmt: skip


# -- the facts ------------------------------------------------------------------------------


def _lineage(con: duckdb.DuckDBPyConnection, log: HistoryLog) -> None:
    con.execute(
        "INSERT INTO profile_lineage SELECT pid::UUID, make_timestamp(created_us), NULL, NULL,"
        " NULL FROM _h_created"
    )
    if log.merges:
        con.execute(
            "UPDATE profile_lineage SET merged_into = m.into::UUID,"
            " merged_at = make_timestamp(m.at_us) FROM _h_merges AS m"
            " WHERE profile_lineage.profile_id = m.merged::UUID"
        )
    if log.erasures:
        con.execute(
            "UPDATE profile_lineage SET erased_at = make_timestamp(e.at_us) FROM _h_erasures AS e"
            " WHERE profile_lineage.profile_id = e.pid::UUID"
        )


def _history_landings(con: duckdb.DuckDBPyConnection) -> None:
    """``_h_landed``: the batch's applied events, each with the profile history dates it on.
    That is the profile it landed on, unless it is a late event, dated before the day the
    profile its anchor identifier attached to joined that one's tree (the latest merge day on
    the way, as ``_root_intervals`` counts it): then the attached profile, on which a fold of
    the log cut at its day would have found it. Runs after the batch's merges reach
    profile_lineage, so a chain through them is followed too."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _h_landed AS
        WITH anchors AS MATERIALIZED (
            SELECT DISTINCT anchor FROM _h_applied WHERE anchor IS NOT NULL
        ), in_batch AS MATERIALIZED (
            SELECT id_key AS anchor, arg_max(pid, at_us) AS att FROM _h_attached
            WHERE id_key IN (SELECT anchor FROM anchors) GROUP BY id_key
        ), attached AS MATERIALIZED (
            SELECT * FROM in_batch
            UNION ALL
            SELECT id_key::VARCHAR, profile_id::VARCHAR FROM identifier_attachments
            WHERE id_key IN (SELECT anchor::UUID FROM anchors)
                AND id_key::VARCHAR NOT IN (SELECT anchor FROM in_batch)
        ), elsewhere AS MATERIALIZED (
            SELECT a.event_id, a.ts, t.att::UUID AS att, a.landed::UUID AS landed
            FROM _h_applied AS a JOIN attached AS t USING (anchor) WHERE t.att <> a.landed
        ), chain AS MATERIALIZED (
            WITH RECURSIVE up(event_id, node, joined_day, target) AS (
                SELECT event_id, att, DATE '0001-01-01', landed FROM elsewhere
                UNION ALL
                SELECT u.event_id, l.merged_into, greatest(u.joined_day, l.merged_at::DATE),
                    u.target
                FROM up AS u JOIN profile_lineage AS l ON l.profile_id = u.node
                WHERE u.node <> u.target AND l.merged_into IS NOT NULL
            )
            SELECT event_id, joined_day FROM up WHERE node = target
        ), earlier AS (
            SELECT e.event_id, e.att FROM elsewhere AS e JOIN chain AS c USING (event_id)
            WHERE e.ts::DATE < c.joined_day
        )
        SELECT a.* EXCLUDE (landed, anchor), coalesce(r.att::VARCHAR, a.landed) AS landed
        FROM _h_applied AS a LEFT JOIN earlier AS r USING (event_id)
        """
    )


def _earlier_starts(con: duckdb.DuckDBPyConnection) -> None:
    """A late event dated before its profile began, or before an identifier of it attached,
    moves that start back to its time (a fold of the log cut there would have begun them
    with it): ``profile_lineage.created_at``, the attachments' ``attached_at`` (the batch's
    own in ``_h_att``), and in ``_h_moved`` the profiles and days, so that their trees are
    judged again from there (see ``_members``)."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _h_first_effect AS"
        " SELECT id_key, inc, min(us) AS us FROM _h_effects GROUP BY ALL"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _h_att AS SELECT a.id_key::UUID AS id_key,"
        " a.pid::UUID AS att, a.id_type, a.valid,"
        " make_timestamp(least(a.at_us, coalesce(f.us, a.at_us))) AS attached_at, a.id_value"
        " FROM _h_attached AS a LEFT JOIN _h_first_effect AS f"
        "  ON f.id_key = a.id_key AND f.inc = a.pid"
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _h_moved AS
        WITH began AS (
            SELECT landed::UUID AS pid, min(ts) AS first FROM _h_landed GROUP BY ALL
        ), profiles_moved AS (
            SELECT l.profile_id AS pid, b.first AS since, NULL::UUID AS id_key
            FROM profile_lineage AS l JOIN began AS b ON l.profile_id = b.pid
            WHERE l.created_at > b.first
        ), stored AS (
            SELECT id_key::UUID AS id_key, make_timestamp(us) AS first
            FROM _h_first_effect WHERE inc IS NULL
        ), attachments_moved AS (
            SELECT a.profile_id AS pid, s.first AS since, a.id_key
            FROM identifier_attachments AS a JOIN stored AS s USING (id_key)
            WHERE a.attached_at > s.first
        )
        SELECT * FROM profiles_moved UNION ALL SELECT * FROM attachments_moved
        """
    )
    if not _any(con, "_h_moved"):
        return
    con.execute(
        "UPDATE profile_lineage SET created_at = m.since FROM _h_moved AS m"
        " WHERE m.id_key IS NULL AND profile_lineage.profile_id = m.pid"
    )
    con.execute(
        "UPDATE identifier_attachments SET attached_at = m.since FROM _h_moved AS m"
        " WHERE m.id_key IS NOT NULL AND identifier_attachments.id_key = m.id_key"
        " AND identifier_attachments.profile_id = m.pid"
    )


def _activity(con: duckdb.DuckDBPyConnection) -> None:
    """The batch's first active day per (profile, month, event name), kept when earlier. Only
    the stored rows of the batch's months can match: a filter on ``month`` that the zonemaps
    prune (rows are appended roughly in time order), instead of a scan of the whole table."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _h_activity_batch AS"
        " SELECT landed::UUID AS profile_id, date_trunc('month', ts)::DATE AS month, event_name,"
        "  min(ts::DATE) AS first_day"
        " FROM _h_landed WHERE type = 'track' GROUP BY ALL"
    )
    row = con.execute("SELECT min(month)::VARCHAR FROM _h_activity_batch").fetchone()
    if row is None or row[0] is None:
        return
    stored = f"(SELECT * FROM activity_days WHERE month >= DATE '{row[0]}')"
    con.execute(
        f"DELETE FROM activity_days AS a USING _h_activity_batch AS b"
        f" WHERE a.profile_id = b.profile_id AND a.month = b.month"
        f" AND a.event_name = b.event_name AND a.first_day > b.first_day"
        f" AND a.month >= DATE '{row[0]}'"
    )
    con.execute(
        f"INSERT INTO activity_days SELECT b.* FROM _h_activity_batch AS b ANTI JOIN {stored} AS a"
        " ON a.profile_id = b.profile_id AND a.month = b.month AND a.event_name = b.event_name"
    )


def _landings(con: duckdb.DuckDBPyConnection, log: HistoryLog) -> None:
    """Before merges move the timeline to the survivor: where each moved event landed (an
    event that moved before keeps its first landing). The stored landings are probed for
    the moved events only: an anti join with the whole table would hash all of it."""
    if log.merges:
        con.execute(
            "INSERT INTO event_landings"
            " WITH moved AS MATERIALIZED (SELECT event_id, profile_id FROM events"
            "  WHERE profile_id IN (SELECT merged::UUID FROM _h_merges))"
            " SELECT m.event_id, m.profile_id FROM moved AS m ANTI JOIN ("
            "  SELECT event_id FROM event_landings"
            "  WHERE event_id IN (SELECT event_id FROM moved)) AS l USING (event_id)"
        )
    con.execute(
        "INSERT INTO event_landings SELECT event_id, landed::UUID FROM _h_landed"
        " WHERE in_timeline AND pid IS NOT NULL AND pid <> landed"
    )


def _forget_erased(con: duckdb.DuckDBPyConnection) -> None:
    """An erased profile's identifier rows and landings go; its counts history stays."""
    erased = "SELECT pid FROM _h_members WHERE tree IN (SELECT pid::UUID FROM _h_erasures)"
    for table in ("identifier_attachments", "identifier_day_states", "event_landings"):
        con.execute(f"DELETE FROM {table} WHERE profile_id IN ({erased})")


# -- the stored states a batch reads ---------------------------------------------------------

# The columns of identifier_day_states after (id_key, profile_id, day), and the same state
# as the identifiers table holds it: a live identifier's row there is the merge of all its
# facts, that is the state of its latest day (its attachment's last row in
# identifier_day_states), kept by the fold's own writer. It has a row there only if some
# event changed it (``has_state``): seen, consent, a bounce or a CCPA request.
_STATE_COLUMNS = (
    "first_seen_us, last_seen_us, last_seen_eid, explicit_consent, explicit_us, explicit_eid,"
    " unknown_us, unknown_eid, hard_bounces, complaints, recent_soft_bounces_us, ccpa, ccpa_us,"
    " ccpa_eid"
)
_CURRENT_STATE = """
    epoch_us(i.first_seen) AS first_seen_us, epoch_us(i.last_seen) AS last_seen_us,
    i.last_seen_event_id AS last_seen_eid, i.consent_explicit AS explicit_consent,
    epoch_us(i.consent_explicit_at) AS explicit_us, i.consent_explicit_event_id AS explicit_eid,
    epoch_us(i.consent_unknown_at) AS unknown_us, i.consent_unknown_event_id AS unknown_eid,
    i.hard_bounces, i.complaints,
    coalesce(i.recent_soft_bounces_us, []::BIGINT[]) AS recent_soft_bounces_us,
    i.ccpa, epoch_us(i.ccpa_updated_at) AS ccpa_us, i.ccpa_event_id AS ccpa_eid,
    i.first_seen IS NOT NULL OR i.consent_explicit_at IS NOT NULL
        OR i.consent_unknown_at IS NOT NULL OR i.hard_bounces > 0 OR i.complaints > 0
        OR i.soft_bounces > 0 OR i.ccpa_updated_at IS NOT NULL AS has_state
"""


def _prior_states(con: duckdb.DuckDBPyConnection, has_effects: bool, trees: bool) -> str:
    """Before the batch writes identifier_day_states: what the writer reads of it, without
    scanning it (it is the largest history table, and a join on random keys reads all of it).

    Every read is a request (identifier, attachment, cut day): the stored rows from the cut
    on, and the latest one before it (``_h_prior``). Cuts are days of the batch's own events
    (an identifier's first day in the batch, a tree's first changed day), so the rows from
    the earliest cut on (``since``) are the last few days written, which a filter on ``day``
    finds by the zonemaps (rows are appended roughly in day order): ``_h_recent``. The latest
    row before a cut is the latest of those before it; or, when the identifier has none from
    ``since`` on, its current state (``_h_current``, dated -infinity: only its order
    matters; from the batch writer's ``_stored_ids``, the stored identifier rows of the
    profiles the batch rewrites or erases, which hold every identifier of a changed tree);
    or none is needed, when a stored row falls on the cut itself. Only an identifier whose
    stored rows all lie after its cut (a fact older than the previous batch's) needs the
    rows before ``since``: ``_h_lookup``, a scan for those few.

    Returns ``since`` as a date literal ('infinity' when nothing is read).
    """
    requests = ["SELECT NULL::UUID AS id_key, NULL::UUID AS att, NULL::DATE AS cut WHERE false"]
    if has_effects:
        requests.append("SELECT id_key, att, from_day FROM _h_id_from WHERE att IS NOT NULL")
    if trees:
        requests.append("SELECT DISTINCT id_key, att, tree_from FROM _h_spans")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _h_want AS SELECT r.*, a.id_key IS NULL AS stored"
        f" FROM ({' UNION '.join(requests)}) AS r"
        " LEFT JOIN _h_att AS a"
        " ON a.id_key = r.id_key AND a.att = r.att"
    )
    row = con.execute(
        "SELECT coalesce(min(cut), 'infinity'::DATE)::VARCHAR FROM _h_want"
    ).fetchone()
    since = f"DATE '{row[0] if row else 'infinity'}'"
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _h_current AS"
        f" SELECT w.id_key, w.att AS profile_id, i.id_type, i.id_value, {_CURRENT_STATE}"
        " FROM (SELECT DISTINCT id_key, att FROM _h_want WHERE stored) AS w"
        " JOIN _stored_ids AS i ON i.id_key = w.id_key"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _h_recent AS SELECT s.* FROM identifier_day_states AS s"
        " SEMI JOIN _h_want AS w ON s.id_key = w.id_key AND s.profile_id = w.att"
        f" WHERE s.day >= {since}"
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _h_prior AS
        WITH marks AS (
            SELECT w.id_key, w.att, w.cut, w.stored,
                max(s.day) FILTER (s.day < w.cut) AS before_day,
                min(s.day) FILTER (s.day >= w.cut) AS next_day
            FROM _h_want AS w
            LEFT JOIN _h_recent AS s ON s.id_key = w.id_key AND s.profile_id = w.att
            GROUP BY ALL
        )
        SELECT m.cut, s.* FROM marks AS m
        JOIN _h_recent AS s
            ON s.id_key = m.id_key AND s.profile_id = m.att AND s.day = m.before_day
        UNION ALL
        SELECT m.cut, c.id_key, c.profile_id, '-infinity'::DATE, {_STATE_COLUMNS}
        FROM marks AS m
        JOIN _h_current AS c ON c.id_key = m.id_key AND c.profile_id = m.att AND c.has_state
        WHERE m.before_day IS NULL AND m.next_day IS NULL AND m.stored
        """
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _h_lookup AS SELECT w.id_key, w.att, w.cut FROM _h_want AS w"
        " JOIN _h_recent AS s ON s.id_key = w.id_key AND s.profile_id = w.att"
        " GROUP BY w.id_key, w.att, w.cut HAVING min(s.day) > w.cut"
    )
    if _any(con, "_h_lookup"):
        con.execute(
            f"""
            INSERT INTO _h_prior
            SELECT l.cut, s.* FROM identifier_day_states AS s
            JOIN _h_lookup AS l ON s.id_key = l.id_key AND s.profile_id = l.att
            WHERE s.day < {since} AND s.id_key IN (SELECT id_key FROM _h_lookup)
            QUALIFY s.day = max(s.day) OVER (PARTITION BY l.id_key, l.att, l.cut)
            """
        )
    return since


# -- identifier_day_states -------------------------------------------------------------------


def _batch_facts(con: duckdb.DuckDBPyConnection) -> None:
    """The batch's effects per (identifier, attachment, UTC day), and per attachment the first
    day the batch changed. An effect on an identifier attached in an earlier batch belongs to
    its stored attachment (one per live identifier). Seen events are nearly all of them and
    are grouped apart from the other kinds (``rare``: consent, bounces, CCPA)."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _h_batch AS
        WITH effects AS (
            SELECT e.* EXCLUDE (inc), e.inc::UUID AS att, make_timestamp(e.us)::DATE AS day
            FROM _h_effects AS e WHERE e.inc IS NOT NULL
            UNION ALL
            SELECT e.* EXCLUDE (inc), a.profile_id, make_timestamp(e.us)::DATE
            FROM _h_effects AS e
            LEFT JOIN identifier_attachments AS a ON a.id_key = e.id_key::UUID
            WHERE e.inc IS NULL
        ), seen AS (
            SELECT id_key::UUID AS id_key, att, day, min(us) AS first_us,
                max(struct_pack(us := us, eid := eid)) AS seen, bool_or(reads) AS reads
            FROM effects WHERE kind = 'seen' GROUP BY id_key, att, day
        ), rare AS (
            SELECT
                id_key::UUID AS id_key, att, day,
                max(struct_pack(us := us, eid := eid, status := status))
                    FILTER (kind = 'consent' AND status <> 'unknown') AS explicit,
                max(struct_pack(us := us, eid := eid))
                    FILTER (kind = 'consent' AND status = 'unknown') AS unknown,
                count(*) FILTER (kind = 'bounce' AND status = 'hard') AS hard,
                count(*) FILTER (kind = 'bounce' AND status = 'complaint') AS complaints,
                coalesce(list(us) FILTER (kind = 'bounce' AND status = 'soft'), []::BIGINT[])
                    AS soft,
                max(struct_pack(us := us, eid := eid, status := status))
                    FILTER (kind = 'ccpa') AS ccpa
            FROM effects WHERE kind <> 'seen' GROUP BY ALL
        )
        SELECT
            coalesce(s.id_key, r.id_key) AS id_key, coalesce(s.att, r.att) AS att,
            coalesce(s.day, r.day) AS day, s.first_us, s.seen, r.explicit, r.unknown,
            coalesce(r.hard, 0) AS hard, coalesce(r.complaints, 0) AS complaints,
            coalesce(r.soft, []::BIGINT[]) AS soft, r.ccpa, r.id_key IS NOT NULL AS rare,
            r.id_key IS NOT NULL OR s.reads AS moves
        FROM seen AS s
        FULL JOIN rare AS r
            ON r.id_key = s.id_key AND r.att IS NOT DISTINCT FROM s.att AND r.day = s.day
        """
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _h_id_from AS SELECT id_key, att, min(day) AS from_day,"
        " min(first_us) AS first_us, bool_or(rare) AS rare,"
        " min(day) FILTER (moves) AS moves_from FROM _h_batch GROUP BY ALL"
    )


def _identifier_states(con: duckdb.DuckDBPyConnection, since: str) -> None:
    """Rewrite each changed identifier's day states from the batch's first day for it on.

    The state at the end of day d is the stored state at d (its latest row on or before d)
    merged with the batch's facts up to d; the rewritten days are the batch's days and the
    stored days from the first one on. The stored rows come from ``_prior_states``.
    """
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _h_old AS
        SELECT s.*, f.from_day
        FROM _h_recent AS s
        JOIN _h_id_from AS f ON s.id_key = f.id_key AND s.profile_id = f.att
        WHERE s.day >= f.from_day
        UNION ALL
        SELECT p.* EXCLUDE (cut), f.from_day
        FROM _h_prior AS p
        JOIN _h_id_from AS f
            ON p.id_key = f.id_key AND p.profile_id = f.att AND p.cut = f.from_day
        """
    )
    # Late: identifiers with stored days on or after the batch's first day for them (a late
    # fact, or more facts on a day already stored); their stored days from then on go.
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _h_late AS"
        " SELECT DISTINCT id_key, profile_id AS att FROM _h_old WHERE day >= from_day"
    )
    if not _any(con, "_h_late"):
        # Time order (the common case): the rewritten days are the batch's own and _h_old
        # holds one row per identifier (its latest before them, so the batch's facts are
        # later), so an equality join on the identifier gives what the as-of join gives.
        _insert_states(con, days=_running("_h_batch"), stored_join=_STORED_BEFORE)
        return
    con.execute(
        "DELETE FROM identifier_day_states AS s USING _h_id_from AS f"
        " WHERE s.id_key = f.id_key AND s.profile_id = f.att AND s.day >= f.from_day"
        f" AND s.day >= {since}"
    )
    _insert_states(
        con,
        days=_running("_h_batch ANTI JOIN _h_late USING (id_key, att)"),
        stored_join=_STORED_BEFORE,
    )
    # The late ones: the batch's days and the stored days from the first one on, each with
    # the latest stored and batch states on or before it (as-of joins), merged by time.
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _h_running AS"
        + _running("_h_batch SEMI JOIN _h_late USING (id_key, att)")
    )
    _insert_states(
        con,
        days="SELECT d.id_key, d.att, d.day, b.* EXCLUDE (id_key, att, day) FROM ("
        "  SELECT id_key, att, day FROM _h_running"
        "  UNION SELECT id_key, profile_id, day FROM _h_old WHERE day >= from_day) AS d"
        " ASOF LEFT JOIN _h_running AS b ON b.id_key = d.id_key AND b.att = d.att"
        " AND d.day >= b.day",
        stored_join="ASOF LEFT JOIN stored AS s"
        " ON s.id_key = d.id_key AND s.profile_id = d.att AND d.day >= s.day",
        merge=_MERGE_BY_TIME,
    )


_STORED_BEFORE = "LEFT JOIN stored AS s ON s.id_key = d.id_key AND s.profile_id = d.att"


def _running(batch: str) -> str:
    """The batch's facts of each identifier up to each of its days (id_key, att, day).

    Most identifiers have only seen events in the batch: every day of theirs has one, so the
    latest up to d is d's own and the first is the identifier's first (``_h_id_from``), with
    no window. The few with other kinds (consent, bounces, CCPA: ``rare``) take running
    windows; a day's facts all lie within that day, so the latest of a kind up to d is the
    one of the last day with one (last_value, cheaper than max, the same struct).
    """
    return f"""
    WITH batch AS (SELECT * FROM {batch}
    ), plain AS (
        SELECT
            b.id_key, b.att, b.day, f.first_us, b.seen,
            NULL AS explicit, NULL AS unknown, 0 AS hard, 0 AS complaints,
            NULL::BIGINT[] AS soft, NULL AS ccpa
        FROM batch AS b
        JOIN _h_id_from AS f ON f.id_key = b.id_key AND f.att = b.att AND NOT f.rare
    ), rare AS (
        SELECT
            id_key, att, day,
            first_value(first_us IGNORE NULLS) OVER w AS first_us,
            last_value(seen IGNORE NULLS) OVER w AS seen,
            last_value(explicit IGNORE NULLS) OVER w AS explicit,
            last_value(unknown IGNORE NULLS) OVER w AS unknown,
            sum(hard) OVER w AS hard,
            sum(complaints) OVER w AS complaints,
            flatten(list(soft) FILTER (len(soft) > 0) OVER w) AS soft,
            last_value(ccpa IGNORE NULLS) OVER w AS ccpa
        FROM batch
        SEMI JOIN _h_id_from AS f ON f.id_key = batch.id_key AND f.att = batch.att AND f.rare
        WINDOW w AS (PARTITION BY id_key, att ORDER BY day)
    )
    SELECT * FROM rare
    UNION ALL BY NAME
    SELECT * FROM plain
    """


# How a stored state merges with the batch's running facts: by position when the stored one
# is from before every fact of the batch (time order), by time otherwise.
_MERGE_AFTER = """
    coalesce(s.first_us, d.first_us) AS first_us,
    coalesce(d.seen, s.seen) AS seen,
    coalesce(d.explicit, s.explicit) AS explicit,
    coalesce(d.unknown, s.unknown) AS unknown,
    coalesce(d.ccpa, s.ccpa) AS ccpa,
"""
_MERGE_BY_TIME = """
    least(s.first_us, d.first_us) AS first_us,
    greatest(s.seen, d.seen) AS seen,
    greatest(s.explicit, d.explicit) AS explicit,
    greatest(s.unknown, d.unknown) AS unknown,
    greatest(s.ccpa, d.ccpa) AS ccpa,
"""


def _insert_states(
    con: duckdb.DuckDBPyConnection, days: str, stored_join: str, merge: str = _MERGE_AFTER
) -> None:
    """Insert the day states of ``days`` (id_key, att, day and the batch's running facts
    then): the stored state then (``stored_join``) merged with the batch's (``merge``). In
    identifier order, so DuckDB's run-length encoding keeps the keys small on disk."""
    con.execute(
        f"""
        INSERT INTO identifier_day_states
        WITH days AS ({days}
        ), stored AS (
            SELECT
                id_key, profile_id, day, first_seen_us AS first_us,
                CASE WHEN last_seen_us IS NOT NULL
                    THEN struct_pack(us := last_seen_us, eid := last_seen_eid) END AS seen,
                CASE WHEN explicit_us IS NOT NULL THEN struct_pack(us := explicit_us,
                    eid := explicit_eid, status := explicit_consent) END AS explicit,
                CASE WHEN unknown_us IS NOT NULL
                    THEN struct_pack(us := unknown_us, eid := unknown_eid) END AS unknown,
                hard_bounces AS hard, complaints, recent_soft_bounces_us AS soft,
                CASE WHEN ccpa_us IS NOT NULL
                    THEN struct_pack(us := ccpa_us, eid := ccpa_eid, status := ccpa) END AS ccpa
            FROM _h_old
        ), merged AS (
            SELECT
                d.id_key, d.att, d.day, {merge}
                coalesce(s.hard, 0) + coalesce(d.hard, 0) AS hard,
                coalesce(s.complaints, 0) + coalesce(d.complaints, 0) AS complaints,
                s.soft AS stored_soft, d.soft AS batch_soft
            FROM days AS d
            {stored_join}
        )
        SELECT
            id_key, att, day, first_us, seen.us, seen.eid,
            explicit.status, explicit.us, explicit.eid, unknown.us, unknown.eid,
            hard, complaints,
            CASE WHEN len(stored_soft) > 0 OR len(batch_soft) > 0 THEN list_sort(list_filter(
                list_concat(coalesce(stored_soft, []::BIGINT[]), coalesce(batch_soft, [])),
                lambda t: t > coalesce(seen.us, {NEVER_US})))
            ELSE []::BIGINT[] END,
            ccpa.status, ccpa.us, ccpa.eid
        FROM merged
        ORDER BY id_key, att, day
        """
    )


# -- profile_reachability_history ------------------------------------------------------------


# The history rows of every profile tree the batch changed are rewritten from the earliest
# day of its changes on. A tree is a root (live, or erased in this batch) with every profile
# merged into it. Per profile: its root on each day (merges apply from the merge's day); per
# identifier: the root that owns it on each day (from its attachment on) and its state on
# each day (its day states); per root, from the tree's first changed day: the reachability
# inputs on each day on which anything of it changed, after the stored span running into
# that day.


def _any(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return con.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone() == (True,)


def _members(con: duckdb.DuckDBPyConnection, has_effects: bool) -> bool:
    """Every profile of the reached trees (runs before the batch's merges reach
    profile_merges, so stored members are found under their stored survivor), the first day
    each tree changed, and the lineage of the changed trees' members; False when no tree
    changed."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _h_members AS"
        " SELECT pid::UUID AS pid, root::UUID AS tree FROM _h_roots"
        " UNION SELECT m.merged_profile_id, r.root::UUID FROM profile_merges AS m"
        " JOIN _h_roots AS r ON m.survivor_profile_id = r.pid::UUID"
    )
    changed_identifiers = (
        " UNION ALL SELECT m.tree, f.moves_from FROM _h_id_from AS f"
        " JOIN _h_members AS m ON m.pid = f.att WHERE f.moves_from IS NOT NULL"
        if has_effects
        else ""
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _h_tree_from AS
        WITH changes AS (
            SELECT pid, at_us AS us FROM _h_attached
            UNION ALL SELECT pid, created_us FROM _h_created
            UNION ALL SELECT merged, at_us FROM _h_merges
            UNION ALL SELECT pid, at_us FROM _h_erasures
        )
        SELECT tree, min(day) AS from_day FROM (
            SELECT r.root::UUID AS tree, make_timestamp(c.us)::DATE AS day
            FROM changes AS c JOIN _h_roots AS r ON r.pid = c.pid
            UNION ALL SELECT m.tree, v.since::DATE FROM _h_moved AS v
            JOIN _h_members AS m ON m.pid = v.pid
            {changed_identifiers}
        )
        GROUP BY tree
        """
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _h_lineage AS"
        " SELECT l.profile_id AS pid, m.tree, t.from_day AS tree_from,"
        "  l.created_at::DATE AS created_day, l.merged_into, l.merged_at::DATE AS merged_day,"
        "  l.erased_at::DATE AS erased_day, least(l.merged_at::DATE, l.erased_at::DATE) AS end_day"
        " FROM profile_lineage AS l JOIN _h_members AS m ON l.profile_id = m.pid"
        " JOIN _h_tree_from AS t ON t.tree = m.tree"
    )
    return _any(con, "_h_tree_from")


def _root_intervals(con: duckdb.DuckDBPyConnection) -> None:
    """(pid, root, from_day, to_day): the root pid belonged to on the days [from, to).

    Following pid's merges in order, the k-th merge applies from the latest day of the first
    k (a merge is decided when its event is folded, so a later merge of the survivor may
    carry an earlier date); the erasure of the tree ends every interval.
    """
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _h_intervals AS
        WITH RECURSIVE chain(pid, node, since, depth) AS (
            SELECT pid, pid, created_day, 0 FROM _h_lineage
            UNION ALL
            SELECT c.pid, l.merged_into, greatest(c.since, l.merged_day), c.depth + 1
            FROM chain AS c JOIN _h_lineage AS l ON l.pid = c.node
            WHERE l.merged_into IS NOT NULL
        ), tree_end AS (
            SELECT tree, min(erased_day) AS erased_day FROM _h_lineage GROUP BY tree
        ), spans AS (
            SELECT c.pid, c.node AS root, c.since AS from_day,
                least(lead(c.since) OVER (PARTITION BY c.pid ORDER BY c.depth), t.erased_day)
                    AS to_day
            FROM chain AS c
            JOIN _h_lineage AS l ON l.pid = c.pid
            JOIN tree_end AS t ON t.tree = l.tree
        )
        SELECT * FROM spans WHERE to_day IS NULL OR from_day < to_day
        """
    )


def _owned_spans(con: duckdb.DuckDBPyConnection) -> None:
    """Which root owns each identifier of the changed trees on which days: the spans that
    reach the tree's first changed day."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _h_spans AS
        WITH spans AS (
            SELECT a.id_key, a.profile_id AS att, a.id_type, a.valid, i.root, l.tree_from,
                greatest(i.from_day, a.attached_at::DATE) AS from_day, i.to_day
            FROM identifier_attachments AS a
            JOIN _h_intervals AS i ON i.pid = a.profile_id
            JOIN _h_lineage AS l ON l.pid = a.profile_id
        )
        SELECT * FROM spans AS s
        WHERE (s.to_day IS NULL OR s.from_day < s.to_day)
            AND (s.to_day IS NULL OR s.to_day > s.tree_from)
        """
    )


def _owned_identifiers(con: duckdb.DuckDBPyConnection, since: str) -> None:
    """The owned spans with whether the inputs read the identifier (``read``: a messaging
    identifier, or one with a CCPA request in its states; the others never move an input),
    and the values that break last-seen ties between emails or phones (kept in a temporary
    table only). A state keeps its CCPA request once it has one, so an identifier has one
    in its states if its latest state has: a row from ``since`` on, or its current state."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _h_owned AS
        WITH with_ccpa AS (
            SELECT id_key, profile_id AS att FROM identifier_day_states
            WHERE day >= {since} AND ccpa IS NOT NULL
            UNION
            SELECT id_key, profile_id FROM _h_current WHERE ccpa IS NOT NULL
        )
        SELECT s.*,
            s.id_type IN ('email', 'phone', 'push_token') OR c.id_key IS NOT NULL AS read
        FROM _h_spans AS s
        LEFT JOIN with_ccpa AS c ON c.id_key = s.id_key AND c.att = s.att
        """
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _h_values AS"
        " SELECT id_key, any_value(id_value) AS id_value FROM ("
        "  SELECT id_key, id_value FROM _h_current WHERE id_type IN ('email', 'phone')"
        "  UNION ALL SELECT id_key, id_value FROM _h_att"
        "  WHERE id_type IN ('email', 'phone'))"
        " GROUP BY id_key"
    )


def _states_and_change_days(con: duckdb.DuckDBPyConnection, since: str) -> None:
    """The day states the recompute needs (from the last one before the tree's first changed
    day on: the rows from ``since`` on, as the batch left them, and before them the ones
    ``_prior_states`` found), judged as the identifiers table judges them, and the days per
    root from the tree's first changed day on on which something of it changed.

    A day state is a change day only when it moves what the inputs read of its identifier
    (``changed``): the CCPA request for every type; deliverability, consent and soft bounces
    for messaging identifiers; the last seen event for an email or phone whose root holds
    another of its type (it decides which one counts). The other days (most are an anonymous
    id or customer id seen again) leave every input as it was, so judging them would only
    repeat the day before. For the same reason a root is judged on the days a span of an
    identifier starts (an attachment, a creation, a merge into it) and on its change days,
    not on the tree's first changed day as such: on a day without either its inputs are the
    day before's (the stored span running into it, which the recompute keeps as the seed).
    """
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _h_states AS
        WITH peers AS (
            SELECT *, count(*) OVER (PARTITION BY root, id_type) AS peers FROM _h_owned
        ), wanted AS (
            SELECT id_key, att, tree_from, any_value(id_type) AS id_type,
                bool_or(id_type IN ('email', 'phone') AND peers > 1) AS ranked
            FROM peers WHERE read GROUP BY id_key, att, tree_from
        ), states AS (
            SELECT
                s.id_key, s.profile_id AS att, s.day, w.tree_from,
                struct_pack(us := s.last_seen_us, eid := s.last_seen_eid) AS last_seen,
                s.hard_bounces AS hard, s.complaints,
                CASE
                    WHEN s.explicit_consent IS NULL THEN 'unknown'
                    WHEN s.explicit_consent IN ('opted_in', 'opted_out') OR s.unknown_us IS NULL
                        THEN s.explicit_consent
                    WHEN struct_pack(us := s.unknown_us, eid := s.unknown_eid)
                        > struct_pack(us := s.explicit_us, eid := s.explicit_eid) THEN 'unknown'
                    ELSE s.explicit_consent
                END AS consent,
                len(s.recent_soft_bounces_us) AS consecutive,
                s.ccpa, w.id_type, w.ranked
            FROM (
                SELECT s.*, w.tree_from FROM identifier_day_states AS s
                JOIN wanted AS w ON s.id_key = w.id_key AND s.profile_id = w.att
                WHERE s.day >= {since}
                UNION ALL
                SELECT p.* EXCLUDE (cut), w.tree_from FROM _h_prior AS p
                JOIN wanted AS w
                    ON p.id_key = w.id_key AND p.profile_id = w.att AND p.cut = w.tree_from
                WHERE p.day < {since}
            ) AS s
            JOIN wanted AS w
                ON s.id_key = w.id_key AND s.profile_id = w.att AND s.tree_from = w.tree_from
        ), read AS (
            SELECT *,
                CASE WHEN id_type IN ('email', 'phone', 'push_token') THEN struct_pack(
                    undeliverable := hard > 0 OR complaints > 0, consent := consent,
                    consecutive := consecutive, ccpa := ccpa,
                    last_seen := CASE WHEN ranked THEN last_seen END)
                ELSE struct_pack(undeliverable := NULL::BOOLEAN, consent := NULL::VARCHAR,
                    consecutive := NULL::BIGINT, ccpa := ccpa,
                    last_seen := NULL::STRUCT(us BIGINT, eid VARCHAR))
                END AS inputs_read
            FROM states
        )
        SELECT * EXCLUDE (tree_from, id_type, ranked, inputs_read),
            inputs_read IS DISTINCT FROM lag(inputs_read) OVER w AS changed,
            coalesce(lead(day) OVER w, 'infinity'::DATE) AS next_day
        FROM read
        WINDOW w AS (PARTITION BY id_key, att ORDER BY day)
        QUALIFY day >= tree_from OR coalesce(lead(day) OVER w >= tree_from, true)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _h_change_days AS
        SELECT root, from_day AS day FROM _h_owned WHERE from_day >= tree_from
        UNION
        SELECT o.root, s.day
        FROM _h_owned AS o
        JOIN _h_states AS s ON s.id_key = o.id_key AND s.att = o.att
            AND s.day >= o.from_day AND s.day >= o.tree_from
            AND (o.to_day IS NULL OR s.day < o.to_day) AND s.changed
        """
    )


def _recompute_spans(con: duckdb.DuckDBPyConnection) -> None:
    """Replace each changed tree's spans that reach its first changed day: the span running
    into that day (the seed, its inputs unchanged) and the days judged from then on, a row
    kept where the inputs change, ended by the profile's merge or erasure.

    A span that ends on that very day is the seed too: when the batch moves the inputs of
    that day back to what they were before it, the span goes on, as it does when one batch
    folds it all (the rows are the same whatever the batch sizes)."""
    from projections.batch_writer import REACHABILITY_INPUTS_SELECT

    # The seeds are among the rows replaced: one pass over the table finds both.
    replaced = arrow(
        con,
        "DELETE FROM profile_reachability_history AS h USING _h_lineage AS l"
        " WHERE h.profile_id = l.pid AND (h.valid_to IS NULL OR h.valid_to >= l.tree_from)"
        f" RETURNING h.profile_id, h.valid_from, {_INPUTS}",
    )
    with registered(con, _h_replaced=replaced):
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _h_seeds AS SELECT l.pid, r.valid_from AS day,"
            f" {_INPUTS} FROM _h_replaced AS r JOIN _h_lineage AS l ON r.profile_id::UUID = l.pid"
            " WHERE r.valid_from < l.tree_from"
        )
    inputs = REACHABILITY_INPUTS_SELECT.format(
        identifiers="_h_ids_at", profiles="_h_profiles_at",
        scope="SELECT profile_id FROM _h_profiles_at",
    )  # fmt: skip
    con.execute(
        f"""
        INSERT INTO profile_reachability_history
        WITH _h_at AS (
            SELECT c.root, c.day, o.id_key, o.att, o.id_type, o.valid
            FROM _h_change_days AS c
            JOIN _h_owned AS o ON o.root = c.root AND c.day >= o.from_day
                AND (o.to_day IS NULL OR c.day < o.to_day) AND o.read
        ), _h_state_at AS (
            SELECT a.*, s.last_seen, s.hard, s.complaints, s.consent, s.consecutive, s.ccpa
            FROM _h_at AS a
            LEFT JOIN _h_states AS s ON a.id_key = s.id_key AND a.att = s.att
                AND a.day >= s.day AND a.day < s.next_day
        ), _h_ranked AS (
            SELECT
                a.*,
                row_number() OVER (
                    PARTITION BY a.root, a.day, a.id_type
                    ORDER BY coalesce(a.last_seen.us, {NEVER_US}) DESC,
                        coalesce(a.last_seen.eid, '') DESC, v.id_value DESC
                ) = 1 AS is_last_seen
            FROM _h_state_at AS a
            LEFT JOIN _h_values AS v ON v.id_key = a.id_key
            WHERE a.id_type IN ('email', 'phone')
            UNION ALL
            SELECT *, false FROM _h_state_at WHERE id_type NOT IN ('email', 'phone')
        ), _h_ids_at AS (
            SELECT
                struct_pack(root := a.root, day := a.day) AS profile_id,
                a.id_type,
                a.valid AND coalesce(a.hard, 0) = 0 AND coalesce(a.complaints, 0) = 0
                    AS deliverable,
                coalesce(a.consent, 'unknown') AS consent,
                coalesce(a.consecutive, 0) AS consecutive_soft_bounces,
                a.is_last_seen,
                a.ccpa
            FROM _h_ranked AS a
        ), _h_ccpa_at AS (
            SELECT root, day, bool_or(ccpa = 'opt_out') AS opted_out
            FROM _h_state_at GROUP BY root, day
        ), _h_profiles_at AS (
            SELECT struct_pack(root := c.root, day := c.day) AS profile_id,
                coalesce(o.opted_out, false) AS ccpa_opted_out
            FROM _h_change_days AS c
            LEFT JOIN _h_ccpa_at AS o ON o.root = c.root AND o.day = c.day
        ), inputs AS ({inputs}
        ), judged AS (
            SELECT profile_id.root AS pid, profile_id.day AS day, {_INPUTS} FROM inputs
            UNION ALL
            SELECT pid, day, {_INPUTS} FROM _h_seeds
        ), marked AS (
            SELECT
                *,
                ({_INPUTS}) IS DISTINCT FROM lag(({_INPUTS}))
                    OVER (PARTITION BY pid ORDER BY day) AS changed
            FROM judged
        ), kept AS (SELECT * FROM marked WHERE changed)
        SELECT
            k.pid, k.day,
            coalesce(lead(k.day) OVER (PARTITION BY k.pid ORDER BY k.day), l.end_day),
            {_INPUTS}
        FROM kept AS k
        JOIN _h_lineage AS l ON l.pid = k.pid
        WHERE l.end_day IS NULL OR k.day < l.end_day
        """
    )
