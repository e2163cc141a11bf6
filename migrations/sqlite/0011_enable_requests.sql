-- Four eyes for enabling a rule's automatic repairs: the first person's request for a version
-- (its fingerprint) waits here until a second person enables the same version.
CREATE TABLE repair_enable_requests (
    rule          TEXT    PRIMARY KEY,
    fingerprint   TEXT    NOT NULL,
    requested_by  TEXT    NOT NULL,
    requested_us  BIGINT  NOT NULL
);

-- `audit verify` looks up each repair's entries by subject (`repair/12`).
CREATE INDEX audit_log_subject ON audit_log (subject);
