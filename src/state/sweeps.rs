//! Partitioned full sweeps: `sweep_boundaries`, the keys each rule's last full sweep sampled
//! (where its next one splits), and `sweep_parts`, the key ranges of a sweep under way. The
//! replica that runs the rule starts a sweep under its `rule/NAME` lease (replacing the rule's
//! previous one); any replica reads a part under that part's own lease
//! (`part_lease`), and writes the part's run back under it, so a replica that lost the part
//! (paused, or cut off past its lease) cannot write over the replica that took it over. The
//! rule's holder merges the parts' runs and records one run.

use std::collections::BTreeMap;

use sqlx::{AssertSqlSafe, Row as _};

use super::{Bind, Lease, Pool, StateError, StateStore, Stmt, bound, on_pool};
use crate::sources::KeyRange;
use crate::value::Key;
use crate::verdict::RuleRun;

/// Where a part of a sweep stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartState {
    /// Waiting for a replica to read it (or being read: its lease says by whom).
    Pending,
    /// Read; its run is in `result` until the sweep is merged.
    Done,
}

impl PartState {
    fn as_str(self) -> &'static str {
        match self {
            PartState::Pending => "pending",
            PartState::Done => "done",
        }
    }
}

/// One key range of a sweep.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartRow {
    pub rule: String,
    /// The instant the sweep judges, in microseconds: it names the sweep.
    pub sweep: i64,
    pub part: i64,
    pub fingerprint: String,
    pub range: KeyRange,
    /// The snapshots the sweep's ranges read, by source (those that can export one).
    pub snapshots: BTreeMap<String, String>,
    pub state: PartState,
    /// The replica that read it, once done.
    pub holder: Option<String>,
}

/// The lease a replica reads a part under.
pub fn part_lease(rule: &str, sweep: i64, part: i64) -> String {
    format!("part/{rule}/{sweep}/{part}")
}

/// The rule, sweep and part a `part_lease` name is for.
pub fn parse_part_lease(name: &str) -> Option<(&str, i64, i64)> {
    let mut pieces = name.strip_prefix("part/")?.rsplitn(3, '/');
    let part = pieces.next()?.parse().ok()?;
    let sweep = pieces.next()?.parse().ok()?;
    Some((pieces.next()?, sweep, part))
}

/// Deletes the part leases whose names start with `prefix` (`part/RULE/…`).
fn delete_part_leases(prefix: &str) -> Stmt {
    Stmt {
        sql: "DELETE FROM leases WHERE name LIKE $1 ESCAPE '\\'".into(),
        binds: vec![Bind::Text(format!("{}%", like_literal(prefix)))],
    }
}

/// `text` for a `LIKE … ESCAPE '\'` pattern that matches it literally.
fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn bad_json(what: &str, e: serde_json::Error) -> StateError {
    StateError::Corrupt(format!("{what}: {e}"))
}

const PART_COLUMNS: &str = "rule, sweep, part, fingerprint, key_range, state, holder, snapshots";

macro_rules! part_of {
    ($row:expr) => {{
        let row = &$row;
        let range: String = row.try_get(4)?;
        let state: String = row.try_get(5)?;
        PartRow {
            rule: row.try_get(0)?,
            sweep: row.try_get(1)?,
            part: row.try_get(2)?,
            fingerprint: row.try_get(3)?,
            range: serde_json::from_str(&range)
                .map_err(|e| bad_json("a sweep part's key range", e))?,
            state: if state == "done" {
                PartState::Done
            } else {
                PartState::Pending
            },
            holder: row.try_get(6)?,
            snapshots: serde_json::from_str(&row.try_get::<String, _>(7)?)
                .map_err(|e| bad_json("a sweep's snapshots", e))?,
        }
    }};
}

impl StateStore {
    /// The keys the last full sweep of `rule` sampled, if they are of this version of it.
    pub async fn sweep_boundaries(
        &self,
        rule: &str,
        fingerprint: &str,
    ) -> Result<Option<Vec<Key>>, StateError> {
        let stmt = Stmt {
            sql: "SELECT keys FROM sweep_boundaries WHERE rule = $1 AND fingerprint = $2".into(),
            binds: vec![Bind::Text(rule.into()), Bind::Text(fingerprint.into())],
        };
        let keys: Option<String> = on_pool!(self, pool => match bound!(stmt).fetch_optional(pool).await? {
            Some(row) => Some(row.try_get(0)?),
            None => None,
        });
        keys.map(|k| serde_json::from_str(&k).map_err(|e| bad_json("sweep boundaries", e)))
            .transpose()
    }

    /// Keeps the keys a full sweep of `rule` sampled, for its next one: under the rule's lease
    /// when a daemon sharing the store ran it.
    pub async fn save_sweep_boundaries(
        &self,
        rule: &str,
        fingerprint: &str,
        keys: &[Key],
        now_us: i64,
        lease: Option<&Lease>,
    ) -> Result<(), StateError> {
        let json = serde_json::to_string(keys).map_err(|e| bad_json("sweep boundaries", e))?;
        let stmt = Stmt {
            sql: "INSERT INTO sweep_boundaries (rule, fingerprint, keys, sampled_us) \
                  VALUES ($1, $2, $3, $4) ON CONFLICT (rule) DO UPDATE SET \
                  fingerprint = excluded.fingerprint, keys = excluded.keys, \
                  sampled_us = excluded.sampled_us"
                .into(),
            binds: vec![
                Bind::Text(rule.into()),
                Bind::Text(fingerprint.into()),
                Bind::Text(json),
                Bind::I64(now_us),
            ],
        };
        self.write_guarded(lease, None, vec![stmt]).await?;
        Ok(())
    }

    /// Forgets where `rule` splits: its next full sweep reads every key at once, and samples
    /// them again.
    pub async fn forget_sweep_boundaries(&self, rule: &str) -> Result<(), StateError> {
        let stmt = Stmt {
            sql: "DELETE FROM sweep_boundaries WHERE rule = $1".into(),
            binds: vec![Bind::Text(rule.into())],
        };
        self.write_guarded(None, None, vec![stmt]).await?;
        Ok(())
    }

    /// Starts a sweep of `rule` over these key ranges, under the rule's lease: its previous
    /// sweep is dropped (with the leases of its parts, so that a replica still reading one
    /// cannot write its result anywhere).
    pub async fn start_sweep(
        &self,
        rule: &str,
        fingerprint: &str,
        sweep: i64,
        ranges: &[KeyRange],
        snapshots: &BTreeMap<String, String>,
        lease: Option<&Lease>,
    ) -> Result<(), StateError> {
        let snapshots =
            serde_json::to_string(snapshots).map_err(|e| bad_json("a sweep's snapshots", e))?;
        let mut stmts = vec![
            Stmt {
                sql: "DELETE FROM sweep_parts WHERE rule = $1".into(),
                binds: vec![Bind::Text(rule.into())],
            },
            delete_part_leases(&format!("part/{rule}/")),
        ];
        for (part, range) in ranges.iter().enumerate() {
            let json = serde_json::to_string(range)
                .map_err(|e| bad_json("a sweep part's key range", e))?;
            stmts.push(Stmt {
                sql: format!(
                    "INSERT INTO sweep_parts ({PART_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, NULL, $7)"
                ),
                binds: vec![
                    Bind::Text(rule.into()),
                    Bind::I64(sweep),
                    Bind::I64(part as i64),
                    Bind::Text(fingerprint.into()),
                    Bind::Text(json),
                    Bind::Text(PartState::Pending.as_str().into()),
                    Bind::Text(snapshots.clone()),
                ],
            });
        }
        self.write_guarded(lease, None, stmts).await?;
        Ok(())
    }

    /// The parts no replica has read yet (some may be being read: their lease says), oldest
    /// sweep first.
    pub async fn pending_parts(&self) -> Result<Vec<PartRow>, StateError> {
        let stmt = Stmt {
            sql: format!(
                "SELECT {PART_COLUMNS} FROM sweep_parts WHERE state = 'pending' \
                 ORDER BY sweep, rule, part"
            ),
            binds: Vec::new(),
        };
        Ok(on_pool!(self, pool => {
            let mut parts = Vec::new();
            for row in bound!(stmt).fetch_all(pool).await? {
                parts.push(part_of!(row));
            }
            parts
        }))
    }

    /// Writes the run of a part, under the part's lease: refused (`LeaseLost`) when the lease
    /// is no longer this replica's, or the sweep was replaced meanwhile.
    pub async fn finish_part(
        &self,
        part: &PartRow,
        run: &RuleRun,
        lease: &Lease,
    ) -> Result<(), StateError> {
        // Only the part's own lease guards it.
        if lease.name != part_lease(&part.rule, part.sweep, part.part) {
            return Err(StateError::LeaseLost(part_lease(
                &part.rule, part.sweep, part.part,
            )));
        }
        let json = serde_json::to_string(run).map_err(|e| bad_json("a sweep part's run", e))?;
        let stmt = Stmt {
            sql: "UPDATE sweep_parts SET state = 'done', holder = $1, result = $2 \
                  WHERE rule = $3 AND sweep = $4 AND part = $5 AND state = 'pending'"
                .into(),
            binds: vec![
                Bind::Text(lease.holder.clone()),
                Bind::Text(json),
                Bind::Text(part.rule.clone()),
                Bind::I64(part.sweep),
                Bind::I64(part.part),
            ],
        };
        self.write_guarded(Some(lease), None, vec![stmt]).await?;
        Ok(())
    }

    /// How far a sweep is: its parts, and those read. (0, 0) when it is not (or no longer)
    /// in the store.
    pub async fn sweep_progress(&self, rule: &str, sweep: i64) -> Result<(i64, i64), StateError> {
        let stmt = Stmt {
            sql: "SELECT COUNT(*), COALESCE(SUM(CASE WHEN state = 'done' THEN 1 ELSE 0 END), 0) \
                  FROM sweep_parts WHERE rule = $1 AND sweep = $2"
                .into(),
            binds: vec![Bind::Text(rule.into()), Bind::I64(sweep)],
        };
        Ok(on_pool!(self, pool => {
            let row = bound!(stmt).fetch_one(pool).await?;
            (row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?)
        }))
    }

    /// The parts of a sweep, in key order, each with its run once read. Empty when the sweep
    /// is not (or no longer) in the store.
    pub async fn sweep_parts(
        &self,
        rule: &str,
        sweep: i64,
    ) -> Result<Vec<(PartRow, Option<RuleRun>)>, StateError> {
        let stmt = Stmt {
            sql: format!(
                "SELECT {PART_COLUMNS}, result FROM sweep_parts \
                 WHERE rule = $1 AND sweep = $2 ORDER BY part"
            ),
            binds: vec![Bind::Text(rule.into()), Bind::I64(sweep)],
        };
        Ok(on_pool!(self, pool => {
            let mut parts = Vec::new();
            for row in bound!(stmt).fetch_all(pool).await? {
                let result: Option<String> = row.try_get(8)?;
                let run = result
                    .map(|r| serde_json::from_str::<RuleRun>(&r).map_err(|e| bad_json("a sweep part's run", e)))
                    .transpose()?;
                parts.push((part_of!(row), run));
            }
            parts
        }))
    }

    /// Once a sweep's run is recorded: its parts' runs are cleared (who read which part
    /// stays, until the next sweep) and their leases deleted.
    pub async fn end_sweep(&self, rule: &str, sweep: i64) -> Result<(), StateError> {
        let stmts = vec![
            Stmt {
                sql: "UPDATE sweep_parts SET result = NULL WHERE rule = $1 AND sweep = $2".into(),
                binds: vec![Bind::Text(rule.into()), Bind::I64(sweep)],
            },
            delete_part_leases(&format!("part/{rule}/{sweep}/")),
        ];
        self.write_guarded(None, None, stmts).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{like_literal, parse_part_lease, part_lease};

    #[test]
    fn a_like_pattern_matches_its_text_literally() {
        assert_eq!(like_literal("part/a_b%c\\d/"), "part/a\\_b\\%c\\\\d/");
    }

    #[test]
    fn a_part_lease_name_reads_back() {
        assert_eq!(
            parse_part_lease(&part_lease("big", 17, 3)),
            Some(("big", 17, 3))
        );
        assert_eq!(parse_part_lease("rule/big"), None);
        assert_eq!(parse_part_lease("part/big/x/3"), None);
    }
}
