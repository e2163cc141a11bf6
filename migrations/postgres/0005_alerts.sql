-- Alerting: the lifecycle of each alert group, and the outbox of notifications to deliver.
-- Both change in one transaction, so a restart neither loses nor repeats an announcement.

-- One row per group: a rule's violations (`violation/RULE`), a rule that cannot be judged
-- (`unknown/RULE`) or has not succeeded for long (`stale/RULE`), a source down
-- (`source_down/SOURCE`).
CREATE TABLE alert_groups (
    group_key         TEXT    PRIMARY KEY,
    firing            BIGINT  NOT NULL,  -- 1 once announced firing, 0 once announced resolved
    pending_since_us  BIGINT,            -- when what is observed began to differ from `firing`
    started_us        BIGINT,            -- when the firing was announced
    last_sent_us      BIGINT,            -- the last announcement
    sent_count        BIGINT  NOT NULL,  -- violations in the last announcement
    sequence          BIGINT  NOT NULL,  -- announcements so far: part of each message's id
    refreshed_us      BIGINT             -- the last re-send to Alertmanager receivers
);

-- One row per notification and receiver, until the receiver has it.
CREATE TABLE alert_outbox (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id       TEXT    NOT NULL,  -- stable across retries: receivers deduplicate on it
    receiver         TEXT    NOT NULL,
    notification     TEXT    NOT NULL,  -- JSON: what happened, rendered per receiver when sent
    created_us       BIGINT  NOT NULL,
    attempts         BIGINT  NOT NULL,
    next_attempt_us  BIGINT  NOT NULL,
    sent_us          BIGINT,
    last_error       TEXT
);
CREATE UNIQUE INDEX alert_outbox_once ON alert_outbox (message_id, receiver);
CREATE INDEX alert_outbox_due ON alert_outbox (receiver, sent_us, id);
