"""The history tables, kept batch by batch in the batch's transaction (see schema.sql).

History is the engine's own decisions, each stamped with the event time of the event that
caused it: profile creations, merges and erasures (``profile_lineage``), which profile each
identifier attached to (``identifier_attachments``), what each UTC day's events did to an
identifier (``identifier_day_facts``), the first active day of a month per profile and event
name (``activity_days``) and, for events whose profile was merged away, the profile they
landed on (``event_landings``). From these, every batch recomputes
``profile_reachability_history`` for the profile trees it touched: the reachability inputs of
each profile at the end of every UTC day on which they changed, with the same rule SQL that
writes ``profile_reachability_inputs``. A late event (an earlier event time than what was
already folded) lands in its own day, so the days after it move, as they would in a rebuild.

``write_history`` runs first in ``batch_writer.write_changes``: it reads the stored state
from before the batch (the timeline before merges move it, identifier values before an
erasure removes them). Rows keyed by identifier, and the landings, of an erased profile are
deleted with it; what stays holds no identifier value or trait.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import duckdb
import pyarrow as pa

from profile_engine.batch_fold import BatchChanges, HistoryLog
from projections.rows import NEVER_US

_STR = pa.string()
_I64 = pa.int64()

# The columns of profile_reachability_inputs besides profile_id.
_INPUTS = (
    "ccpa_opted_out, email_consent, email_soft_bounces, sms_consent, sms_soft_bounces,"
    " push_opted_in_soft_bounces, push_unknown_soft_bounces"
)
_TEMP_TABLES = ("_h_members", "_h_lineage", "_h_intervals", "_h_owned", "_h_values",
                "_h_states", "_h_change_days", "_h_activity_batch")  # fmt: skip


def write_history(con: duckdb.DuckDBPyConnection, changes: BatchChanges) -> None:
    """Bring the history tables up to date with one batch (inside its transaction)."""
    log = changes.history
    tables = _tables(changes, log)
    with _registered(con, **tables):
        _lineage(con, log)
        _activity(con)
        _landings(con, log)
        _identifier_facts(con)
        con.execute(
            "INSERT INTO identifier_attachments SELECT id_key::UUID, pid::UUID, id_type, valid,"
            " make_timestamp(at_us) FROM _h_attached"
        )
        if log.roots:
            recompute_reachability_history(con)
        if log.erasures:
            _forget_erased(con)
    for name in _TEMP_TABLES:
        con.execute(f"DROP TABLE IF EXISTS {name}")


@contextmanager
def _registered(con: duckdb.DuckDBPyConnection, **tables: pa.Table) -> Iterator[None]:
    for name, table in tables.items():
        con.register(name, table)
    try:
        yield
    finally:
        for name in tables:
            with suppress(duckdb.Error):  # after a failed statement only ROLLBACK is allowed
                con.unregister(name)


def _columns(
    names: tuple[str, ...], types: tuple[pa.DataType, ...], rows: Sequence[tuple[Any, ...]]
) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    return pa.table({n: pa.array(c, t) for n, t, c in zip(names, types, columns, strict=True)})


def _tables(changes: BatchChanges, log: HistoryLog) -> dict[str, pa.Table]:
    final = changes.final_profile
    effects = (
        [(k, inc, "seen", us, eid, None) for k, inc, us, eid in log.seen]
        + [(k, inc, "consent", us, eid, status) for k, inc, status, us, eid in log.consents]
        + [(k, inc, "bounce", us, None, kind) for k, inc, kind, us in log.bounces]
        + [(k, inc, "ccpa", us, eid, request) for k, inc, request, us, eid in log.ccpa]
    )
    activity = [
        (a.profile_id, p.timestamp_us, p.detail[0])
        for a in changes.applied
        if (p := a.prepared).type == "track"
    ]
    landed = [
        (a.prepared.event_id, a.profile_id)
        for a in changes.applied
        if a.in_timeline and (now := final.get(a.profile_id)) is not None and now != a.profile_id
    ]
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
        "_h_effects": _columns(
            ("id_key", "inc", "kind", "us", "eid", "status"),
            (_STR, _STR, _STR, _I64, _STR, _STR),
            effects,
        ),
        "_h_activity": _columns(("pid", "us", "event_name"), (_STR, _I64, _STR), activity),
        "_h_landed": _columns(("event_id", "pid"), (_STR, _STR), landed),
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


def _activity(con: duckdb.DuckDBPyConnection) -> None:
    """The batch's first active day per (profile, month, event name), kept when earlier."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _h_activity_batch AS"
        " SELECT pid::UUID AS profile_id,"
        "  date_trunc('month', make_timestamp(us))::DATE AS month, event_name,"
        "  min(make_timestamp(us)::DATE) AS first_day"
        " FROM _h_activity GROUP BY ALL"
    )
    con.execute(
        "DELETE FROM activity_days AS a USING _h_activity_batch AS b"
        " WHERE a.profile_id = b.profile_id AND a.month = b.month"
        " AND a.event_name = b.event_name AND a.first_day > b.first_day"
    )
    con.execute(
        "INSERT INTO activity_days SELECT b.* FROM _h_activity_batch AS b"
        " ANTI JOIN activity_days AS a"
        " ON a.profile_id = b.profile_id AND a.month = b.month AND a.event_name = b.event_name"
    )


def _landings(con: duckdb.DuckDBPyConnection, log: HistoryLog) -> None:
    """Before merges move the timeline to the survivor: where each moved event landed."""
    if log.merges:
        con.execute(
            "INSERT INTO event_landings SELECT e.event_id, e.profile_id FROM events AS e"
            " WHERE e.profile_id IN (SELECT merged::UUID FROM _h_merges)"
            " AND e.event_id NOT IN (SELECT event_id FROM event_landings)"
        )
    con.execute("INSERT INTO event_landings SELECT event_id, pid::UUID FROM _h_landed")


def _identifier_facts(con: duckdb.DuckDBPyConnection) -> None:
    """The batch's effects per (identifier, attachment, UTC day). An effect on an identifier
    attached in an earlier batch belongs to its stored attachment (one per live identifier)."""
    con.execute(
        """
        INSERT INTO identifier_day_facts
        WITH effects AS (
            SELECT e.*, coalesce(e.inc::UUID, a.profile_id) AS att,
                make_timestamp(e.us)::DATE AS day
            FROM _h_effects AS e
            LEFT JOIN identifier_attachments AS a
                ON e.inc IS NULL AND a.id_key = e.id_key::UUID
        ), per_day AS (
            SELECT
                id_key::UUID AS id_key, att, day,
                min(us) FILTER (kind = 'seen') AS seen_first_us,
                max(struct_pack(us := us, eid := eid)) FILTER (kind = 'seen') AS seen,
                max(struct_pack(us := us, eid := eid, status := status))
                    FILTER (kind = 'consent' AND status <> 'unknown') AS explicit,
                max(struct_pack(us := us, eid := eid))
                    FILTER (kind = 'consent' AND status = 'unknown') AS unknown,
                count(*) FILTER (kind = 'bounce' AND status = 'hard') AS hard,
                count(*) FILTER (kind = 'bounce' AND status = 'complaint') AS complaints,
                coalesce(list(us ORDER BY us) FILTER (kind = 'bounce' AND status = 'soft'),
                    []::BIGINT[]) AS soft,
                max(struct_pack(us := us, eid := eid, status := status))
                    FILTER (kind = 'ccpa') AS ccpa
            FROM effects
            GROUP BY ALL
        )
        SELECT id_key, att, day, seen_first_us, seen.us, seen.eid,
            explicit.status, explicit.us, explicit.eid, unknown.us, unknown.eid,
            hard, complaints, soft, ccpa.status, ccpa.us, ccpa.eid
        FROM per_day
        """
    )


def _forget_erased(con: duckdb.DuckDBPyConnection) -> None:
    """An erased profile's identifier rows and landings go; its counts history stays."""
    erased = "SELECT pid FROM _h_members WHERE tree IN (SELECT pid::UUID FROM _h_erasures)"
    for table in ("identifier_attachments", "identifier_day_facts", "event_landings"):
        con.execute(f"DELETE FROM {table} WHERE profile_id IN ({erased})")


# -- profile_reachability_history ------------------------------------------------------------


def recompute_reachability_history(con: duckdb.DuckDBPyConnection) -> None:
    """Rewrite the history rows of every profile in the trees the batch reached.

    A tree is a root (live, or erased in this batch) with every profile merged into it. Per
    profile: its root on each day (merges apply from the merge's day); per identifier: the
    root that owns it on each day (from its attachment on) and its state at the end of each
    day with facts (cumulative over its day facts); per root and day on which anything of it
    changed: the reachability inputs of the identifiers it owns then.
    """
    from projections.batch_writer import REACHABILITY_INPUTS_SELECT

    _members(con)
    _root_intervals(con)
    _owned_identifiers(con)
    _identifier_states(con)
    con.execute(
        "DELETE FROM profile_reachability_history WHERE profile_id IN (SELECT pid FROM _h_members)"
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
                AND (o.to_day IS NULL OR c.day < o.to_day)
        ), _h_state_at AS (
            SELECT a.*, s.last_seen, s.explicit, s.unknown, s.hard, s.complaints,
                s.consecutive, s.ccpa
            FROM _h_at AS a
            ASOF LEFT JOIN _h_states AS s
                ON a.id_key = s.id_key AND a.att = s.att AND a.day >= s.day
        ), _h_ids_at AS (
            SELECT
                struct_pack(root := a.root, day := a.day) AS profile_id,
                a.id_type,
                a.valid AND coalesce(a.hard, 0) = 0 AND coalesce(a.complaints, 0) = 0
                    AS deliverable,
                CASE
                    WHEN a.explicit IS NULL THEN 'unknown'
                    WHEN a.explicit.status IN ('opted_in', 'opted_out') OR a.unknown IS NULL
                        THEN a.explicit.status
                    WHEN a.unknown > struct_pack(us := a.explicit.us, eid := a.explicit.eid)
                        THEN 'unknown'
                    ELSE a.explicit.status
                END AS consent,
                coalesce(a.consecutive, 0) AS consecutive_soft_bounces,
                row_number() OVER (
                    PARTITION BY a.root, a.day, a.id_type
                    ORDER BY coalesce(a.last_seen.us, {NEVER_US}) DESC,
                        coalesce(a.last_seen.eid, '') DESC, v.id_value DESC
                ) = 1 AS is_last_seen,
                a.ccpa.status AS ccpa
            FROM _h_state_at AS a
            LEFT JOIN _h_values AS v ON v.id_key = a.id_key
        ), _h_profiles_at AS (
            SELECT profile_id, coalesce(bool_or(ccpa = 'opt_out'), false) AS ccpa_opted_out
            FROM _h_ids_at GROUP BY profile_id
        ), inputs AS ({inputs}
        ), marked AS (
            SELECT
                profile_id.root AS pid, profile_id.day AS day, i.* EXCLUDE (profile_id),
                ({_INPUTS}) IS DISTINCT FROM lag(({_INPUTS}))
                    OVER (PARTITION BY profile_id.root ORDER BY profile_id.day) AS changed
            FROM inputs AS i
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


def _members(con: duckdb.DuckDBPyConnection) -> None:
    """Every profile of the reached trees (runs before the batch's merges reach
    profile_merges, so stored members are found under their stored survivor)."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _h_members AS"
        " SELECT pid::UUID AS pid, root::UUID AS tree FROM _h_roots"
        " UNION SELECT m.merged_profile_id, r.root::UUID FROM profile_merges AS m"
        " JOIN _h_roots AS r ON m.survivor_profile_id = r.pid::UUID"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _h_lineage AS"
        " SELECT l.profile_id AS pid, m.tree, l.created_at::DATE AS created_day,"
        "  l.merged_into, l.merged_at::DATE AS merged_day, l.erased_at::DATE AS erased_day,"
        "  least(l.merged_at::DATE, l.erased_at::DATE) AS end_day"
        " FROM profile_lineage AS l JOIN _h_members AS m ON l.profile_id = m.pid"
    )


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


def _owned_identifiers(con: duckdb.DuckDBPyConnection) -> None:
    """Which root owns each identifier of the trees on which days, and the values that break
    last-seen ties (kept in a temporary table only)."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _h_owned AS
        WITH spans AS (
            SELECT a.id_key, a.profile_id AS att, a.id_type, a.valid, i.root,
                greatest(i.from_day, a.attached_at::DATE) AS from_day, i.to_day
            FROM identifier_attachments AS a
            JOIN _h_intervals AS i ON i.pid = a.profile_id
        )
        SELECT * FROM spans WHERE to_day IS NULL OR from_day < to_day
        """
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _h_values AS"
        " SELECT id_key, any_value(id_value) AS id_value FROM ("
        "  SELECT id_key, id_value FROM identifiers"
        "  WHERE id_key IN (SELECT id_key FROM _h_owned)"
        "  UNION ALL SELECT id_key::UUID, id_value FROM _h_attached)"
        " GROUP BY id_key"
    )


def _identifier_states(con: duckdb.DuckDBPyConnection) -> None:
    """Each identifier's state at the end of every day with facts, and the days per root on
    which something of it changed.

    Consecutive soft bounces at the end of day d are the soft bounces after the last-seen
    time: all of those on days after the last day with a seen event, plus those on that day
    after its last seen event (``soft_total - kept_at_seen``).
    """
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _h_states AS
        WITH days AS (
            SELECT
                f.id_key, f.profile_id AS att, f.day,
                min(f.seen_first_us) AS seen_first,
                max(struct_pack(us := f.seen_last_us, eid := f.seen_last_eid))
                    FILTER (f.seen_last_us IS NOT NULL) AS seen,
                max(struct_pack(us := f.explicit_us, eid := f.explicit_eid,
                                status := f.explicit_consent))
                    FILTER (f.explicit_us IS NOT NULL) AS explicit,
                max(struct_pack(us := f.unknown_us, eid := f.unknown_eid))
                    FILTER (f.unknown_us IS NOT NULL) AS unknown,
                sum(f.hard_bounces) AS hard,
                sum(f.complaints) AS complaints,
                flatten(list(f.soft_bounces_us)) AS soft,
                max(struct_pack(us := f.ccpa_us, eid := f.ccpa_eid, status := f.ccpa))
                    FILTER (f.ccpa_us IS NOT NULL) AS ccpa
            FROM identifier_day_facts AS f
            SEMI JOIN (SELECT DISTINCT id_key, att FROM _h_owned) AS o
                ON f.id_key = o.id_key AND f.profile_id = o.att
            GROUP BY ALL
        ), running AS (
            SELECT
                *,
                sum(len(soft)) OVER w AS soft_total,
                CASE WHEN seen IS NOT NULL THEN
                    sum(len(soft)) OVER w - len(list_filter(soft, lambda t: t > seen.us))
                END AS kept_here,
                min(seen_first) OVER w AS first_seen_us,
                max(seen) OVER w AS last_seen,
                max(explicit) OVER w AS explicit_now,
                max(unknown) OVER w AS unknown_now,
                sum(hard) OVER w AS hard_now,
                sum(complaints) OVER w AS complaints_now,
                max(ccpa) OVER w AS ccpa_now
            FROM days
            WINDOW w AS (PARTITION BY id_key, att ORDER BY day)
        )
        SELECT
            id_key, att, day, first_seen_us, last_seen,
            explicit_now AS explicit, unknown_now AS unknown,
            hard_now AS hard, complaints_now AS complaints,
            soft_total - coalesce(last_value(kept_here IGNORE NULLS) OVER (
                PARTITION BY id_key, att ORDER BY day), 0) AS consecutive,
            ccpa_now AS ccpa
        FROM running
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _h_change_days AS
        SELECT root, from_day AS day FROM _h_owned
        UNION
        SELECT o.root, s.day
        FROM _h_owned AS o
        JOIN _h_states AS s ON s.id_key = o.id_key AND s.att = o.att
            AND s.day >= o.from_day AND (o.to_day IS NULL OR s.day < o.to_day)
        """
    )
