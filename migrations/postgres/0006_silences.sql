-- Silences: an on-call engineer's "I'm on it". Alerts they match are not sent; nothing else
-- changes. A silence ends by itself at ends_us, or earlier when someone expires it.
CREATE TABLE silences (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    matchers     TEXT    NOT NULL,  -- JSON object: field (rule, severity, kind, source, a label) -> value
    key          TEXT,              -- only this violating key of the matched rule
    comment      TEXT    NOT NULL,
    created_by   TEXT    NOT NULL,
    created_us   BIGINT  NOT NULL,
    ends_us      BIGINT  NOT NULL,
    expired_us   BIGINT,            -- lifted before ends_us
    expired_by   TEXT
);
CREATE INDEX silences_by_end ON silences (ends_us);
