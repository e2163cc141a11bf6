-- Partitioned full sweeps. `sweep_boundaries`: per rule, the keys its last full sweep sampled
-- (a JSON list, in key order) and the rule version they are of: where its next full sweep
-- splits. `sweep_parts`: the key ranges of a rule's latest partitioned sweep (`sweep`, the
-- instant it judges, in microseconds), each read by whichever replica takes its
-- `part/RULE/SWEEP/PART` lease, from the snapshots the sweep's starter exported and holds
-- (`snapshots`, JSON: id by source); `result` is the part's run (JSON), written under that
-- lease and cleared once the runs are merged and recorded (`state` stays `done`).
CREATE TABLE sweep_boundaries (
    rule         TEXT    PRIMARY KEY,
    fingerprint  TEXT    NOT NULL,
    keys         TEXT    NOT NULL,
    sampled_us   BIGINT  NOT NULL
);

CREATE TABLE sweep_parts (
    rule         TEXT    NOT NULL,
    sweep        BIGINT  NOT NULL,
    part         BIGINT  NOT NULL,
    fingerprint  TEXT    NOT NULL,
    key_range    TEXT    NOT NULL,
    snapshots    TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    holder       TEXT,
    result       TEXT,
    PRIMARY KEY (rule, sweep, part)
);
