-- profile-engine query views: reachability and monthly active users, as SQL.
-- `profile-engine counts`, `profile` and `export` read these same views, so a SQL user gets
-- the numbers the CLI prints. Settings are read from the `settings` table on every query
-- (defaults when absent), so `profile-engine settings set` moves the numbers at once.
--
-- Views (all read-only; safe to re-apply: CREATE OR REPLACE):
--   setting_defaults        (key, value)                 built-in defaults, JSON text
--   effective_settings      (key, value, default_value, overridden)
--   settings_typed          one row, one typed column per setting
--   channel_settings        (channel, id_type, ccpa_blocks, implicit_consent)
--   identifier_status       every identifier: is_last_seen, effective deliverable and why not
--   identifier_reachability messaging identifiers: eligible for their channel, and why not
--   profile_reachability    (profile_id, email, sms, push, reachable_any) per live profile
--   reachability_counts     (channel, total, reachable, unreachable) for email|sms|push|any
--   monthly_active_users    (month 'YYYY-MM', mau) for every month with activity
--   mau_for_month('YYYY-MM') table macro: (month, mau) for one month, zero when none
--   judged_reachability('table') table macro: a table of reachability inputs with its verdicts
--   profile_export          one row per live profile: last-seen ids, all ids, reachability
--   profile_reachability_over_time  the history's spans judged with today's settings
--   reachability_counts_daily(first, last), mau_daily(first, last), counts_daily(first, last)
--                           table macros: one row per UTC day (see "Profiles over time")

-- Keep in sync with profile_engine/reachability.py (a test compares them).
CREATE OR REPLACE VIEW setting_defaults AS
SELECT * FROM (VALUES
    ('ccpa_blocks.email', 'true'),
    ('ccpa_blocks.sms', 'true'),
    ('ccpa_blocks.push', 'true'),
    ('implicit_consent.email', 'true'),
    ('implicit_consent.sms', 'false'),
    ('implicit_consent.push', 'true'),
    ('mau.excluded_events', '["message_sent"]'),
    ('bounce.soft_bounce_limit', '0')
) AS defaults(key, value);

-- Unknown keys in `settings` are ignored: only known settings have an effect.
CREATE OR REPLACE VIEW effective_settings AS
SELECT
    d.key,
    coalesce(s.value, d.value) AS value,
    d.value AS default_value,
    s.value IS NOT NULL AS overridden
FROM setting_defaults AS d
LEFT JOIN (SELECT key, max(value) AS value FROM settings GROUP BY key) AS s USING (key);

-- One row, one typed column per setting (a map lookup plans faster than eight aggregates).
CREATE OR REPLACE VIEW settings_typed AS
WITH m AS (SELECT map_from_entries(list((key, value))) AS v FROM effective_settings)
SELECT
    v['ccpa_blocks.email']::BOOLEAN AS ccpa_blocks_email,
    v['ccpa_blocks.sms']::BOOLEAN AS ccpa_blocks_sms,
    v['ccpa_blocks.push']::BOOLEAN AS ccpa_blocks_push,
    v['implicit_consent.email']::BOOLEAN AS implicit_consent_email,
    v['implicit_consent.sms']::BOOLEAN AS implicit_consent_sms,
    v['implicit_consent.push']::BOOLEAN AS implicit_consent_push,
    from_json(v['mau.excluded_events'], '["VARCHAR"]') AS mau_excluded_events,
    v['bounce.soft_bounce_limit']::BIGINT AS soft_bounce_limit
FROM m;

CREATE OR REPLACE VIEW channel_settings AS
SELECT unnest([
    {'channel': 'email', 'id_type': 'email',
     'ccpa_blocks': ccpa_blocks_email, 'implicit_consent': implicit_consent_email},
    {'channel': 'sms', 'id_type': 'phone',
     'ccpa_blocks': ccpa_blocks_sms, 'implicit_consent': implicit_consent_sms},
    {'channel': 'push', 'id_type': 'push_token',
     'ccpa_blocks': ccpa_blocks_push, 'implicit_consent': implicit_consent_push}
], recursive := true)
FROM settings_typed;

-- The per-identifier checks that do not depend on the profile's other identifiers.
-- is_last_seen (stored by the fold) marks the last-seen identifier of each type: latest
-- last_seen, then the later last_seen_event_id, then id_value so ties are stable; NULLs lowest.
-- deliverable applies bounce.soft_bounce_limit on top of the folded flag.
-- undeliverable_reason: NULL | invalid | hard_bounce | complaint | undeliverable
--                       | soft_bounce_limit
-- consented: opted_in, or unknown while implicit_consent.<channel> is true (never pending).
CREATE OR REPLACE VIEW identifier_checks AS
SELECT
    i.profile_id,
    i.id_type,
    i.id_value,
    CASE i.id_type WHEN 'email' THEN 'email' WHEN 'phone' THEN 'sms' WHEN 'push_token' THEN 'push'
    END AS channel,
    i.is_last_seen,
    i.valid,
    i.deliverable
        AND (s.soft_bounce_limit = 0 OR i.consecutive_soft_bounces < s.soft_bounce_limit)
        AS deliverable,
    CASE
        WHEN NOT i.deliverable THEN CASE
            WHEN NOT i.valid THEN 'invalid'
            WHEN i.hard_bounces > 0 THEN 'hard_bounce'
            WHEN i.complaints > 0 THEN 'complaint'
            ELSE 'undeliverable'
        END
        WHEN s.soft_bounce_limit > 0 AND i.consecutive_soft_bounces >= s.soft_bounce_limit
            THEN 'soft_bounce_limit'
    END AS undeliverable_reason,
    i.consent,
    i.consent = 'opted_in' OR (i.consent = 'unknown' AND CASE i.id_type
        WHEN 'email' THEN s.implicit_consent_email
        WHEN 'phone' THEN s.implicit_consent_sms
        WHEN 'push_token' THEN s.implicit_consent_push
        ELSE false
    END) AS consented,
    CASE i.id_type
        WHEN 'email' THEN s.ccpa_blocks_email
        WHEN 'phone' THEN s.ccpa_blocks_sms
        WHEN 'push_token' THEN s.ccpa_blocks_push
        ELSE false
    END AS ccpa_blocks,
    i.first_seen,
    i.last_seen,
    i.hard_bounces,
    i.complaints,
    i.soft_bounces,
    i.consecutive_soft_bounces
FROM identifiers AS i
CROSS JOIN settings_typed AS s;

-- Every identifier of every live profile, tagged as the profile page shows it: last seen,
-- deliverable, consent, and (messaging identifiers only; NULL for the others) whether it is
-- eligible for its channel and, if not, the first rule that fails, in this order:
--   ccpa_opted_out (when ccpa_blocks.<channel>), not_last_seen (email and sms only),
--   invalid | hard_bounce | complaint | undeliverable | soft_bounce_limit,
--   consent_opted_out | consent_pending | consent_unknown (implicit_consent.<channel> false).
CREATE OR REPLACE VIEW identifier_status AS
WITH ranked AS (
    SELECT
        c.*,
        p.ccpa_opted_out
    FROM identifier_checks AS c
    JOIN profiles AS p ON p.profile_id = c.profile_id
), judged AS (
    SELECT
        *,
        CASE
            WHEN channel IS NULL THEN NULL
            WHEN ccpa_opted_out AND ccpa_blocks THEN 'ccpa_opted_out'
            WHEN channel <> 'push' AND NOT is_last_seen THEN 'not_last_seen'
            WHEN NOT deliverable THEN undeliverable_reason
            WHEN consented THEN NULL
            ELSE 'consent_' || consent
        END AS reason
    FROM ranked
)
SELECT
    profile_id, id_type, id_value, channel, is_last_seen, valid, deliverable,
    undeliverable_reason, consent, ccpa_opted_out,
    CASE WHEN channel IS NOT NULL THEN reason IS NULL END AS eligible,
    reason,
    first_seen, last_seen, hard_bounces, complaints, soft_bounces, consecutive_soft_bounces
FROM judged;

-- One row per messaging identifier (email, phone, push_token) of a live profile.
CREATE OR REPLACE VIEW identifier_reachability AS
SELECT
    profile_id, channel, id_type, id_value, is_last_seen, deliverable, consent,
    ccpa_opted_out, eligible, reason
FROM identifier_status
WHERE channel IS NOT NULL;

-- One channel's verdict from a profile's reachability inputs, settings applied (see
-- judged_reachability below). email and sms take the verdict of the last-seen identifier;
-- push takes any token.
CREATE OR REPLACE MACRO channel_reachable(
    consent, soft_bounces, implicit_consent, soft_limit, ccpa_opted_out, ccpa_blocks
) AS
    consent IS NOT NULL
    AND (soft_limit = 0 OR soft_bounces < soft_limit)
    AND (consent = 'opted_in' OR (consent = 'unknown' AND implicit_consent))
    AND NOT (ccpa_opted_out AND ccpa_blocks);

CREATE OR REPLACE MACRO push_reachable(
    opted_in_soft_bounces, unknown_soft_bounces, implicit_consent, soft_limit, ccpa_opted_out,
    ccpa_blocks
) AS
    ((opted_in_soft_bounces IS NOT NULL
        AND (soft_limit = 0 OR opted_in_soft_bounces < soft_limit))
     OR (implicit_consent AND unknown_soft_bounces IS NOT NULL
        AND (soft_limit = 0 OR unknown_soft_bounces < soft_limit)))
    AND NOT (ccpa_opted_out AND ccpa_blocks);

-- SELECT * FROM judged_reachability('table'): every row of a table with the columns of
-- profile_reachability_inputs, with its verdicts (email, sms, push, reachable_any) under
-- today's settings. The one place the rules above are applied: to today's profiles
-- (profile_reachability), to their tally (reachability_counts) and to every past day
-- (profile_reachability_over_time).
CREATE OR REPLACE MACRO judged_reachability(source) AS TABLE
SELECT
    r.*,
        channel_reachable(r.email_consent, r.email_soft_bounces, s.implicit_consent_email,
            s.soft_bounce_limit, r.ccpa_opted_out, s.ccpa_blocks_email) AS email,
        channel_reachable(r.sms_consent, r.sms_soft_bounces, s.implicit_consent_sms,
            s.soft_bounce_limit, r.ccpa_opted_out, s.ccpa_blocks_sms) AS sms,
        push_reachable(r.push_opted_in_soft_bounces, r.push_unknown_soft_bounces,
            s.implicit_consent_push, s.soft_bounce_limit, r.ccpa_opted_out, s.ccpa_blocks_push)
            AS push,
    email OR sms OR push AS reachable_any
FROM query_table(source) AS r
CROSS JOIN settings_typed AS s;

-- One row per live profile; a profile without a messaging identifier is unreachable.
-- Same rules as identifier_reachability, applied to profile_reachability_inputs (one narrow
-- row per profile, kept by the fold) so that counting millions of profiles stays fast.
CREATE OR REPLACE VIEW profile_reachability AS
SELECT profile_id, email, sms, push, reachable_any
FROM judged_reachability('profile_reachability_inputs');

-- channel 'any' counts profiles reachable on at least one channel (reachable_any).
-- The same rules as profile_reachability, applied once per distinct combination of inputs
-- (reachability_input_tally, a few hundred rows) and weighted by its number of profiles.
CREATE OR REPLACE VIEW reachability_counts AS
WITH tally AS (
    SELECT
        coalesce(sum(profiles), 0) AS total,
        coalesce(sum(profiles) FILTER (email), 0) AS email,
        coalesce(sum(profiles) FILTER (sms), 0) AS sms,
        coalesce(sum(profiles) FILTER (push), 0) AS push,
        coalesce(sum(profiles) FILTER (reachable_any), 0) AS reachable_any
    FROM judged_reachability('reachability_input_tally')
)
SELECT channel, total::BIGINT AS total, reachable::BIGINT AS reachable,
    (total - reachable)::BIGINT AS unreachable
FROM (
    SELECT 1 AS position, 'email' AS channel, total, email AS reachable FROM tally
    UNION ALL SELECT 2, 'sms', total, sms FROM tally
    UNION ALL SELECT 3, 'push', total, push FROM tally
    UNION ALL SELECT 4, 'any', total, reachable_any FROM tally
)
ORDER BY position;

-- Activity = a track event whose name is not in mau.excluded_events; other event types never
-- count. Months are UTC calendar months. Only live profiles count (anonymous ones included).
CREATE OR REPLACE VIEW active_events AS
SELECT e.profile_id, e.timestamp, e.event_name
FROM events AS e
CROSS JOIN settings_typed AS s
WHERE e.type = 'track' AND NOT list_contains(s.mau_excluded_events, e.event_name);

CREATE OR REPLACE VIEW monthly_active_users AS
WITH active_months AS (
    SELECT DISTINCT strftime(timestamp, '%Y-%m') AS month, profile_id FROM active_events
)
SELECT month, count(*) AS mau
FROM active_months
WHERE profile_id IN (SELECT profile_id FROM profiles)
GROUP BY month
ORDER BY month;

-- SELECT * FROM mau_for_month('2026-01'): one row, also for a month without activity.
CREATE OR REPLACE MACRO mau_for_month(month_text) AS TABLE
WITH active_profiles AS (
    SELECT DISTINCT profile_id
    FROM active_events
    WHERE timestamp >= strptime(month_text || '-01', '%Y-%m-%d')
      AND timestamp < strptime(month_text || '-01', '%Y-%m-%d') + INTERVAL 1 MONTH
)
SELECT month_text AS month, count(*) AS mau
FROM active_profiles
WHERE profile_id IN (SELECT profile_id FROM profiles);

-- What `profile-engine export` writes, one row per live profile: the last-seen customer_id,
-- email and phone, every identifier as 'type:value' (the form `profile-engine profile`
-- accepts), and reachability per channel.
CREATE OR REPLACE VIEW profile_export AS
WITH ids AS (
    SELECT
        profile_id,
        any_value(id_value) FILTER (id_type = 'customer_id' AND is_last_seen) AS customer_id,
        any_value(id_value) FILTER (id_type = 'email' AND is_last_seen) AS email,
        any_value(id_value) FILTER (id_type = 'phone' AND is_last_seen) AS phone,
        list_sort(list(id_type || ':' || id_value)) AS identifiers
    FROM identifier_checks
    GROUP BY profile_id
)
SELECT
    p.profile_id,
    p.first_seen,
    p.last_seen,
    p.ccpa_opted_out,
    ids.customer_id,
    ids.email,
    ids.phone,
    coalesce(ids.identifiers, []::VARCHAR[]) AS identifiers,
    r.email AS email_reachable,
    r.sms AS sms_reachable,
    r.push AS push_reachable,
    r.reachable_any,
    p.order_count,
    p.revenue,
    p.last_purchase_at
FROM profiles AS p
JOIN profile_reachability AS r ON r.profile_id = p.profile_id
LEFT JOIN ids ON ids.profile_id = p.profile_id;


-- Profiles over time (README "Profiles over time"). As of UTC day D means the state after
-- every change caused by an event whose event time is before midnight after D, with
-- identity as the engine resolved it and today's settings applied to every day.

-- profile_reachability over time: each history row judged with today's settings, valid on
-- the days [valid_from, valid_to) (valid_to NULL: still).
CREATE OR REPLACE VIEW profile_reachability_over_time AS
SELECT profile_id, valid_from, valid_to, email, sms, push, reachable_any
FROM judged_reachability('profile_reachability_history');

-- SELECT * FROM reachability_counts_daily('2026-01-01', '2026-12-31'): per UTC day, profiles
-- and those reachable per channel and on any. One pass: +1 where a span starts, -1 where it
-- ends, summed over the days.
CREATE OR REPLACE MACRO reachability_counts_daily(first_day, last_day) AS TABLE
WITH spans AS (
    SELECT * FROM profile_reachability_over_time
    WHERE valid_from <= last_day::DATE
      AND (valid_to IS NULL OR valid_to > first_day::DATE)
), moves AS (
    SELECT valid_from AS day, 1 AS total, email::INTEGER AS email, sms::INTEGER AS sms,
        push::INTEGER AS push, reachable_any::INTEGER AS reachable_any
    FROM spans
    UNION ALL
    SELECT valid_to, -1, -email::INTEGER, -sms::INTEGER, -push::INTEGER,
        -reachable_any::INTEGER
    FROM spans WHERE valid_to <= last_day::DATE
), per_day AS (
    SELECT day, sum(total) AS total, sum(email) AS email, sum(sms) AS sms, sum(push) AS push,
        sum(reachable_any) AS reachable_any
    FROM moves GROUP BY day
), running AS (
    SELECT day,
        sum(total) OVER w AS total, sum(email) OVER w AS email, sum(sms) OVER w AS sms,
        sum(push) OVER w AS push, sum(reachable_any) OVER w AS reachable_any
    FROM per_day
    WINDOW w AS (ORDER BY day)
), days AS (
    SELECT range::DATE AS day
    FROM range(first_day::DATE, last_day::DATE + INTERVAL 1 DAY, INTERVAL 1 DAY)
)
SELECT
    d.day,
    coalesce(r.total, 0)::BIGINT AS total,
    coalesce(r.email, 0)::BIGINT AS email_reachable,
    coalesce(r.sms, 0)::BIGINT AS sms_reachable,
    coalesce(r.push, 0)::BIGINT AS push_reachable,
    coalesce(r.reachable_any, 0)::BIGINT AS reachable_any
FROM days AS d
ASOF LEFT JOIN running AS r ON d.day >= r.day
ORDER BY d.day;

-- SELECT * FROM mau_daily('2026-01-01', '2026-12-31'): per UTC day, the monthly active users
-- of its month through the end of that day. A profile counts from its first active day in
-- the month (a track event not in mau.excluded_events, on it or on a profile merged into it
-- by then); profiles merged together by a day count once; an erased profile counts on the
-- days before its erasure.
CREATE OR REPLACE MACRO mau_daily(first_day, last_day) AS TABLE
WITH RECURSIVE active AS (
    SELECT a.profile_id, a.month, min(a.first_day) AS first_day
    FROM activity_days AS a
    CROSS JOIN settings_typed AS s
    WHERE a.month >= date_trunc('month', first_day::DATE) AND a.month <= last_day::DATE
      AND a.first_day <= last_day::DATE
      AND NOT list_contains(s.mau_excluded_events, a.event_name)
    GROUP BY ALL
), chain(pid, node, since, depth) AS (
    SELECT DISTINCT profile_id, profile_id, DATE '0001-01-01', 0 FROM active
    UNION ALL
    SELECT c.pid, l.merged_into, greatest(c.since, l.merged_at::DATE), c.depth + 1
    FROM chain AS c
    JOIN profile_lineage AS l ON l.profile_id = c.node
    WHERE l.merged_into IS NOT NULL
), roots AS (
    SELECT c.pid, c.node AS root, c.since AS from_day,
        least(lead(c.since) OVER (PARTITION BY c.pid ORDER BY c.depth),
              min(l.erased_at::DATE) OVER (PARTITION BY c.pid)) AS to_day
    FROM chain AS c
    JOIN profile_lineage AS l ON l.profile_id = c.node
), spans AS (
    SELECT r.root, a.month,
        greatest(a.first_day, r.from_day) AS s,
        least(r.to_day, (a.month + INTERVAL 1 MONTH)::DATE, last_day::DATE + 1) AS e
    FROM active AS a
    JOIN roots AS r ON r.pid = a.profile_id
), islands AS (
    SELECT root, month, s, e,
        coalesce(s > max(e) OVER (PARTITION BY root, month ORDER BY s, e
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), true) AS starts
    FROM spans WHERE s < e
), numbered AS (
    SELECT *, sum(starts::INTEGER) OVER (PARTITION BY root, month ORDER BY s, e) AS island
    FROM islands
), merged AS (
    SELECT min(s) AS s, max(e) AS e FROM numbered GROUP BY root, month, island
), moves AS (
    SELECT s AS day, 1 AS n FROM merged
    UNION ALL
    SELECT e, -1 FROM merged
), running AS (
    SELECT day, sum(sum(n)) OVER (ORDER BY day) AS mau FROM moves GROUP BY day
), days AS (
    SELECT range::DATE AS day
    FROM range(first_day::DATE, last_day::DATE + INTERVAL 1 DAY, INTERVAL 1 DAY)
)
SELECT d.day, coalesce(r.mau, 0)::BIGINT AS mau
FROM days AS d
ASOF LEFT JOIN running AS r ON d.day >= r.day
ORDER BY d.day;

-- SELECT * FROM counts_daily('2026-01-01', '2026-12-31'): what `counts --daily` prints.
CREATE OR REPLACE MACRO counts_daily(first_day, last_day) AS TABLE
SELECT
    c.day, c.total,
    c.email_reachable, c.total - c.email_reachable AS email_unreachable,
    c.sms_reachable, c.total - c.sms_reachable AS sms_unreachable,
    c.push_reachable, c.total - c.push_reachable AS push_unreachable,
    c.reachable_any, c.total - c.reachable_any AS unreachable_any,
    m.mau
FROM reachability_counts_daily(first_day, last_day) AS c
JOIN mau_daily(first_day, last_day) AS m USING (day)
ORDER BY c.day;
