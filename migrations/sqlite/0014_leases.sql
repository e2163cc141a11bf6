-- Leases for replicas sharing one state store: who holds a piece of work (`name`), its
-- fencing token (one more at each change of holder: a write guarded by the lease checks it
-- in its own transaction), and until when, all by the database's clock in microseconds.
-- A released lease keeps its row (expired), so its next token is still larger.
CREATE TABLE leases (
    name         TEXT    PRIMARY KEY,
    holder       TEXT    NOT NULL,
    token        BIGINT  NOT NULL,
    acquired_us  BIGINT  NOT NULL,
    renewed_us   BIGINT  NOT NULL,
    expires_us   BIGINT  NOT NULL
);
