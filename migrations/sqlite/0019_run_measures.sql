-- What a rule that measures (a row_count check with max_drop) counted in each run: its next
-- run compares with the newest one of the same rule version.
ALTER TABLE runs ADD COLUMN measure BIGINT;
