-- profile-engine projection tables. Every timestamp is UTC (TIMESTAMP holds UTC wall time).
-- Rows are derived from the Kafka log and can be rebuilt from it at any time, except
-- `settings` (user configuration) which a rebuild copies over.
-- Profile ids are UUIDs (UUIDv5 of the creating event's id): a 16-byte key joins several
-- times faster than its text, and the fold joins stored rows by profile on every batch.

-- One row per live (not erased, not merged-away) profile.
CREATE TABLE IF NOT EXISTS profiles (
    profile_id        UUID NOT NULL,      -- derived from the creating event's event_id
    created_at        TIMESTAMP NOT NULL, -- event time of the creating event
    created_event_id  VARCHAR NOT NULL,
    first_seen        TIMESTAMP,          -- earliest event time applied to the profile
    last_seen         TIMESTAMP,          -- latest event time applied to the profile
    event_count       BIGINT NOT NULL,
    ccpa_opted_out    BOOLEAN NOT NULL,
    ccpa_updated_at   TIMESTAMP,
    ccpa_event_id     VARCHAR,
    order_count       BIGINT NOT NULL,
    revenue           DOUBLE NOT NULL,    -- lifetime value
    last_purchase_at  TIMESTAMP
);

-- One row per identifier of a live profile.
CREATE TABLE IF NOT EXISTS identifiers (
    -- 128-bit hash of (id_type, id_value): what the fold joins on to find an identifier
    id_key                   UUID NOT NULL,
    profile_id               UUID NOT NULL,
    id_type                  VARCHAR NOT NULL, -- customer_id|email|phone|push_token|anonymous_id
    id_value                 VARCHAR NOT NULL, -- normalised (email lower-case, phone E.164)
    valid                    BOOLEAN NOT NULL, -- passed its syntax check
    deliverable              BOOLEAN NOT NULL, -- valid, no hard bounce, no complaint
    consent                  VARCHAR NOT NULL, -- opted_in|opted_out|pending|unknown
    consent_updated_at       TIMESTAMP,
    first_seen               TIMESTAMP,        -- identify/track/consent/subscription only
    last_seen                TIMESTAMP,
    last_seen_event_id       VARCHAR,          -- tie-break for "last seen" (later key wins)
    -- the profile's last-seen identifier of this type: greatest (last_seen, then
    -- last_seen_event_id, then id_value; NULLs lowest). Stored so counts need no window.
    is_last_seen             BOOLEAN NOT NULL DEFAULT false,
    hard_bounces             BIGINT NOT NULL,
    complaints               BIGINT NOT NULL,
    soft_bounces             BIGINT NOT NULL,
    consecutive_soft_bounces BIGINT NOT NULL,
    -- fold bookkeeping: the two consent candidates, so a restart resumes exactly
    consent_explicit          VARCHAR,         -- latest opted_in|opted_out|pending
    consent_explicit_at       TIMESTAMP,
    consent_explicit_event_id VARCHAR,
    consent_unknown_at        TIMESTAMP,       -- latest unknown
    consent_unknown_event_id  VARCHAR,
    recent_soft_bounces_us    BIGINT[],        -- soft bounce times after last_seen (µs)
    -- CCPA requests are kept per identifier (LWW); a profile is opted out if any is
    ccpa                      VARCHAR,         -- opt_out|opt_in|NULL
    ccpa_updated_at           TIMESTAMP,
    ccpa_event_id             VARCHAR
);

-- Traits, one row per (profile, name); value as text plus its JSON type.
-- The view profile_traits (see views.sql) gives them their registered SQL types.
CREATE TABLE IF NOT EXISTS traits (
    profile_id  UUID NOT NULL,
    name        VARCHAR NOT NULL,
    value       VARCHAR NOT NULL,   -- text form: 'true'/'false', 42, 1.5, or the string
    value_type  VARCHAR NOT NULL,   -- string|long|double|boolean (the JSON type on the log)
    updated_at  TIMESTAMP NOT NULL,
    source      VARCHAR NOT NULL    -- event_id that set it
);

-- Traits unset by a null (kept so that an older value arriving later cannot resurrect them).
CREATE TABLE IF NOT EXISTS trait_tombstones (
    profile_id  UUID NOT NULL,
    name        VARCHAR NOT NULL,
    updated_at  TIMESTAMP NOT NULL,
    source      VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS subscriptions (
    profile_id  UUID NOT NULL,
    list_id     VARCHAR NOT NULL,
    channel     VARCHAR NOT NULL,
    status      VARCHAR NOT NULL,   -- subscribed|unsubscribed|unconfirmed|suspended
    identifier  VARCHAR,            -- the channel identifier the event carried
    updated_at  TIMESTAMP NOT NULL,
    event_id    VARCHAR NOT NULL
);

-- Purchases (track "purchase"), one row per order_id per profile.
CREATE TABLE IF NOT EXISTS orders (
    profile_id  UUID NOT NULL,
    order_id    VARCHAR NOT NULL,
    revenue     DOUBLE NOT NULL,
    ordered_at  TIMESTAMP NOT NULL,
    event_id    VARCHAR NOT NULL
);

-- A merged-away profile id keeps resolving to its survivor.
CREATE TABLE IF NOT EXISTS profile_merges (
    merged_profile_id    UUID NOT NULL,
    survivor_profile_id  UUID NOT NULL,  -- always a live profile (chains are collapsed)
    merged_at            TIMESTAMP NOT NULL,
    event_id             VARCHAR NOT NULL
);

-- An identifier an event could not link without breaking a per-type limit.
CREATE TABLE IF NOT EXISTS identity_conflicts (
    event_id          VARCHAR NOT NULL,
    event_time        TIMESTAMP NOT NULL,
    dropped_id_type   VARCHAR NOT NULL,
    dropped_id_value  VARCHAR NOT NULL,
    owner_profile_id  UUID,               -- where the dropped identifier stays (NULL if new)
    event_profile_id  UUID,               -- where the event applied
    rule              VARCHAR NOT NULL
);

-- The timeline: every applied event of a live profile.
CREATE TABLE IF NOT EXISTS events (
    event_id    VARCHAR NOT NULL,
    profile_id  UUID NOT NULL,
    type        VARCHAR NOT NULL,
    timestamp   TIMESTAMP NOT NULL,
    event_name  VARCHAR,            -- track events only
    payload     JSON NOT NULL
);

-- Every event_id ever applied (or erased): the same event_id applies once. The fold looks a
-- batch up by event_key (a 128-bit hash of event_id: a cheap join) and compares fingerprints
-- (a hash of the whole event): equal = a redelivery (a duplicate), different = an event_id
-- reused for another event, which is dead-lettered.
CREATE TABLE IF NOT EXISTS applied_events (
    event_id     VARCHAR NOT NULL,
    event_key    UUID NOT NULL,
    fingerprint  UUID NOT NULL
);

-- What reachability needs of each live profile, rewritten by the fold for every profile a
-- batch touches, so that counts aggregate one narrow row per profile instead of joining every
-- identifier; settings still apply at query time (see profile_reachability in views.sql).
-- email/sms: the consent of the profile's last-seen identifier of that type when it is
-- deliverable as folded (NULL when there is none or it is not), and its consecutive soft
-- bounces. push: the fewest consecutive soft bounces among deliverable push tokens that are
-- opted in, and among those whose consent is unknown (NULL when there is none).
CREATE TABLE IF NOT EXISTS profile_reachability_inputs (
    profile_id          UUID NOT NULL,
    ccpa_opted_out      BOOLEAN NOT NULL,
    email_consent       VARCHAR,
    email_soft_bounces  BIGINT,
    sms_consent         VARCHAR,
    sms_soft_bounces    BIGINT,
    push_opted_in_soft_bounces  BIGINT,
    push_unknown_soft_bounces   BIGINT
);

-- profile_reachability_inputs grouped: one row per distinct combination of inputs with the
-- number of live profiles that have it (a few hundred rows whatever the customer base), kept
-- by the same statements that rewrite the inputs. `counts` judges these rows with today's
-- settings instead of every profile's row (reachability_counts in views.sql).
CREATE TABLE IF NOT EXISTS reachability_input_tally (
    ccpa_opted_out      BOOLEAN NOT NULL,
    email_consent       VARCHAR,
    email_soft_bounces  BIGINT,
    sms_consent         VARCHAR,
    sms_soft_bounces    BIGINT,
    push_opted_in_soft_bounces  BIGINT,
    push_unknown_soft_bounces   BIGINT,
    profiles            BIGINT NOT NULL
);

-- History: profiles over time (README "Profiles over time"). The engine's own decisions, each
-- stamped with the event time of the event that caused it, kept batch by batch in the same
-- transaction as the rest, so counts and profiles can be asked as of any UTC day. No
-- identifier value or trait is kept here; the rows keyed by identifier (id_key) and the
-- event landings go when their profile is erased, the rest holds profile ids, days, event
-- names and reachability inputs only.

-- Every profile the fold ever created: when, into which profile it merged (the survivor at
-- that moment; follow merged_into for later merges), and when it was erased.
CREATE TABLE IF NOT EXISTS profile_lineage (
    profile_id   UUID NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    merged_into  UUID,
    merged_at    TIMESTAMP,
    erased_at    TIMESTAMP            -- set on the profile the erasure named (its tree goes too)
);

-- The identifiers of live profiles: the profile each one attached to, and when.
CREATE TABLE IF NOT EXISTS identifier_attachments (
    id_key       UUID NOT NULL,
    profile_id   UUID NOT NULL,       -- the profile it attached to (see profile_lineage)
    id_type      VARCHAR NOT NULL,
    valid        BOOLEAN NOT NULL,
    attached_at  TIMESTAMP NOT NULL
);

-- Each identifier's state at the end of every UTC day on which events changed it, one row per
-- (identifier, attachment, day): its state on any day is the row of the latest day on or
-- before it. Soft bounces are those after its last seen event (consecutive = their number).
CREATE TABLE IF NOT EXISTS identifier_day_states (
    id_key                  UUID NOT NULL,
    profile_id              UUID NOT NULL,  -- the attachment's profile
    day                     DATE NOT NULL,
    first_seen_us           BIGINT,         -- identify/track/consent/subscription events (µs)
    last_seen_us            BIGINT,
    last_seen_eid           VARCHAR,
    explicit_consent        VARCHAR,        -- the latest opted_in|opted_out|pending
    explicit_us             BIGINT,
    explicit_eid            VARCHAR,
    unknown_us              BIGINT,         -- the latest "unknown"
    unknown_eid             VARCHAR,
    hard_bounces            BIGINT NOT NULL,
    complaints              BIGINT NOT NULL,
    recent_soft_bounces_us  BIGINT[] NOT NULL,
    ccpa                    VARCHAR,        -- the latest opt_out|opt_in
    ccpa_us                 BIGINT,
    ccpa_eid                VARCHAR
);

-- profile_reachability_inputs over time: a row per profile and UTC day on which its inputs
-- changed, valid on the days [valid_from, valid_to) (valid_to NULL: still valid). A profile
-- has rows from its creation until it is merged away or erased; an erased profile keeps its
-- rows (counts of the days before the erasure include it).
CREATE TABLE IF NOT EXISTS profile_reachability_history (
    profile_id          UUID NOT NULL,
    valid_from          DATE NOT NULL,
    valid_to            DATE,
    ccpa_opted_out      BOOLEAN NOT NULL,
    email_consent       VARCHAR,
    email_soft_bounces  BIGINT,
    sms_consent         VARCHAR,
    sms_soft_bounces    BIGINT,
    push_opted_in_soft_bounces  BIGINT,
    push_unknown_soft_bounces   BIGINT
);

-- Activity for monthly active users over time: the first UTC day of a month on which a
-- profile (the one the event landed on) had a track event of a name. Kept after an erasure.
CREATE TABLE IF NOT EXISTS activity_days (
    profile_id  UUID NOT NULL,
    month       DATE NOT NULL,        -- first day of the month
    event_name  VARCHAR NOT NULL,
    first_day   DATE NOT NULL
);

-- Timeline events whose profile was merged away since they were folded: the profile they
-- landed on (events has the live survivor).
CREATE TABLE IF NOT EXISTS event_landings (
    event_id    VARCHAR NOT NULL,
    profile_id  UUID NOT NULL
);

-- Messages and lines that could not be decoded or broke the contract.
CREATE TABLE IF NOT EXISTS dead_letters (
    source       VARCHAR NOT NULL,  -- topic name or file path
    "partition"  INTEGER,
    "offset"     BIGINT,
    line_number  BIGINT,
    message_key  BLOB,
    raw          BLOB,
    reason       VARCHAR NOT NULL,
    logged_at    TIMESTAMP          -- message timestamp (Kafka) or NULL (file)
);

-- Where the projections are in the log: advanced in the same transaction as the rows.
CREATE TABLE IF NOT EXISTS consumer_offsets (
    topic        VARCHAR NOT NULL,
    "partition"  INTEGER NOT NULL,
    next_offset  BIGINT NOT NULL
);

-- User settings (reachability rules etc.); JSON-encoded values. Copied over by a rebuild.
CREATE TABLE IF NOT EXISTS settings (
    key    VARCHAR NOT NULL,
    value  VARCHAR NOT NULL
);

-- The data keys the sealed values of this projection need (README "Erasure that reaches the
-- log"), wrapped under the master key: reads decrypt without Kafka. An erasure deletes the
-- keys of the erased identifiers. Empty in a projection folded without a master key.
CREATE TABLE IF NOT EXISTS data_keys (
    key_ref  VARCHAR NOT NULL,  -- 40 hex digits: the identifier's blind index and a version
    blind    UUID NOT NULL,     -- the blind index (= identifiers.id_key of the identifier)
    wrapped  BLOB NOT NULL      -- the data key, encrypted under the master key
);

-- Small bookkeeping values of the projection (schema version, fold counters).
CREATE TABLE IF NOT EXISTS projection_meta (
    key    VARCHAR NOT NULL,
    value  VARCHAR NOT NULL
);
