-- ART indexes for point lookups (`profile-engine profile`, the live server): one per table
-- the profile page reads by key. Counts and exports scan whole tables and do not use them.
-- DuckDB uses an index only for an equality filter on the indexed column alone, so an
-- identifier is looked up by its key (a hash of type and value), never by two columns.
-- The fold keeps them valid while it writes, so readers beside a running fold stay fast.
CREATE INDEX IF NOT EXISTS identifiers_by_key ON identifiers (id_key);
CREATE INDEX IF NOT EXISTS identifiers_by_profile ON identifiers (profile_id);
CREATE INDEX IF NOT EXISTS profiles_by_id ON profiles (profile_id);
CREATE INDEX IF NOT EXISTS events_by_profile ON events (profile_id);
CREATE INDEX IF NOT EXISTS traits_by_profile ON traits (profile_id);
CREATE INDEX IF NOT EXISTS subscriptions_by_profile ON subscriptions (profile_id);
CREATE INDEX IF NOT EXISTS merges_by_merged_id ON profile_merges (merged_profile_id);
CREATE INDEX IF NOT EXISTS data_keys_by_ref ON data_keys (key_ref);
