//! The `repairs` table: a repair per violation occurrence, its approval, its claims by
//! workers and its end. Which version of a rule may repair by itself is `enabling.rs`.
//!
//! Every transition writes its audit entry in the same transaction as the change (planned,
//! approved by whom, rejected, applied, failed, skipped, needs_manual), so the log can never
//! miss a change nor record one that did not happen; the chain is sealed right after.
//!
//! Claiming: a worker takes up to N approved repairs whose turn has come and whose lease (if
//! any) ran out, setting its lease and a new fence. On PostgreSQL the rows are picked with
//! `FOR UPDATE SKIP LOCKED`, so several workers (or replicas) never wait on or take the same
//! repair; SQLite has a single writer, which serialises claims the same way. A result is
//! written only `WHERE fence = <the claim's fence>`: a worker that lost its lease (it stalled,
//! and another took the repair) cannot overwrite what the newer claim did.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Row as _};

use super::audit::append;
use super::{AuditEntry, Bind, Pool, StateError, StateStore, Stmt, Where, bound, on_pool};
use crate::lifecycle::approval::Refusal;
use crate::lifecycle::repair::{Decision, decide, ended};
use crate::lifecycle::states::{Hold, RepairEnd, RepairRecord, RepairState};
use crate::verdict::PlannedAction;

/// A repair to plan.
#[derive(Debug, Clone)]
pub struct NewRepair {
    pub key: String,
    pub occurrence_us: i64,
    pub state: RepairState,
    pub mode: String,
    pub action: String,
    pub actions: Vec<PlannedAction>,
    pub idempotency_key: String,
    pub hold_reason: Option<String>,
    pub held_by: Option<Hold>,
}

/// A repair a worker claimed, with the fence its result must carry.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub repair: RepairRecord,
    pub fence: i64,
    /// An earlier claim ended without a result: its worker died or lost its lease while it
    /// may have been acting.
    pub interrupted: bool,
}

#[derive(Debug, Clone, Default)]
pub struct RepairFilter {
    pub state: Option<RepairState>,
    pub rule: Option<String>,
    /// Only these rules' (a selection's, `rules::select`).
    pub rules: Option<Vec<String>>,
    pub key: Option<String>,
    pub after_id: Option<i64>,
    pub limit: u32,
    /// The newest first (and `after_id` ignored), as a rule's view lists them.
    pub newest_first: bool,
}

/// Repairs waiting for a person, per rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairSummary {
    pub pending: u64,
    pub oldest_pending_us: Option<i64>,
}

pub(super) const COLUMNS: &str = "id, rule, key, occurrence_us, state, mode, action, actions, idempotency_key, \
     hold_reason, created_us, updated_us, approved_by, comment, attempts, next_attempt_us, \
     lease_owner, lease_until_us, fence, result, finished_us, interrupted, held_by, rejected_by";

/// Planned repairs per insert statement (10 parameters each).
const PLAN_BATCH: usize = 200;

macro_rules! repair_of {
    ($row:expr) => {{
        let row = $row;
        let state: String = row.try_get(4)?;
        let actions: String = row.try_get(7)?;
        RepairRecord {
            id: row.try_get(0)?,
            rule: row.try_get(1)?,
            key: row.try_get(2)?,
            occurrence_us: row.try_get(3)?,
            state: RepairState::parse(&state)
                .ok_or_else(|| StateError::Corrupt(format!("repair state `{state}`")))?,
            mode: row.try_get(5)?,
            action: row.try_get(6)?,
            actions: serde_json::from_str(&actions)
                .map_err(|e| StateError::Corrupt(format!("repair actions: {e}")))?,
            idempotency_key: row.try_get(8)?,
            hold_reason: row.try_get(9)?,
            created_us: row.try_get(10)?,
            updated_us: row.try_get(11)?,
            approved_by: row.try_get(12)?,
            comment: row.try_get(13)?,
            attempts: row.try_get(14)?,
            next_attempt_us: row.try_get(15)?,
            lease_owner: row.try_get(16)?,
            lease_until_us: row.try_get(17)?,
            fence: row.try_get(18)?,
            result: row.try_get(19)?,
            finished_us: row.try_get(20)?,
            interrupted: row.try_get::<i64, _>(21)? != 0,
            held_by: row
                .try_get::<Option<String>, _>(22)?
                .as_deref()
                .map(|h| {
                    Hold::parse(h).ok_or_else(|| StateError::Corrupt(format!("repair hold `{h}`")))
                })
                .transpose()?,
            rejected_by: row.try_get(23)?,
        }
    }};
}

pub(super) use repair_of;

pub(super) fn entry(
    actor: &str,
    action: &str,
    r: &RepairRecord,
    details: serde_json::Value,
) -> AuditEntry {
    let mut d = serde_json::json!({ "rule": r.rule, "key": r.key, "action": r.action });
    if let (Some(map), serde_json::Value::Object(extra)) = (d.as_object_mut(), details) {
        map.extend(extra);
    }
    AuditEntry {
        actor: actor.to_string(),
        action: action.to_string(),
        subject: format!("repair/{}", r.id),
        details: d,
    }
}

/// What writing an attempt's end did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The repair resolved its violation, which had been open this long.
    pub resolved_after: Option<std::time::Duration>,
}

impl StateStore {
    /// Plans repairs for a rule: those already planned for the same occurrence are left as
    /// they are. Returns the ids of the new ones. Each gets its `repair.planned` entry in the
    /// same transaction.
    pub async fn plan_repairs(
        &self,
        rule: &str,
        repairs: &[NewRepair],
        now_us: i64,
    ) -> Result<Vec<i64>, StateError> {
        let mut ids = Vec::new();
        for chunk in repairs.chunks(PLAN_BATCH) {
            let mut sql = String::from(
                "INSERT INTO repairs (rule, key, occurrence_us, state, mode, action, actions, \
                 idempotency_key, hold_reason, held_by, created_us, updated_us, approved_by) VALUES ",
            );
            let mut binds = vec![Bind::Text(rule.to_string()), Bind::I64(now_us)];
            for (i, r) in chunk.iter().enumerate() {
                let b = 3 + i * 10;
                if i > 0 {
                    sql.push_str(", ");
                }
                let p: Vec<String> = (b..b + 10).map(|n| format!("${n}")).collect();
                sql.push_str(&format!(
                    "($1, {}, CAST({} AS BIGINT), {}, {}, {}, {}, {}, {}, {}, $2, $2, {})",
                    p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9]
                ));
                binds.push(Bind::Text(r.key.clone()));
                binds.push(Bind::I64(r.occurrence_us));
                binds.push(Bind::Text(r.state.as_str().into()));
                binds.push(Bind::Text(r.mode.clone()));
                binds.push(Bind::Text(r.action.clone()));
                binds.push(Bind::Text(
                    serde_json::to_string(&r.actions).expect("actions serialise"),
                ));
                binds.push(Bind::Text(r.idempotency_key.clone()));
                binds.push(Bind::OptText(r.hold_reason.clone()));
                binds.push(Bind::OptText(r.held_by.map(|h| h.as_str().to_string())));
                binds.push(Bind::OptText(
                    (r.state == RepairState::Approved).then(|| "invariantd (auto)".to_string()),
                ));
            }
            sql.push_str(&format!(
                " ON CONFLICT (rule, key, occurrence_us) DO NOTHING RETURNING {COLUMNS}"
            ));
            let stmt = Stmt { sql, binds };
            let _turn = self.writer.lock().await;
            on_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                let mut planned = Vec::new();
                for row in bound!(stmt).fetch_all(&mut *tx).await? {
                    planned.push(repair_of!(row));
                }
                for r in &planned {
                    let e = entry(
                        "invariantd",
                        "repair.planned",
                        r,
                        serde_json::json!({
                            "state": r.state.as_str(),
                            "mode": r.mode,
                            "hold_reason": r.hold_reason,
                            "held_by": r.held_by,
                            "idempotency_key": r.idempotency_key,
                        }),
                    );
                    append!(self, tx, &e, now_us);
                    ids.push(r.id);
                }
                tx.commit().await?;
            });
        }
        Ok(ids)
    }

    pub async fn repairs(&self, filter: &RepairFilter) -> Result<Vec<RepairRecord>, StateError> {
        let mut w = Where::default();
        w.and(
            "state =",
            filter.state.map(|s| Bind::Text(s.as_str().into())),
        )
        .and("rule =", filter.rule.clone().map(Bind::Text))
        .and_in("rule", filter.rules.as_deref())
        .and("key =", filter.key.clone().map(Bind::Text))
        .and(
            "id >",
            filter
                .after_id
                .filter(|_| !filter.newest_first)
                .map(Bind::I64),
        );
        let stmt = w.select(
            &format!("SELECT {COLUMNS} FROM repairs"),
            if filter.newest_first { "id DESC" } else { "id" },
            filter.limit,
        );
        let mut out = Vec::new();
        on_pool!(self, pool => {
            for row in bound!(stmt).fetch_all(pool).await? {
                out.push(repair_of!(row));
            }
        });
        Ok(out)
    }

    pub async fn repair(&self, id: i64) -> Result<Option<RepairRecord>, StateError> {
        let stmt = Stmt {
            sql: format!("SELECT {COLUMNS} FROM repairs WHERE id = $1"),
            binds: vec![Bind::I64(id)],
        };
        Ok(on_pool!(self, pool => {
            match bound!(stmt).fetch_optional(pool).await? {
                Some(row) => Some(repair_of!(row)),
                None => None,
            }
        }))
    }

    /// Approves or rejects a repair waiting for a person, recording who in the audit log.
    pub async fn decide(
        &self,
        id: i64,
        decision: &Decision,
        now_us: i64,
    ) -> Result<Result<RepairRecord, Refusal>, StateError> {
        let _turn = self.writer.lock().await;
        let select = Stmt {
            sql: format!("SELECT {COLUMNS} FROM repairs WHERE id = $1"),
            binds: vec![Bind::I64(id)],
        };
        let outcome = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let current = match bound!(select).fetch_optional(&mut *tx).await? {
                Some(row) => repair_of!(row),
                None => return Ok(Err(Refusal::NotFound)),
            };
            let d = match decide(&current, decision, now_us) {
                Ok(d) => d,
                Err(refusal) => return Ok(Err(refusal)),
            };
            let update = Stmt {
                sql: format!(
                    "UPDATE repairs SET state = $2, approved_by = $3, hold_reason = $4, action = $5, \
                     idempotency_key = $6, comment = COALESCE($7, comment), updated_us = $8, \
                     finished_us = $9, next_attempt_us = $8, held_by = $10, rejected_by = $11 WHERE id = $1 RETURNING {COLUMNS}"
                ),
                binds: vec![
                    Bind::I64(id),
                    Bind::Text(d.state.as_str().into()),
                    Bind::OptText(d.approved_by),
                    Bind::OptText(d.hold_reason),
                    Bind::Text(d.action),
                    Bind::Text(d.idempotency_key),
                    Bind::OptText(decision.comment.clone()),
                    Bind::I64(now_us),
                    Bind::OptI64(d.finished_us),
                    Bind::OptText(d.held_by.map(|h| h.as_str().to_string())),
                    Bind::OptText(d.rejected_by),
                ],
            };
            let row = bound!(update).fetch_one(&mut *tx).await?;
            let updated = repair_of!(row);
            let e = entry(&decision.by, d.audit_action, &updated, d.details);
            append!(self, tx, &e, now_us);
            if d.state == RepairState::Rejected {
                for stmt in super::counters::add_repair(&updated.rule, "rejected") {
                    bound!(stmt).execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            updated
        });
        drop(_turn);
        Ok(Ok(outcome))
    }

    /// Claims up to `limit` approved repairs that are due, leasing them to `owner` until
    /// `lease_until_us`: of `only_rule` when given, else of any rule but `skip_rules`.
    pub async fn claim_repairs(
        &self,
        owner: &str,
        (now_us, lease_until_us): (i64, i64),
        limit: u32,
        skip_rules: &[String],
        only_rule: Option<&str>,
    ) -> Result<Vec<Claimed>, StateError> {
        let mut binds = vec![
            Bind::I64(now_us),
            Bind::I64(i64::from(limit)),
            Bind::Text(owner.into()),
            Bind::I64(lease_until_us),
        ];
        let mut skip = String::new();
        for r in skip_rules {
            binds.push(Bind::Text(r.clone()));
            skip.push_str(&format!(" AND rule <> ${}", binds.len()));
        }
        if let Some(r) = only_rule {
            binds.push(Bind::Text(r.to_string()));
            skip.push_str(&format!(" AND rule = ${}", binds.len()));
        }
        let lock = match self.pool {
            Pool::Postgres(_) => " FOR UPDATE SKIP LOCKED",
            Pool::Sqlite(_) => "",
        };
        // `lease_owner` is only cleared by a result: a claim that finds one set took over
        // from a worker that never wrote its result.
        let stmt = Stmt {
            sql: format!(
                "UPDATE repairs SET lease_owner = $3, lease_until_us = $4, fence = fence + 1, \
                 attempts = attempts + 1, \
                 interrupted = CASE WHEN lease_owner IS NULL THEN interrupted ELSE 1 END \
                 WHERE id IN (SELECT id FROM repairs WHERE state = 'approved' \
                 AND next_attempt_us <= $1 AND (lease_until_us IS NULL OR lease_until_us < $1){skip} \
                 ORDER BY next_attempt_us, id LIMIT $2{lock}) RETURNING {COLUMNS}"
            ),
            binds,
        };
        let _turn = self.writer.lock().await;
        let mut out = Vec::new();
        on_pool!(self, pool => {
            for row in bound!(stmt).fetch_all(pool).await? {
                let repair = repair_of!(row);
                out.push(Claimed {
                    fence: repair.fence,
                    interrupted: repair.interrupted,
                    repair,
                });
            }
        });
        out.sort_by_key(|c| c.repair.id);
        Ok(out)
    }

    /// Writes an attempt's end, if `fence` is still the repair's (else returns `None` and
    /// changes nothing: a newer claim owns it). A final end is counted and audited with it;
    /// a repair that resolves its violation resolves it in the same transaction.
    pub async fn end_attempt(
        &self,
        claimed: &Claimed,
        end: &RepairEnd,
        now_us: i64,
    ) -> Result<Option<Written>, StateError> {
        let r = &claimed.repair;
        let e = ended(r, claimed.interrupted, end, now_us);
        let update = Stmt {
            sql: "UPDATE repairs SET state = $3, result = $4, next_attempt_us = $5, finished_us = $6, \
                  updated_us = $7, lease_owner = NULL, lease_until_us = NULL, interrupted = $8 \
                  WHERE id = $1 AND fence = $2"
                .into(),
            binds: vec![
                Bind::I64(r.id),
                Bind::I64(claimed.fence),
                Bind::Text(e.state.as_str().into()),
                Bind::Text(e.result.clone()),
                Bind::I64(e.next_attempt_us),
                Bind::OptI64(e.finished_us),
                Bind::I64(now_us),
                Bind::I64(i64::from(e.interrupted)),
            ],
        };
        // The violation this repair was planned for, if a run has not resolved it meanwhile.
        let resolve = Stmt {
            sql: "UPDATE violations SET state = 'resolved', resolved_us = $1, resolved_by = $2 \
                  WHERE rule = $3 AND key = $4 AND first_seen_us = $5 AND state = 'open' \
                  RETURNING first_seen_us"
                .into(),
            binds: vec![
                Bind::I64(now_us),
                Bind::Text(format!("repair #{}", r.id)),
                Bind::Text(r.rule.clone()),
                Bind::Text(r.key.clone()),
                Bind::I64(r.occurrence_us),
            ],
        };
        // Declared before the turn: dropped after it, once the transaction has ended.
        let _changing = self.open_cache.changing(&r.rule);
        let _turn = self.writer.lock().await;
        let written = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = bound!(update).execute(&mut *tx).await?.rows_affected();
            let mut resolved = None;
            if n == 1 && e.resolves {
                resolved = bound!(resolve).fetch_optional(&mut *tx).await?.map(|row| row.try_get::<i64, _>(0)).transpose()?;
                if resolved.is_some() {
                    for stmt in super::counters::add_changes(&r.rule, &super::Recorded { resolved: 1, ..Default::default() }) {
                        bound!(stmt).execute(&mut *tx).await?;
                    }
                }
            }
            if n == 1 {
                let audit = entry("invariantd", &e.audit_action, r, e.details.clone());
                append!(self, tx, &audit, now_us);
                if e.counted {
                    for stmt in super::counters::add_repair(&r.rule, e.state.as_str()) {
                        bound!(stmt).execute(&mut *tx).await?;
                    }
                }
            }
            tx.commit().await?;
            (n == 1).then(|| Written {
                resolved_after: resolved.map(|first_seen_us| {
                    std::time::Duration::from_micros(now_us.saturating_sub(first_seen_us).max(0) as u64)
                }),
            })
        });
        drop(_turn);
        Ok(written)
    }

    /// Closes the repairs still waiting for a person whose violation is no longer open (it
    /// healed, or was fixed by hand): `skipped`, each with its audit entry. Returns how many.
    pub async fn skip_healed_repairs(&self, now_us: i64) -> Result<u64, StateError> {
        let stmt = Stmt {
            sql: format!(
                "UPDATE repairs SET state = 'skipped', updated_us = $1, finished_us = $1, \
                 result = $2 WHERE state IN ('pending', 'dry_run') AND NOT EXISTS \
                 (SELECT 1 FROM violations v WHERE v.rule = repairs.rule AND v.key = repairs.key \
                 AND v.state = 'open' AND v.first_seen_us = repairs.occurrence_us) RETURNING {COLUMNS}"
            ),
            binds: vec![
                Bind::I64(now_us),
                Bind::Text(
                    "the violation was resolved before anyone approved the repair: nothing to do"
                        .into(),
                ),
            ],
        };
        let _turn = self.writer.lock().await;
        let skipped = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut skipped = Vec::new();
            for row in bound!(stmt).fetch_all(&mut *tx).await? {
                skipped.push(repair_of!(row));
            }
            for r in &skipped {
                let e = entry("invariantd", "repair.skipped", r, serde_json::json!({ "result": r.result }));
                append!(self, tx, &e, now_us);
                for stmt in super::counters::add_repair(&r.rule, "skipped") {
                    bound!(stmt).execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            skipped.len() as u64
        });
        drop(_turn);
        Ok(skipped)
    }

    /// Repairs of a rule applied since `since_us`: what its rate limit counts.
    pub async fn applied_since(&self, rule: &str, since_us: i64) -> Result<u64, StateError> {
        let stmt = Stmt {
            sql: "SELECT COUNT(*) FROM repairs WHERE rule = $1 AND state = 'applied' \
                  AND finished_us >= $2"
                .into(),
            binds: vec![Bind::Text(rule.into()), Bind::I64(since_us)],
        };
        let n: i64 = on_pool!(self, pool => bound!(stmt).fetch_one(pool).await?.try_get(0)?);
        Ok(n.max(0) as u64)
    }

    /// Per rule: the repairs a guardrail that alerts (`Hold::alerts`) holds for a person, and
    /// the reason of one of them.
    pub async fn held_repairs(&self) -> Result<HashMap<String, (i64, String)>, StateError> {
        let stmt = Stmt {
            sql: "SELECT rule, COUNT(*), MIN(hold_reason) FROM repairs WHERE state = 'pending' \
                  AND held_by IN ('too_many', 'suspicious') GROUP BY rule"
                .into(),
            binds: Vec::new(),
        };
        let mut out = HashMap::new();
        on_pool!(self, pool => {
            for row in bound!(stmt).fetch_all(pool).await? {
                let reason: Option<String> = row.try_get(2)?;
                out.insert(
                    row.try_get::<String, _>(0)?,
                    (row.try_get::<i64, _>(1)?, reason.unwrap_or_default()),
                );
            }
        });
        Ok(out)
    }

    /// When the next approved repair can be claimed, in microseconds: its next attempt, or
    /// later the end of the lease a worker holds on it. `None` when none is approved.
    pub async fn next_repair_due(&self) -> Result<Option<i64>, StateError> {
        let stmt = Stmt {
            sql: "SELECT MIN(CASE WHEN lease_until_us > next_attempt_us THEN lease_until_us \
                  ELSE next_attempt_us END) FROM repairs WHERE state = 'approved'"
                .into(),
            binds: Vec::new(),
        };
        Ok(on_pool!(self, pool => bound!(stmt).fetch_one(pool).await?.try_get(0)?))
    }

    /// Per rule: repairs waiting for a person, and since when the oldest waits.
    pub async fn repair_summaries(&self) -> Result<HashMap<String, RepairSummary>, StateError> {
        let stmt = Stmt {
            sql: "SELECT rule, COUNT(*), MIN(created_us) FROM repairs WHERE state = 'pending' \
                  GROUP BY rule"
                .into(),
            binds: Vec::new(),
        };
        let mut out = HashMap::new();
        on_pool!(self, pool => {
            for row in bound!(stmt).fetch_all(pool).await? {
                let n: i64 = row.try_get(1)?;
                out.insert(
                    row.try_get::<String, _>(0)?,
                    RepairSummary {
                        pending: n.max(0) as u64,
                        oldest_pending_us: row.try_get(2)?,
                    },
                );
            }
        });
        Ok(out)
    }
}
