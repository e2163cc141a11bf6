//! The `audit_log` table: who changed what through invariantd (silences, reloads, and every
//! transition of a repair), append-only and hash-chained.
//!
//! An entry is sealed in the transaction that writes it, with the change it records: it takes
//! the next number of the chain (`seal_seq`, from 1, without gaps) and a hash of the previous
//! entry's hash and its own fields — an HMAC-SHA256 under `auth.audit_key_file` when there is
//! one (`hmac-sha256:` before the hex), so that a chain cannot be recomputed without the key.
//! The daemon never seals a row it did not write: a row inserted by hand stays unsealed, and
//! `verify` reports it. `verify` walks the chain: an edited entry no longer matches its hash, a
//! deleted one leaves a gap, an unkeyed entry after a keyed one was rewritten without the key,
//! and a repair with no entry means entries were deleted (an emptied log included). Deleting
//! the newest entries leaves a shorter chain that is whole, so the head (count and hash) is
//! exported (`/api/v1/audit/head`, `invariantd_audit_entries`) to be kept elsewhere and given
//! back to `audit verify --head`. A whole walk is linear in the entries; `verify_audit_since`
//! walks from a head kept from an earlier verify, in what was written since.

use hmac::{KeyInit, Mac};
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
    /// Every entry is sealed, where it should be and unchanged, and every repair has its
    /// entries; `head` is the last hash. `checked` entries were read (all of them, or those
    /// after a kept head), of which `unkeyed` (the first ones, written before
    /// `auth.audit_key_file` was set) are hashed without the key.
    Intact {
        entries: i64,
        checked: i64,
        head: Option<String>,
        unkeyed: i64,
    },
    /// The chain breaks at this entry (its `seal_seq`, or 0 for the log as a whole), for this
    /// reason.
    Broken { at: i64, reason: String },
}

/// The hash of an entry: over the previous hash and each field, length-prefixed so no two
/// different entries read the same; an HMAC-SHA256 under the key when there is one.
fn hash(key: Option<&[u8]>, prev: &str, seq: i64, r: &AuditRecord) -> String {
    let seq = seq.to_string();
    let at = r.at_us.to_string();
    let fields = [prev, &seq, &at, &r.actor, &r.action, &r.subject, &r.details];
    let framed = |update: &mut dyn FnMut(&[u8])| {
        for field in fields {
            update(field.len().to_string().as_bytes());
            update(b":");
            update(field.as_bytes());
        }
    };
    match key {
        Some(key) => {
            let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
            framed(&mut |b| mac.update(b));
            format!("{KEYED}{}", crate::value::hex(&mac.finalize().into_bytes()))
        }
        None => {
            let mut h = Sha256::new();
            framed(&mut |b| h.update(b));
            crate::value::hex(&h.finalize())
        }
    }
}

/// What a keyed hash starts with.
const KEYED: &str = "hmac-sha256:";

/// Whether `hash` is the head someone kept: `kept` is it, or its first 12 characters or more
/// (with or without the `hmac-sha256:` mark).
fn is_kept(kept: &str, hash: &str) -> bool {
    let kept = kept.trim_start_matches(KEYED);
    kept.len() >= 12 && hash.trim_start_matches(KEYED).starts_with(kept)
}

/// The shortest audit key accepted.
const MIN_KEY_LEN: usize = 32;

/// Reads the audit chain's key: a private file of at least 32 bytes (surrounding white space
/// is not part of it). Errors say the file, never the key.
pub fn load_key(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("cannot read the audit key file {shown}: {e}"))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "the audit key file {shown} can be read by group or others (mode {mode:04o}); make it private: chmod 600 {shown}"
            ));
        }
    }
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read the audit key file {shown}: {e}"))?;
    let key = bytes.trim_ascii();
    if key.len() < MIN_KEY_LEN {
        return Err(format!(
            "the audit key file {shown} holds {} bytes; the key needs at least {MIN_KEY_LEN} (e.g. head -c 32 /dev/urandom | base64 > {shown})",
            key.len()
        ));
    }
    Ok(key.to_vec())
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

/// The statement that records an entry sealed after `head` (the chain's last number and
/// hash): run in the transaction that makes the change it records, after reading the head in
/// that transaction (`append!`), so that the change and its sealed entry are committed
/// together or not at all.
pub(super) fn sealed_insert(
    key: Option<&[u8]>,
    entry: &AuditEntry,
    now_us: i64,
    head: (i64, String),
) -> Stmt {
    let (last, prev) = head;
    let seq = last + 1;
    let record = AuditRecord {
        id: 0,
        at_us: now_us,
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        subject: entry.subject.clone(),
        details: entry.details.to_string(),
        seal_seq: None,
        prev_hash: None,
        hash: None,
    };
    let h = hash(key, &prev, seq, &record);
    Stmt {
        sql: "INSERT INTO audit_log (at_us, actor, action, subject, details, seal_seq, prev_hash, hash) \
              VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            .into(),
        binds: vec![
            Bind::I64(now_us),
            Bind::Text(record.actor),
            Bind::Text(record.action),
            Bind::Text(record.subject),
            Bind::Text(record.details),
            Bind::I64(seq),
            Bind::Text(prev),
            Bind::Text(h),
        ],
    }
}

/// The query of the chain's head: its last number and hash.
pub(crate) const HEAD: &str = "SELECT seal_seq, hash FROM audit_log WHERE seal_seq IS NOT NULL ORDER BY seal_seq DESC LIMIT 1";

/// The head from `HEAD`'s row: (0, the genesis) for an empty chain.
pub(super) fn head_of(row: Option<(i64, String)>) -> (i64, String) {
    row.unwrap_or_else(|| (0, GENESIS.to_string()))
}

/// The PostgreSQL advisory lock that serialises appends to the chain across replicas (within a
/// process, and on SQLite, the store's writer turn already does): each append reads the head
/// and extends it, so two at once would both extend the same head.
pub(crate) const CHAIN_LOCK: &str = "SELECT pg_advisory_xact_lock(7599502034462979684)";

/// Appends an entry, sealed, inside a transaction: `append!(store, tx, &entry, now_us)`. On
/// PostgreSQL the transaction first takes the chain's lock (`CHAIN_LOCK`), held until it ends.
macro_rules! append {
    ($store:expr, $tx:expr, $entry:expr, $now:expr) => {{
        let key = $store.audit_key()?;
        if $store.is_postgres() {
            sqlx::query($crate::state::audit::CHAIN_LOCK)
                .execute(&mut *$tx)
                .await?;
        }
        let row = sqlx::query($crate::state::audit::HEAD)
            .fetch_optional(&mut *$tx)
            .await?;
        let head = match row {
            Some(row) => Some((row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?)),
            None => None,
        };
        let stmt = $crate::state::audit::sealed_insert(
            key,
            $entry,
            $now,
            $crate::state::audit::head_of(head),
        );
        bound!(stmt).execute(&mut *$tx).await?;
    }};
}
pub(crate) use append;

impl StateStore {
    /// Records an entry, sealed, in a transaction of its own.
    pub async fn audit(&self, entry: &AuditEntry, now_us: i64) -> Result<(), StateError> {
        let _turn = self.writer.lock().await;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            append!(self, tx, entry, now_us);
            tx.commit().await?;
        });
        Ok(())
    }

    /// The chain's head: how many entries it has, and the last one's hash.
    pub async fn audit_head(&self) -> Result<(i64, Option<String>), StateError> {
        let row = on_pool!(self, pool => {
            match sqlx::query(HEAD).fetch_optional(pool).await? {
                Some(row) => Some((row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?)),
                None => None,
            }
        });
        Ok(row.map_or((0, None), |(n, h)| (n, Some(h))))
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

    /// The id a query's first row has, if it has one.
    async fn first_id(&self, sql: &'static str) -> Result<Option<i64>, StateError> {
        Ok(on_pool!(self, pool => {
            sqlx::query(sql)
                .fetch_optional(pool)
                .await?
                .map(|row| row.try_get::<i64, _>(0))
                .transpose()?
        }))
    }

    /// Walks the chain from its start and says whether it is whole; with `kept`, a head kept
    /// elsewhere (its hash, or the first 12 or more characters of it), also whether the chain
    /// still reaches it. Linear in the entries (memory flat: a page at a time).
    pub async fn verify_audit(&self, kept: Option<&str>) -> Result<Verification, StateError> {
        self.walk_audit(None, kept).await
    }

    /// Walks the chain from entry `seq`, a head kept from an earlier verify (`hash`: its hash,
    /// or the first 12 or more characters of it): that entry must still be in the chain with
    /// that hash and match it, and every entry after it is checked as `verify_audit` checks
    /// them, as are the repairs planned since it was written. Bounded by what was written
    /// since, not by the history: an entry before the kept head edited since is for a whole
    /// `verify_audit` to find.
    pub async fn verify_audit_since(
        &self,
        seq: i64,
        hash: &str,
    ) -> Result<Verification, StateError> {
        self.walk_audit(Some((seq, hash)), None).await
    }

    /// The one walk behind both verifies: from the genesis, or from a kept head.
    async fn walk_audit(
        &self,
        since: Option<(i64, &str)>,
        kept: Option<&str>,
    ) -> Result<Verification, StateError> {
        let key = self.audit_key()?;
        let broken = |at: i64, reason: String| Ok(Verification::Broken { at, reason });
        // Rows the daemon did not seal were not written by it.
        let foreign = self
            .first_id("SELECT id FROM audit_log WHERE seal_seq IS NULL ORDER BY id LIMIT 1")
            .await?;
        if let Some(id) = foreign {
            return broken(
                0,
                format!(
                    "row id {id} is not sealed: invariantd did not write it (inserted by hand?)"
                ),
            );
        }
        let mut prev = GENESIS.to_string();
        let mut expected = 1;
        let mut keyed_before = false;
        let mut planned_since = None;
        if let Some((seq, kept_hash)) = since {
            let stmt = Stmt {
                sql: format!("SELECT {COLUMNS} FROM audit_log WHERE seal_seq = $1"),
                binds: vec![Bind::I64(seq)],
            };
            let row = on_pool!(self, pool => {
                match bound!(stmt).fetch_optional(pool).await? {
                    Some(row) => Some(record_of!(row)),
                    None => None,
                }
            });
            let Some(r) = row else {
                return broken(
                    seq,
                    format!(
                        "entry {seq}, the head you kept, is not in the chain: the log was cut short or rewritten"
                    ),
                );
            };
            let stored = r.hash.clone().unwrap_or_default();
            if !is_kept(kept_hash, &stored) {
                return broken(
                    seq,
                    format!(
                        "entry {seq} is not the head you kept (its hash differs): the log was rewritten"
                    ),
                );
            }
            let keyed = stored.starts_with(KEYED);
            if keyed && key.is_none() {
                return broken(
                    seq,
                    format!("entry {seq} is keyed: verify it with auth.audit_key_file set"),
                );
            }
            let own = hash(
                key.filter(|_| keyed),
                r.prev_hash.as_deref().unwrap_or_default(),
                seq,
                &r,
            );
            if own != stored {
                return broken(seq, format!("entry {seq} does not match its hash (edited)"));
            }
            prev = stored;
            expected = seq + 1;
            keyed_before = keyed;
            planned_since = Some(r.at_us);
        }
        let first = expected;
        let mut unkeyed = 0;
        let mut reached = kept.is_none();
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
                    return broken(
                        expected,
                        format!(
                            "entry {expected} is missing: the chain goes on at {seq} (deleted)"
                        ),
                    );
                }
                if r.prev_hash.as_deref() != Some(prev.as_str()) {
                    return broken(
                        seq,
                        format!(
                            "entry {seq} does not follow entry {}: its link was changed",
                            seq - 1
                        ),
                    );
                }
                let stored = r.hash.as_deref().unwrap_or_default();
                let keyed = stored.starts_with(KEYED);
                if keyed && key.is_none() {
                    return broken(
                        seq,
                        format!("entry {seq} is keyed: verify it with auth.audit_key_file set"),
                    );
                }
                if !keyed && keyed_before {
                    return broken(
                        seq,
                        format!(
                            "entry {seq} is not keyed though the entries before it are: rewritten without the key"
                        ),
                    );
                }
                let h = hash(key.filter(|_| keyed), &prev, seq, r);
                if stored != h {
                    return broken(seq, format!("entry {seq} does not match its hash (edited)"));
                }
                if keyed {
                    keyed_before = true;
                } else {
                    unkeyed += 1;
                }
                if let Some(k) = kept
                    && is_kept(k, &h)
                {
                    reached = true;
                }
                prev = h;
                expected += 1;
            }
        }
        // Every repair records its planning: one without an entry lost it (an emptied log
        // too). From a kept head, the repairs planned since it was written, by their index
        // (ordered by id, PostgreSQL would read every repair to find the first).
        let orphan = on_pool!(self, pool => {
            sqlx::query(
                "SELECT r.id FROM repairs r WHERE r.created_us >= $1 AND NOT EXISTS \
                 (SELECT 1 FROM audit_log a WHERE a.subject = 'repair/' || CAST(r.id AS TEXT)) \
                 ORDER BY r.created_us, r.id LIMIT 1",
            )
            .bind(planned_since.unwrap_or(i64::MIN))
            .fetch_optional(pool)
            .await?
            .map(|row| row.try_get::<i64, _>(0))
            .transpose()?
        });
        if let Some(id) = orphan {
            return broken(
                0,
                format!(
                    "repair {id} has no entry in the log: entries were deleted ({} entries left)",
                    expected - 1
                ),
            );
        }
        if !reached {
            return broken(
                0,
                format!(
                    "the head you kept is not in the chain: the log was cut short or rewritten ({} entries now)",
                    expected - 1
                ),
            );
        }
        Ok(Verification::Intact {
            entries: expected - 1,
            checked: expected - first,
            head: (expected > 1).then_some(prev),
            unkeyed,
        })
    }
}
