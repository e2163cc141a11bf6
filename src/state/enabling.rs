//! `repair_enablement`: which version of a rule may repair by itself. A person enables the
//! rule as it is now (its fingerprint); under four eyes two different people must, the first
//! request waiting in `repair_enable_requests`. Enabling approves, or holds, the repairs the
//! rule planned meanwhile, each with its audit entry in the same transaction.

use sqlx::{AssertSqlSafe, Row as _};

use super::audit::append;
use super::repairs::{COLUMNS, entry, repair_of};
use super::{AuditEntry, Bind, Pool, StateError, StateStore, Stmt, bound, on_pool};
use crate::lifecycle::approval::{Approval, Promotion, Refusal, Step, approve, promote};
use crate::lifecycle::states::{Hold, RepairRecord, RepairState};

impl StateStore {
    /// A person's request to let the rule as it is now (its fingerprint) apply its automatic
    /// repairs. Under four eyes it takes two different people enabling the same version: the
    /// first request waits (`Enabling::Requested`). Once enabled, the repairs the rule planned
    /// meanwhile (in dry run because it was new or changed) are approved by the same people,
    /// each with its audit entry, unless they are more than `max_auto_per_run`: then each is
    /// held for a person (`too_many`) instead, as a run's would be.
    pub async fn enable_repairs(
        &self,
        request: &EnableRequest<'_>,
        now_us: i64,
    ) -> Result<Result<Enabling, Refusal>, StateError> {
        let EnableRequest {
            rule,
            fingerprint,
            by,
            four_eyes,
            max_auto_per_run,
        } = *request;
        let pending = Stmt {
            sql: "SELECT requested_by, fingerprint FROM repair_enable_requests WHERE rule = $1"
                .into(),
            binds: vec![Bind::Text(rule.into())],
        };
        let _turn = self.writer.lock().await;
        let outcome = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let first = match bound!(pending).fetch_optional(&mut *tx).await? {
                Some(row) => Some(Approval { by: row.try_get(0)?, action: row.try_get(1)? }),
                None => None,
            };
            let outcome = match approve(first.as_ref(), by, fingerprint, four_eyes) {
                Err(refusal) => return Ok(Err(refusal)),
                Ok(Step::ApprovedOnce { reset }) => {
                    bound!(enable_request(rule, fingerprint, by, now_us)).execute(&mut *tx).await?;
                    let e = AuditEntry {
                        actor: by.into(),
                        action: "repair.enable_requested".into(),
                        subject: format!("rule/{rule}"),
                        details: serde_json::json!({ "fingerprint": fingerprint, "reset": reset }),
                    };
                    append!(self, tx, &e, now_us);
                    Enabling::Requested { reset }
                }
                Ok(Step::Approved(approvals)) => {
                    let names: Vec<&str> = approvals.iter().map(|a| a.by.as_str()).collect();
                    let enabled_by = names.join(", ");
                    for stmt in enable_statements(rule, fingerprint, &enabled_by, now_us) {
                        bound!(stmt).execute(&mut *tx).await?;
                    }
                    let e = AuditEntry {
                        actor: by.into(),
                        action: "repair.enabled".into(),
                        subject: format!("rule/{rule}"),
                        details: serde_json::json!({ "fingerprint": fingerprint, "approvals": approvals }),
                    };
                    append!(self, tx, &e, now_us);
                    let waiting = Stmt {
                        sql: "SELECT COUNT(*) FROM repairs WHERE rule = $1 AND state = 'dry_run' \
                              AND held_by = 'not_enabled'".into(),
                        binds: vec![Bind::Text(rule.into())],
                    };
                    let count: i64 = bound!(waiting).fetch_one(&mut *tx).await?.try_get(0)?;
                    let (promote, audit_action, details) =
                        match promote(count as usize, max_auto_per_run) {
                            Promotion::Approve => (
                                promote_statement(rule, "approved", Some(&enabled_by), None, None, now_us),
                                "repair.approved",
                                serde_json::json!({ "from": "dry_run", "by_enabling": true, "approvals": approvals }),
                            ),
                            Promotion::TooMany(why) => (
                                promote_statement(rule, "pending", None, Some(&why), Some(Hold::TooMany), now_us),
                                "repair.held",
                                serde_json::json!({ "from": "dry_run", "by_enabling": true, "held_by": "too_many", "why": why }),
                            ),
                        };
                    let mut promoted = Vec::new();
                    for row in bound!(promote).fetch_all(&mut *tx).await? {
                        promoted.push(repair_of!(row));
                    }
                    for r in &promoted {
                        let e = entry(by, audit_action, r, details.clone());
                        append!(self, tx, &e, now_us);
                    }
                    let n = promoted.len() as u64;
                    let held = promoted.first().and_then(|r| r.held_by.zip(r.hold_reason.clone()));
                    Enabling::Enabled {
                        by: enabled_by,
                        approved: if held.is_none() { n } else { 0 },
                        held: held.map(|(h, why)| (h, why, n)),
                    }
                }
            };
            tx.commit().await?;
            outcome
        });
        drop(_turn);
        Ok(Ok(outcome))
    }

    /// The fingerprint of the rule version enabled to repair automatically, if any.
    pub async fn enabled_fingerprint(&self, rule: &str) -> Result<Option<String>, StateError> {
        let stmt = Stmt {
            sql: "SELECT fingerprint FROM repair_enablement WHERE rule = $1".into(),
            binds: vec![Bind::Text(rule.into())],
        };
        Ok(on_pool!(self, pool => {
            match bound!(stmt).fetch_optional(pool).await? {
                Some(row) => Some(row.try_get::<String, _>(0)?),
                None => None,
            }
        }))
    }
}

/// A person's request to enable a rule version's automatic repairs.
#[derive(Debug, Clone, Copy)]
pub struct EnableRequest<'a> {
    pub rule: &'a str,
    pub fingerprint: &'a str,
    pub by: &'a str,
    pub four_eyes: bool,
    pub max_auto_per_run: u32,
}

/// What enabling did.
#[derive(Debug, Clone, PartialEq)]
pub enum Enabling {
    /// Four eyes: the first of two requests, recorded; `reset` is an earlier request for
    /// another version, which no longer counts.
    Requested { reset: Option<Approval> },
    /// The version is enabled, by these people (`a, b` under four eyes). `approved` repairs it
    /// planned meanwhile were approved; or, when they were more than the rule's cap, all are
    /// held for a person (`held`: the guardrail, why, and how many).
    Enabled {
        by: String,
        approved: u64,
        held: Option<(Hold, String, u64)>,
    },
}

/// Records a rule version with who and when in `table` (`repair_enable_requests`: a first
/// request waiting for a second person; `repair_enablement`: enabled), replacing the rule's
/// earlier row.
fn upsert_version(
    table: &str,
    (who, when): (&str, &str),
    rule: &str,
    fingerprint: &str,
    by: &str,
    now_us: i64,
) -> Stmt {
    Stmt {
        sql: format!(
            "INSERT INTO {table} (rule, fingerprint, {who}, {when}) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (rule) DO UPDATE SET fingerprint = excluded.fingerprint, \
             {who} = excluded.{who}, {when} = excluded.{when}"
        ),
        binds: vec![
            Bind::Text(rule.into()),
            Bind::Text(fingerprint.into()),
            Bind::Text(by.into()),
            Bind::I64(now_us),
        ],
    }
}

/// Records a first request to enable a version, replacing any earlier one for the rule.
fn enable_request(rule: &str, fingerprint: &str, by: &str, now_us: i64) -> Stmt {
    let columns = ("requested_by", "requested_us");
    upsert_version(
        "repair_enable_requests",
        columns,
        rule,
        fingerprint,
        by,
        now_us,
    )
}

/// Enables a version (and forgets any request waiting for a second person).
fn enable_statements(rule: &str, fingerprint: &str, by: &str, now_us: i64) -> [Stmt; 2] {
    let columns = ("enabled_by", "enabled_us");
    [
        upsert_version("repair_enablement", columns, rule, fingerprint, by, now_us),
        Stmt {
            sql: "DELETE FROM repair_enable_requests WHERE rule = $1".into(),
            binds: vec![Bind::Text(rule.into())],
        },
    ]
}

/// Moves the repairs a rule planned while it was not enabled to `state`.
fn promote_statement(
    rule: &str,
    state: &str,
    approved_by: Option<&str>,
    hold_reason: Option<&str>,
    held_by: Option<Hold>,
    now_us: i64,
) -> Stmt {
    Stmt {
        sql: format!(
            "UPDATE repairs SET state = $2, approved_by = $3, hold_reason = $4, held_by = $5, \
             updated_us = $6, next_attempt_us = $6 \
             WHERE rule = $1 AND state = 'dry_run' AND held_by = 'not_enabled' RETURNING {COLUMNS}"
        ),
        binds: vec![
            Bind::Text(rule.into()),
            Bind::Text(state.into()),
            Bind::OptText(approved_by.map(str::to_string)),
            Bind::OptText(hold_reason.map(str::to_string)),
            Bind::OptText(held_by.map(|h| h.as_str().to_string())),
            Bind::I64(now_us),
        ],
    }
}
