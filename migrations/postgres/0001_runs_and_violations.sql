-- Rule runs, violations and their lifecycle. Timestamps are microseconds since the Unix epoch, UTC.

CREATE TABLE runs (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule          TEXT    NOT NULL,
    started_us    BIGINT  NOT NULL,
    finished_us   BIGINT  NOT NULL,
    outcome       TEXT    NOT NULL CHECK (outcome IN ('pass', 'fail', 'unknown')),
    rows_scanned  BIGINT  NOT NULL,
    violations    BIGINT  NOT NULL,
    error         TEXT
);
CREATE INDEX runs_by_rule ON runs (rule, id);

CREATE TABLE violations (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule           TEXT    NOT NULL,
    key            TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('open', 'resolved')),
    message        TEXT    NOT NULL,
    datasets       TEXT    NOT NULL,  -- JSON: what each dataset held for the key when last seen
    first_seen_us  BIGINT  NOT NULL,
    last_seen_us   BIGINT  NOT NULL,
    occurrences    BIGINT  NOT NULL,  -- runs that found it
    resolved_us    BIGINT,
    previous_id    BIGINT REFERENCES violations (id)  -- the same rule and key, resolved before
);
-- At most one open violation per rule and key.
CREATE UNIQUE INDEX violations_open ON violations (rule, key) WHERE state = 'open';
CREATE INDEX violations_by_rule ON violations (rule, state, id);
CREATE INDEX violations_by_state ON violations (state, id);

-- Cumulative counts per rule (runs by outcome, violations detected and resolved): they survive
-- the pruning of old rows, so the metrics built on them never go backwards.
CREATE TABLE rule_counters (
    rule   TEXT   NOT NULL,
    name   TEXT   NOT NULL,
    value  BIGINT NOT NULL,
    PRIMARY KEY (rule, name)
);
