-- The audit log: who changed what through invariantd, append-only. A row is inserted plain;
-- sealing then gives it the next number in the chain (seal_seq 1, 2, 3, …) and a hash over the
-- previous row's hash and its own fields, so that editing a sealed row, or deleting one, breaks
-- the chain where it happened — which `invariantd audit verify` finds.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at_us      BIGINT  NOT NULL,
    actor      TEXT    NOT NULL,  -- a token's name, or `signal`, `invariantd`
    action     TEXT    NOT NULL,  -- `silence.add`, `silence.expire`, `config.reload`, …
    subject    TEXT    NOT NULL,  -- what it acted on: `silence/3`
    details    TEXT    NOT NULL,  -- JSON
    seal_seq   BIGINT,            -- null until sealed
    prev_hash  TEXT,
    hash       TEXT
);
CREATE UNIQUE INDEX audit_log_chain ON audit_log (seal_seq);
