-- What keeps a long history cheap to read and to prune: runs by when they started (pruning),
-- resolved violations by when they were resolved (pruning) and per rule (the history charts
-- read only those resolved within their window), violations by the one they follow, so that
-- deleting an old one finds the row linked to it without reading the table, and a rule's
-- applied repairs by when they finished (the rate limit counts the last hour's; repairs are
-- kept for ever).
CREATE INDEX runs_by_start ON runs (started_us);
CREATE INDEX violations_resolved ON violations (resolved_us, id) WHERE state = 'resolved';
CREATE INDEX violations_resolved_by_rule ON violations (rule, resolved_us) WHERE state = 'resolved';
CREATE INDEX violations_by_previous ON violations (previous_id) WHERE previous_id IS NOT NULL;
CREATE INDEX repairs_applied ON repairs (rule, finished_us) WHERE state = 'applied';
