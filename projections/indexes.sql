-- ART indexes for point lookups (`profile-engine profile`): one per table the profile page
-- reads by key. Counts and exports scan whole tables and do not use them. DuckDB uses an
-- index only for an equality filter on the indexed column alone, so queries.py filters
-- identifiers on id_value (then checks the type), not on id_type AND id_value.
-- On a 1M-profile projection these take a lookup from ~50 ms to ~5-10 ms; they cost file size
-- and some write time (the writer deletes and re-inserts every row a batch changed).
CREATE INDEX IF NOT EXISTS identifiers_by_value ON identifiers (id_value);
CREATE INDEX IF NOT EXISTS identifiers_by_profile ON identifiers (profile_id);
CREATE INDEX IF NOT EXISTS profiles_by_id ON profiles (profile_id);
CREATE INDEX IF NOT EXISTS events_by_profile ON events (profile_id);
CREATE INDEX IF NOT EXISTS traits_by_profile ON traits (profile_id);
CREATE INDEX IF NOT EXISTS subscriptions_by_profile ON subscriptions (profile_id);
CREATE INDEX IF NOT EXISTS merges_by_merged_id ON profile_merges (merged_profile_id);
