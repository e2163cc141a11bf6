-- What resolved a violation when it was not a run of its rule: `repair #17` when the check
-- after an applied repair found the key holding. NULL when a run judged it holding.
ALTER TABLE violations ADD COLUMN resolved_by TEXT;
