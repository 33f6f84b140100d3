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
--   profile_export          one row per live profile: last-seen ids, all ids, reachability

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

-- One row per live profile; a profile without a messaging identifier is unreachable.
-- Same rules as identifier_reachability, applied to profile_reachability_inputs (one narrow
-- row per profile, kept by the fold) so that counting millions of profiles stays fast: email
-- and sms take the verdict of the last-seen identifier, push takes any token.
CREATE OR REPLACE VIEW profile_reachability AS
WITH judged AS (
    SELECT
        r.profile_id,
        r.ccpa_opted_out,
        r.email_consent IS NOT NULL
            AND (s.soft_bounce_limit = 0 OR r.email_soft_bounces < s.soft_bounce_limit)
            AND (r.email_consent = 'opted_in'
                 OR (r.email_consent = 'unknown' AND s.implicit_consent_email)) AS email,
        r.sms_consent IS NOT NULL
            AND (s.soft_bounce_limit = 0 OR r.sms_soft_bounces < s.soft_bounce_limit)
            AND (r.sms_consent = 'opted_in'
                 OR (r.sms_consent = 'unknown' AND s.implicit_consent_sms)) AS sms,
        (r.push_opted_in_soft_bounces IS NOT NULL
            AND (s.soft_bounce_limit = 0 OR r.push_opted_in_soft_bounces < s.soft_bounce_limit))
        OR (s.implicit_consent_push AND r.push_unknown_soft_bounces IS NOT NULL
            AND (s.soft_bounce_limit = 0 OR r.push_unknown_soft_bounces < s.soft_bounce_limit))
            AS push,
        s.ccpa_blocks_email, s.ccpa_blocks_sms, s.ccpa_blocks_push
    FROM profile_reachability_inputs AS r
    CROSS JOIN settings_typed AS s
), gated AS (
    SELECT
        profile_id,
        email AND NOT (ccpa_opted_out AND ccpa_blocks_email) AS email,
        sms AND NOT (ccpa_opted_out AND ccpa_blocks_sms) AS sms,
        push AND NOT (ccpa_opted_out AND ccpa_blocks_push) AS push
    FROM judged
)
SELECT profile_id, email, sms, push, email OR sms OR push AS reachable_any
FROM gated;

-- channel 'any' counts profiles reachable on at least one channel (reachable_any).
CREATE OR REPLACE VIEW reachability_counts AS
WITH tally AS (
    SELECT
        count(*) AS total,
        count(*) FILTER (email) AS email,
        count(*) FILTER (sms) AS sms,
        count(*) FILTER (push) AS push,
        count(*) FILTER (reachable_any) AS reachable_any
    FROM profile_reachability
)
SELECT channel, total, reachable, total - reachable AS unreachable
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
