-- How much a run read (`full`: every key; `incremental`: the keys that changed and the open
-- ones), how many keys it found changed, and the version of the rule it ran (its
-- fingerprint): an incremental run starts where the last run of the same version started,
-- and a full sweep is due by the last full one of that version.
ALTER TABLE runs ADD COLUMN mode TEXT NOT NULL DEFAULT 'full';
ALTER TABLE runs ADD COLUMN keys_changed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN fingerprint TEXT;
CREATE INDEX runs_by_version ON runs (rule, fingerprint, mode, started_us);
