-- The kind of a run's error (source_unreachable, query_failed, timeout, schema_mismatch,
-- duplicate_rows, evaluation, cancelled), beside its text. Runs recorded before have none.
ALTER TABLE runs ADD COLUMN error_kind TEXT;
