//! The `audit_log` table: who changed what through invariantd (silences, reloads, and every
//! transition of a repair), append-only and hash-chained.
//!
//! An entry is inserted plain, then sealed: sealing, one writer at a time, gives each unsealed
//! entry the next number of the chain (`seal_seq`, from 1, without gaps) and a hash of the
//! previous entry's hash and its own fields. Chaining in seal order rather than id order keeps
//! the chain whole when a transaction that took an id earlier commits later. `verify` walks
//! the chain: an edited entry no longer matches its hash, a deleted one leaves a gap. Deleting
//! the newest entries leaves a shorter chain that is whole, so `verify` gives the head's hash
//! to be kept elsewhere and compared.

use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Row as _};

use super::{Bind, Pool, StateError, StateStore, Stmt, bound, on_pool};

/// An entry to record.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub details: serde_json::Value,
}

/// An entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub at_us: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub details: String,
    pub seal_seq: Option<i64>,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every sealed entry is where it should be and unchanged; `head` is the last hash.
    Intact {
        entries: i64,
        head: Option<String>,
        unsealed: i64,
    },
    /// The chain breaks at this entry (its `seal_seq`), for this reason.
    Broken { at: i64, reason: String },
}

/// The hash of an entry: SHA-256 over the previous hash and each field, length-prefixed so no
/// two different entries read the same.
fn hash(prev: &str, seq: i64, r: &AuditRecord) -> String {
    let mut h = Sha256::new();
    let seq = seq.to_string();
    let at = r.at_us.to_string();
    for field in [prev, &seq, &at, &r.actor, &r.action, &r.subject, &r.details] {
        h.update(field.len().to_string().as_bytes());
        h.update(b":");
        h.update(field.as_bytes());
    }
    crate::value::hex(&h.finalize())
}

/// The hash the first entry chains to.
const GENESIS: &str = "invariantd-audit-v1";

const COLUMNS: &str = "id, at_us, actor, action, subject, details, seal_seq, prev_hash, hash";

macro_rules! record_of {
    ($row:expr) => {{
        let row = $row;
        AuditRecord {
            id: row.try_get(0)?,
            at_us: row.try_get(1)?,
            actor: row.try_get(2)?,
            action: row.try_get(3)?,
            subject: row.try_get(4)?,
            details: row.try_get(5)?,
            seal_seq: row.try_get(6)?,
            prev_hash: row.try_get(7)?,
            hash: row.try_get(8)?,
        }
    }};
}

/// The statement that records an entry, unsealed: written in the same transaction as the
/// change it records, so that the change and its entry are committed together or not at all.
pub(super) fn insert(entry: &AuditEntry, now_us: i64) -> Stmt {
    Stmt {
        sql: "INSERT INTO audit_log (at_us, actor, action, subject, details) \
              VALUES ($1, $2, $3, $4, $5)"
            .into(),
        binds: vec![
            Bind::I64(now_us),
            Bind::Text(entry.actor.clone()),
            Bind::Text(entry.action.clone()),
            Bind::Text(entry.subject.clone()),
            Bind::Text(entry.details.to_string()),
        ],
    }
}

/// Entries sealed per transaction.
const SEAL_BATCH: u32 = 500;

impl StateStore {
    /// Records an entry and seals the chain.
    pub async fn audit(&self, entry: &AuditEntry, now_us: i64) -> Result<(), StateError> {
        self.write(None, vec![insert(entry, now_us)]).await?;
        self.seal_audit().await
    }

    /// Seals every unsealed entry, in id order, after the chain's head.
    pub async fn seal_audit(&self) -> Result<(), StateError> {
        loop {
            let _turn = self.writer.lock().await;
            let sealed = on_pool!(self, pool => {
                let mut tx = pool.begin().await?;
                let head = sqlx::query(
                    "SELECT seal_seq, hash FROM audit_log WHERE seal_seq IS NOT NULL \
                     ORDER BY seal_seq DESC LIMIT 1",
                )
                .fetch_optional(&mut *tx)
                .await?;
                let (mut seq, mut prev): (i64, String) = match head {
                    Some(row) => (row.try_get(0)?, row.try_get(1)?),
                    None => (0, GENESIS.to_string()),
                };
                let stmt = Stmt {
                    sql: format!(
                        "SELECT {COLUMNS} FROM audit_log WHERE seal_seq IS NULL ORDER BY id LIMIT $1"
                    ),
                    binds: vec![Bind::I64(i64::from(SEAL_BATCH))],
                };
                let mut rows = Vec::new();
                for row in bound!(stmt).fetch_all(&mut *tx).await? {
                    rows.push(record_of!(row));
                }
                for r in &rows {
                    seq += 1;
                    let h = hash(&prev, seq, r);
                    let update = Stmt {
                        sql: "UPDATE audit_log SET seal_seq = $2, prev_hash = $3, hash = $4 \
                              WHERE id = $1"
                            .into(),
                        binds: vec![
                            Bind::I64(r.id),
                            Bind::I64(seq),
                            Bind::Text(prev.clone()),
                            Bind::Text(h.clone()),
                        ],
                    };
                    bound!(update).execute(&mut *tx).await?;
                    prev = h;
                }
                tx.commit().await?;
                rows.len()
            });
            if sealed < SEAL_BATCH as usize {
                return Ok(());
            }
        }
    }

    /// The newest entries first, before `before_id`.
    pub async fn audit_entries(
        &self,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StateError> {
        let mut filter = super::Where::default();
        filter.and("id <", before_id.map(Bind::I64));
        let stmt = filter.select(
            &format!("SELECT {COLUMNS} FROM audit_log"),
            "id DESC",
            limit,
        );
        let mut out = Vec::new();
        on_pool!(self, pool => {
            for row in bound!(stmt).fetch_all(pool).await? {
                out.push(record_of!(row));
            }
        });
        Ok(out)
    }

    /// Walks the sealed chain from its start and says whether it is whole.
    pub async fn verify_audit(&self) -> Result<Verification, StateError> {
        let mut prev = GENESIS.to_string();
        let mut expected = 1;
        loop {
            let stmt = Stmt {
                sql: format!(
                    "SELECT {COLUMNS} FROM audit_log WHERE seal_seq >= $1 ORDER BY seal_seq LIMIT 1000"
                ),
                binds: vec![Bind::I64(expected)],
            };
            let mut page = Vec::new();
            on_pool!(self, pool => {
                for row in bound!(stmt).fetch_all(pool).await? {
                    page.push(record_of!(row));
                }
            });
            if page.is_empty() {
                break;
            }
            for r in &page {
                let seq = r.seal_seq.expect("only sealed entries are selected");
                if seq != expected {
                    return Ok(Verification::Broken {
                        at: expected,
                        reason: format!(
                            "entry {expected} is missing: the chain goes on at {seq} (deleted)"
                        ),
                    });
                }
                if r.prev_hash.as_deref() != Some(prev.as_str()) {
                    return Ok(Verification::Broken {
                        at: seq,
                        reason: format!(
                            "entry {seq} does not follow entry {}: its link was changed",
                            seq - 1
                        ),
                    });
                }
                let h = hash(&prev, seq, r);
                if r.hash.as_deref() != Some(h.as_str()) {
                    return Ok(Verification::Broken {
                        at: seq,
                        reason: format!("entry {seq} does not match its hash (edited)"),
                    });
                }
                prev = h;
                expected += 1;
            }
        }
        let unsealed = on_pool!(self, pool => {
            sqlx::query("SELECT COUNT(*) FROM audit_log WHERE seal_seq IS NULL")
                .fetch_one(pool)
                .await?
                .try_get::<i64, _>(0)?
        });
        Ok(Verification::Intact {
            entries: expected - 1,
            head: (expected > 1).then_some(prev),
            unsealed,
        })
    }
}
