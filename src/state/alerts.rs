//! The `alert_groups` and `alert_outbox` tables: where each alert group is in its lifecycle,
//! and the notifications still to deliver. A group's new state and the notifications it causes
//! are written in one transaction; a notification leaves the outbox (is marked sent) only once
//! its receiver has it, so a restart neither loses nor repeats one (a crash between sending
//! and marking sends it again, with the same id).

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Row as _};

use super::{Bind, Pool, StateError, StateStore, Stmt, bound, on_pool};

/// Where an alert group is in its lifecycle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertGroupState {
    pub group_key: String,
    /// Announced firing (and not yet announced resolved).
    pub firing: bool,
    /// When what is observed began to differ from `firing` (damping with `for`).
    pub pending_since_us: Option<i64>,
    /// When the firing was announced.
    pub started_us: Option<i64>,
    /// The last announcement (firing, repeat, grown or resolved).
    pub last_sent_us: Option<i64>,
    /// Violations in the last announcement.
    pub sent_count: i64,
    /// Announcements so far: each message's id carries it.
    pub sequence: i64,
    /// The last re-send of the firing alert to Alertmanager receivers.
    pub refreshed_us: Option<i64>,
    /// The severity it was last announced with while firing.
    pub severity: Option<String>,
    /// The receivers it was announced to while firing: its resolve goes to each.
    pub receivers: Vec<String>,
}

/// A notification for one receiver, to be added to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub message_id: String,
    pub receiver: String,
    /// JSON, rendered for the receiver when it is sent.
    pub notification: String,
}

/// A notification in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub id: i64,
    pub message_id: String,
    pub receiver: String,
    pub notification: String,
    pub created_us: i64,
    pub attempts: i64,
    pub next_attempt_us: i64,
}

fn upsert_group(g: &AlertGroupState) -> Stmt {
    Stmt {
        sql: "INSERT INTO alert_groups (group_key, firing, pending_since_us, started_us, \
              last_sent_us, sent_count, sequence, refreshed_us, severity, receivers) \
              VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
              ON CONFLICT (group_key) DO UPDATE SET firing = excluded.firing, \
              pending_since_us = excluded.pending_since_us, started_us = excluded.started_us, \
              last_sent_us = excluded.last_sent_us, sent_count = excluded.sent_count, \
              sequence = excluded.sequence, refreshed_us = excluded.refreshed_us, \
              severity = excluded.severity, receivers = excluded.receivers"
            .into(),
        binds: vec![
            Bind::Text(g.group_key.clone()),
            Bind::I64(i64::from(g.firing)),
            Bind::OptI64(g.pending_since_us),
            Bind::OptI64(g.started_us),
            Bind::OptI64(g.last_sent_us),
            Bind::I64(g.sent_count),
            Bind::I64(g.sequence),
            Bind::OptI64(g.refreshed_us),
            Bind::OptText(g.severity.clone()),
            // Receiver names are [a-z0-9_]+: a comma cannot be in one.
            Bind::OptText((!g.receivers.is_empty()).then(|| g.receivers.join(","))),
        ],
    }
}

fn insert_outbox(e: &OutboxEntry, now_us: i64) -> Stmt {
    Stmt {
        sql: "INSERT INTO alert_outbox (message_id, receiver, notification, created_us, attempts, \
              next_attempt_us) VALUES ($1, $2, $3, $4, 0, $4) \
              ON CONFLICT (message_id, receiver) DO NOTHING"
            .into(),
        binds: vec![
            Bind::Text(e.message_id.clone()),
            Bind::Text(e.receiver.clone()),
            Bind::Text(e.notification.clone()),
            Bind::I64(now_us),
        ],
    }
}

/// Delivered notifications go with the retention period, and so do undelivered ones queued
/// before it (for a receiver removed from the config, or down for that long): news that old
/// helps nobody, and the outbox stays bounded.
pub(super) fn prune(before_us: i64, limit: i64) -> Vec<Stmt> {
    vec![Stmt {
        sql: "DELETE FROM alert_outbox WHERE id IN (SELECT id FROM alert_outbox WHERE \
              (sent_us IS NOT NULL AND sent_us < $1) OR (sent_us IS NULL AND created_us < $1) \
              LIMIT $2)"
            .into(),
        binds: vec![Bind::I64(before_us), Bind::I64(limit)],
    }]
}

impl StateStore {
    /// Every alert group's state, by group key.
    pub async fn alert_groups(&self) -> Result<HashMap<String, AlertGroupState>, StateError> {
        let mut out = HashMap::new();
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT group_key, firing, pending_since_us, started_us, last_sent_us, sent_count, \
                 sequence, refreshed_us, severity, receivers FROM alert_groups",
            )
            .fetch_all(pool)
            .await?;
            for row in rows {
                let g = AlertGroupState {
                    group_key: row.try_get(0)?,
                    firing: row.try_get::<i64, _>(1)? != 0,
                    pending_since_us: row.try_get(2)?,
                    started_us: row.try_get(3)?,
                    last_sent_us: row.try_get(4)?,
                    sent_count: row.try_get(5)?,
                    sequence: row.try_get(6)?,
                    refreshed_us: row.try_get(7)?,
                    severity: row.try_get(8)?,
                    receivers: row
                        .try_get::<Option<String>, _>(9)?
                        .map(|r| r.split(',').map(str::to_string).collect())
                        .unwrap_or_default(),
                };
                out.insert(g.group_key.clone(), g);
            }
        });
        Ok(out)
    }

    /// Saves a group's new state and queues its notifications, in one transaction. A
    /// notification already queued (same id and receiver) is not queued twice.
    ///
    /// With `lease` (`alerting`, held by this replica) the transaction checks it first, so a
    /// replica that lost alerting cannot write a group's state the new holder has moved on.
    pub async fn save_alert_group(
        &self,
        group: &AlertGroupState,
        outbox: &[OutboxEntry],
        now_us: i64,
        lease: Option<&super::Lease>,
    ) -> Result<(), StateError> {
        let mut statements = vec![upsert_group(group)];
        statements.extend(outbox.iter().map(|e| insert_outbox(e, now_us)));
        self.write_guarded(lease, None, statements).await?;
        Ok(())
    }

    /// The oldest notification a receiver has not got yet: receivers get them in order.
    pub async fn next_notification(&self, receiver: &str) -> Result<Option<OutboxRow>, StateError> {
        let stmt = Stmt {
            sql: "SELECT id, message_id, receiver, notification, created_us, attempts, \
                  next_attempt_us FROM alert_outbox WHERE receiver = $1 AND sent_us IS NULL \
                  ORDER BY id LIMIT 1"
                .into(),
            binds: vec![Bind::Text(receiver.into())],
        };
        let row = on_pool!(self, pool => match bound!(stmt).fetch_optional(pool).await? {
            None => None,
            Some(row) => Some(OutboxRow {
                id: row.try_get(0)?,
                message_id: row.try_get(1)?,
                receiver: row.try_get(2)?,
                notification: row.try_get(3)?,
                created_us: row.try_get(4)?,
                attempts: row.try_get(5)?,
                next_attempt_us: row.try_get(6)?,
            }),
        });
        Ok(row)
    }

    /// Undelivered notifications per receiver.
    pub async fn undelivered(&self) -> Result<HashMap<String, i64>, StateError> {
        let mut out = HashMap::new();
        on_pool!(self, pool => {
            for row in sqlx::query(
                "SELECT receiver, COUNT(*) FROM alert_outbox WHERE sent_us IS NULL GROUP BY receiver",
            )
            .fetch_all(pool)
            .await?
            {
                out.insert(row.try_get(0)?, row.try_get(1)?);
            }
        });
        Ok(out)
    }

    pub async fn notification_sent(&self, id: i64, now_us: i64) -> Result<(), StateError> {
        let stmt = Stmt {
            sql:
                "UPDATE alert_outbox SET sent_us = $2, attempts = attempts + 1, last_error = NULL \
                  WHERE id = $1"
                    .into(),
            binds: vec![Bind::I64(id), Bind::I64(now_us)],
        };
        self.write(None, vec![stmt]).await?;
        Ok(())
    }

    /// Records a failed attempt and when to try again.
    pub async fn notification_failed(
        &self,
        id: i64,
        next_attempt_us: i64,
        error: &str,
    ) -> Result<(), StateError> {
        let stmt = Stmt {
            sql: "UPDATE alert_outbox SET attempts = attempts + 1, next_attempt_us = $2, \
                  last_error = $3 WHERE id = $1"
                .into(),
            binds: vec![
                Bind::I64(id),
                Bind::I64(next_attempt_us),
                Bind::Text(error.into()),
            ],
        };
        self.write(None, vec![stmt]).await?;
        Ok(())
    }
}
