-- Repairs: one per violation occurrence (rule, key, first_seen_us of the occurrence), planned
-- once whatever the number of runs that see it. A repair waits (pending, dry_run), is queued
-- (approved), and ends applied, failed, skipped, rejected or needs_manual. A worker claims an
-- approved repair by taking its lease (lease_owner, lease_until_us) and a new fence; it writes
-- its result only while the fence is still its own.
CREATE TABLE repairs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    rule             TEXT    NOT NULL,
    key              TEXT    NOT NULL,
    occurrence_us    BIGINT  NOT NULL,  -- first_seen_us of the violation it repairs
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'dry_run', 'approved', 'applied', 'failed', 'skipped', 'rejected', 'needs_manual')),
    mode             TEXT    NOT NULL,  -- auto | approve: how it was planned
    action           TEXT    NOT NULL,  -- the chosen action's name
    actions          TEXT    NOT NULL,  -- JSON: every action the rule offers, filled in for the key
    idempotency_key  TEXT    NOT NULL,  -- from rule, key, chosen action and occurrence
    hold_reason      TEXT,              -- why it waits for a person, as people read it
    held_by          TEXT,              -- which guardrail holds it: dry_run, not_enabled, too_many, suspicious, four_eyes, invalid
    created_us       BIGINT  NOT NULL,
    updated_us       BIGINT  NOT NULL,
    approved_by      TEXT,
    comment          TEXT,
    attempts         BIGINT  NOT NULL DEFAULT 0,
    next_attempt_us  BIGINT  NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_until_us   BIGINT,
    fence            BIGINT  NOT NULL DEFAULT 0,
    interrupted      BIGINT  NOT NULL DEFAULT 0,  -- 1: an attempt may have acted without a result
    result           TEXT,              -- what the last attempt found or did
    finished_us      BIGINT
);
CREATE UNIQUE INDEX repairs_once ON repairs (rule, key, occurrence_us);
CREATE INDEX repairs_queue ON repairs (state, next_attempt_us, id);
CREATE INDEX repairs_by_rule ON repairs (rule, state, id);

-- Which version of a rule (its fingerprint) a person allowed to repair automatically.
CREATE TABLE repair_enablement (
    rule         TEXT    PRIMARY KEY,
    fingerprint  TEXT    NOT NULL,
    enabled_by   TEXT    NOT NULL,
    enabled_us   BIGINT  NOT NULL
);
