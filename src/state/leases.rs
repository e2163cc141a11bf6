//! The `leases` table: which replica holds a piece of work, with a fencing token, until when
//! — by the database's clock, never a replica's. `acquire` takes a lease that is free or has
//! expired (a new holder, or the same after its lease lapsed, gets a larger token); `renew`
//! extends it only for the holder with that token and only before it expires, so a replica
//! that was paused past its lease finds it lost and must stop; `release` ends it at once.
//! `fence` is the check a guarded write makes in its own transaction (on PostgreSQL `FOR
//! SHARE`, which holds off a takeover until the write commits).
//!
//! A SQLite state store has one writer (`sole_writer`): a second daemon on the same file is
//! refused, and leases there only serve the one process.

use std::path::PathBuf;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Row as _};

use super::{Bind, Pool, StateError, StateStore, Stmt, bound, on_pool};

/// A lease held: what it is for, by whom, with which token, until when (database clock,
/// microseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub token: i64,
    pub expires_us: i64,
}

/// A lease as the table keeps it, for listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseRow {
    pub name: String,
    pub holder: String,
    pub token: i64,
    pub acquired_us: i64,
    pub renewed_us: i64,
    pub expires_us: i64,
    /// Whether it had expired when read (by the database's clock).
    pub expired: bool,
}

/// A `Lease` from a row of `name, holder, token, expires_us`.
macro_rules! lease_of {
    ($r:expr) => {
        Lease {
            name: $r.try_get(0)?,
            holder: $r.try_get(1)?,
            token: $r.try_get(2)?,
            expires_us: $r.try_get(3)?,
        }
    };
}

/// A `LeaseRow` from a row of `list_statement`.
macro_rules! lease_row_of {
    ($r:expr) => {
        LeaseRow {
            name: $r.try_get(0)?,
            holder: $r.try_get(1)?,
            token: $r.try_get(2)?,
            acquired_us: $r.try_get(3)?,
            renewed_us: $r.try_get(4)?,
            expires_us: $r.try_get(5)?,
            expired: $r.try_get::<i32, _>(6)? == 1,
        }
    };
}

/// The database's clock, in microseconds since the epoch, as SQL.
fn now_us(pool: &Pool) -> &'static str {
    match pool {
        Pool::Postgres(_) => "CAST(EXTRACT(EPOCH FROM now()) * 1000000 AS BIGINT)",
        Pool::Sqlite(_) => "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)",
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// An exclusive lock on a SQLite state store's file, held while the daemon runs (released
/// when dropped, or when the process dies).
#[derive(Debug)]
pub struct SoleWriter {
    _file: std::fs::File,
}

/// The error of a second writer.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error(
        "another invariantd is already running on the SQLite state store {0} (it holds {1}): a SQLite state store has one writer. Stop it, or give each daemon its own state store; several replicas need a PostgreSQL state store"
    )]
    Taken(String, String),
    #[error("cannot lock {0}: {1}")]
    Io(String, std::io::Error),
}

impl StateStore {
    /// Takes `name` for `holder` for `ttl` if it is free or expired; `None` when another
    /// holder has it (or `holder` still has it: renew that one).
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StateError> {
        let now = now_us(&self.pool);
        let stmt = Stmt {
            sql: format!(
                "INSERT INTO leases (name, holder, token, acquired_us, renewed_us, expires_us) \
                 VALUES ($1, $2, 1, {now}, {now}, {now} + $3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                 token = leases.token + 1, acquired_us = excluded.acquired_us, \
                 renewed_us = excluded.renewed_us, expires_us = excluded.expires_us \
                 WHERE leases.expires_us <= excluded.acquired_us \
                 RETURNING token, expires_us"
            ),
            binds: vec![
                Bind::Text(name.into()),
                Bind::Text(holder.into()),
                Bind::I64(micros(ttl)),
            ],
        };
        let row = on_pool!(self, pool => match bound!(stmt).fetch_optional(pool).await? {
            Some(r) => Some((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?)),
            None => None,
        });
        Ok(row.map(|(token, expires_us)| Lease {
            name: name.into(),
            holder: holder.into(),
            token,
            expires_us,
        }))
    }

    /// Extends `lease` by `ttl` from now, if it is still this holder's with this token and has
    /// not expired; otherwise it is lost (`None`), and whatever it guarded must stop.
    pub async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<Option<Lease>, StateError> {
        Ok(self
            .renew_leases(std::slice::from_ref(lease), ttl)
            .await?
            .pop())
    }

    /// `renew_lease` for many at once, in one statement (a replica renews everything it holds
    /// each round): the leases still held, renewed; those missing are lost.
    pub async fn renew_leases(
        &self,
        leases: &[Lease],
        ttl: Duration,
    ) -> Result<Vec<Lease>, StateError> {
        let mut renewed = Vec::with_capacity(leases.len());
        on_pool!(self, pool => {
            for stmt in self.renew_statements(leases, ttl) {
                for r in bound!(stmt).fetch_all(pool).await? {
                    renewed.push(lease_of!(r));
                }
            }
        });
        Ok(renewed)
    }

    /// `renew_leases`, then `leases`, in one transaction: a replica's round, one transaction
    /// however many leases it holds (up to 500).
    pub async fn renew_and_list_leases(
        &self,
        leases: &[Lease],
        ttl: Duration,
    ) -> Result<(Vec<Lease>, Vec<LeaseRow>), StateError> {
        let mut renewed = Vec::with_capacity(leases.len());
        let mut rows = Vec::new();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for stmt in self.renew_statements(leases, ttl) {
                for r in bound!(stmt).fetch_all(&mut *tx).await? {
                    renewed.push(lease_of!(r));
                }
            }
            for r in bound!(self.list_statement()).fetch_all(&mut *tx).await? {
                rows.push(lease_row_of!(r));
            }
            tx.commit().await?;
        });
        Ok((renewed, rows))
    }

    /// The renewal of `leases`, a few hundred a statement: SQLite takes at most 32,766
    /// parameters.
    fn renew_statements(&self, leases: &[Lease], ttl: Duration) -> Vec<Stmt> {
        let now = now_us(&self.pool);
        leases
            .chunks(500)
            .map(|part| {
                let mut binds = vec![Bind::I64(micros(ttl))];
                let mut pairs = Vec::with_capacity(part.len());
                for l in part {
                    let n = binds.len();
                    pairs.push(format!("(${}, ${}, ${})", n + 1, n + 2, n + 3));
                    binds.push(Bind::Text(l.name.clone()));
                    binds.push(Bind::Text(l.holder.clone()));
                    binds.push(Bind::I64(l.token));
                }
                Stmt {
                    sql: format!(
                        "UPDATE leases SET renewed_us = {now}, expires_us = {now} + $1 \
                         WHERE (name, holder, token) IN (VALUES {}) AND expires_us > {now} \
                         RETURNING name, holder, token, expires_us",
                        pairs.join(", ")
                    ),
                    binds,
                }
            })
            .collect()
    }

    /// Gives `lease` up at once (if it is still this holder's), so another can take it
    /// without waiting for it to expire.
    pub async fn release_lease(&self, lease: &Lease) -> Result<bool, StateError> {
        let now = now_us(&self.pool);
        let stmt = Stmt {
            sql: format!(
                "UPDATE leases SET expires_us = {now} \
                 WHERE name = $1 AND holder = $2 AND token = $3 AND expires_us > {now}"
            ),
            binds: vec![
                Bind::Text(lease.name.clone()),
                Bind::Text(lease.holder.clone()),
                Bind::I64(lease.token),
            ],
        };
        let n = on_pool!(self, pool => bound!(stmt).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    /// Ends every lease at once (their rows, and so their tokens, stay): for a SQLite state
    /// store's sole writer at start-up, whose leases can only be those of a process that has
    /// died (it holds the file's lock).
    pub async fn expire_all_leases(&self) -> Result<u64, StateError> {
        let stmt = Stmt {
            sql: "UPDATE leases SET expires_us = 0 WHERE expires_us > 0".into(),
            binds: Vec::new(),
        };
        let n = on_pool!(self, pool => bound!(stmt).execute(pool).await?.rows_affected());
        Ok(n)
    }

    /// Deletes the heartbeats (`replica/…` leases) of replicas gone for longer than `after`:
    /// each process has an identity of its own, so they would pile up. Nothing is fenced by
    /// a heartbeat, so its token need not be kept.
    pub async fn forget_replicas(&self, after: Duration) -> Result<u64, StateError> {
        let now = now_us(&self.pool);
        let stmt = Stmt {
            sql: format!(
                "DELETE FROM leases WHERE name LIKE 'replica/%' AND expires_us < {now} - $1"
            ),
            binds: vec![Bind::I64(micros(after))],
        };
        let n = on_pool!(self, pool => bound!(stmt).execute(pool).await?.rows_affected());
        Ok(n)
    }

    /// Every lease, with whether it has expired, by name.
    pub async fn leases(&self) -> Result<Vec<LeaseRow>, StateError> {
        let mut rows = Vec::new();
        on_pool!(self, pool => {
            for r in bound!(self.list_statement()).fetch_all(pool).await? {
                rows.push(lease_row_of!(r));
            }
        });
        Ok(rows)
    }

    fn list_statement(&self) -> Stmt {
        let now = now_us(&self.pool);
        Stmt {
            sql: format!(
                "SELECT name, holder, token, acquired_us, renewed_us, expires_us, \
                 CASE WHEN expires_us <= {now} THEN 1 ELSE 0 END FROM leases ORDER BY name"
            ),
            binds: Vec::new(),
        }
    }

    /// The check a write guarded by `lease` makes inside its transaction: the statement
    /// returns a row only while the lease is still this holder's, with this token, unexpired.
    /// On PostgreSQL it locks the lease row `FOR SHARE` until the transaction ends, so no
    /// other replica can take the lease over while the write is under way.
    pub(crate) fn fence(&self, lease: &Lease) -> Stmt {
        let now = now_us(&self.pool);
        let lock = match self.pool {
            Pool::Postgres(_) => " FOR SHARE",
            Pool::Sqlite(_) => "",
        };
        Stmt {
            sql: format!(
                "SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND token = $3 \
                 AND expires_us > {now}{lock}"
            ),
            binds: vec![
                Bind::Text(lease.name.clone()),
                Bind::Text(lease.holder.clone()),
                Bind::I64(lease.token),
            ],
        }
    }

    /// Whether `lease` is still this holder's, with this token, unexpired: the fence check in
    /// a transaction of its own (a loop asks before it starts a piece of work).
    pub async fn still_holds(&self, lease: &Lease) -> Result<bool, StateError> {
        let check = self.fence(lease);
        let held = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let held = bound!(check).fetch_optional(&mut *tx).await?.is_some();
            tx.commit().await?;
            held
        });
        Ok(held)
    }

    /// For a SQLite state store, the one writer's lock, or why another process has it; `None`
    /// for PostgreSQL, where replicas share the store through leases.
    pub fn sole_writer(&self) -> Result<Option<SoleWriter>, WriterError> {
        let Some(path) = &self.sqlite_path else {
            return Ok(None);
        };
        let lock: PathBuf = {
            let mut p = path.clone().into_os_string();
            p.push(".lock");
            p.into()
        };
        let shown = lock.display().to_string();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock)
            .map_err(|e| WriterError::Io(shown.clone(), e))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(SoleWriter { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(WriterError::Taken(path.display().to_string(), shown))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(WriterError::Io(shown, e)),
        }
    }
}
