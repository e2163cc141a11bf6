//! The `silences` table: who silenced what, until when, and why. A silence is active from its
//! creation until `ends_us`, or until someone expires it; it is kept afterwards as a record.

use std::collections::BTreeMap;

use sqlx::{AssertSqlSafe, Row as _};

use super::{Bind, Pool, StateError, StateStore, Stmt, bound, on_pool};

/// A silence as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    pub id: i64,
    /// Field (`rule`, `severity`, `kind`, `source`, or a rule label) → value; all must match.
    pub matchers: BTreeMap<String, String>,
    /// Only this key's violation of the matched rule.
    pub key: Option<String>,
    pub comment: String,
    pub created_by: String,
    pub created_us: i64,
    pub ends_us: i64,
    pub expired_us: Option<i64>,
    pub expired_by: Option<String>,
}

impl Silence {
    pub fn is_active(&self, now_us: i64) -> bool {
        self.expired_us.is_none() && self.ends_us > now_us
    }
}

/// A silence to add.
#[derive(Debug, Clone)]
pub struct NewSilence {
    pub matchers: BTreeMap<String, String>,
    pub key: Option<String>,
    pub comment: String,
    pub created_by: String,
    pub ends_us: i64,
}

const COLUMNS: &str =
    "id, matchers, key, comment, created_by, created_us, ends_us, expired_us, expired_by";

macro_rules! silence_of {
    ($row:expr) => {{
        let row = $row;
        let matchers: String = row.try_get(1)?;
        Silence {
            id: row.try_get(0)?,
            matchers: serde_json::from_str(&matchers)
                .map_err(|e| StateError::Corrupt(format!("silence matchers: {e}")))?,
            key: row.try_get(2)?,
            comment: row.try_get(3)?,
            created_by: row.try_get(4)?,
            created_us: row.try_get(5)?,
            ends_us: row.try_get(6)?,
            expired_us: row.try_get(7)?,
            expired_by: row.try_get(8)?,
        }
    }};
}

impl StateStore {
    /// Adds a silence and returns it as stored.
    pub async fn add_silence(&self, new: &NewSilence, now_us: i64) -> Result<Silence, StateError> {
        let stmt = Stmt {
            sql: "INSERT INTO silences (matchers, key, comment, created_by, created_us, ends_us) \
                  VALUES ($1, $2, $3, $4, $5, $6) RETURNING id"
                .into(),
            binds: vec![
                Bind::Text(serde_json::to_string(&new.matchers).expect("a map serialises")),
                Bind::OptText(new.key.clone()),
                Bind::Text(new.comment.clone()),
                Bind::Text(new.created_by.clone()),
                Bind::I64(now_us),
                Bind::I64(new.ends_us),
            ],
        };
        let id = self.write(Some(stmt), Vec::new()).await?;
        Ok(Silence {
            id: id.expect("the insert returns its id"),
            matchers: new.matchers.clone(),
            key: new.key.clone(),
            comment: new.comment.clone(),
            created_by: new.created_by.clone(),
            created_us: now_us,
            ends_us: new.ends_us,
            expired_us: None,
            expired_by: None,
        })
    }

    /// Silences active at `now_us`, or with `all` every one kept, newest first.
    pub async fn silences(&self, all: bool, now_us: i64) -> Result<Vec<Silence>, StateError> {
        let stmt = if all {
            Stmt {
                sql: format!("SELECT {COLUMNS} FROM silences ORDER BY id DESC LIMIT 1000"),
                binds: Vec::new(),
            }
        } else {
            Stmt {
                sql: format!(
                    "SELECT {COLUMNS} FROM silences WHERE expired_us IS NULL AND ends_us > $1 ORDER BY id DESC"
                ),
                binds: vec![Bind::I64(now_us)],
            }
        };
        let mut out = Vec::new();
        on_pool!(self, pool => {
            for row in bound!(stmt).fetch_all(pool).await? {
                out.push(silence_of!(row));
            }
        });
        Ok(out)
    }

    pub async fn silence(&self, id: i64) -> Result<Option<Silence>, StateError> {
        let stmt = Stmt {
            sql: format!("SELECT {COLUMNS} FROM silences WHERE id = $1"),
            binds: vec![Bind::I64(id)],
        };
        let found = on_pool!(self, pool => match bound!(stmt).fetch_optional(pool).await? {
            Some(row) => Some(silence_of!(row)),
            None => None,
        });
        Ok(found)
    }

    /// Lifts an active silence now. Returns the silence as it is afterwards, or `None` if there
    /// is no such silence; one already over is left as it was.
    pub async fn expire_silence(
        &self,
        id: i64,
        by: &str,
        now_us: i64,
    ) -> Result<Option<Silence>, StateError> {
        let stmt = Stmt {
            sql: "UPDATE silences SET expired_us = $2, expired_by = $3 \
                  WHERE id = $1 AND expired_us IS NULL AND ends_us > $2"
                .into(),
            binds: vec![Bind::I64(id), Bind::I64(now_us), Bind::Text(by.into())],
        };
        self.write(None, vec![stmt]).await?;
        self.silence(id).await
    }
}

/// Silences over for longer than the retention period go.
pub(super) fn prune(before_us: i64, limit: i64) -> Vec<Stmt> {
    vec![Stmt {
        sql: "DELETE FROM silences WHERE id IN \
              (SELECT id FROM silences WHERE ends_us < $1 OR expired_us < $1 LIMIT $2)"
            .into(),
        binds: vec![Bind::I64(before_us), Bind::I64(limit)],
    }]
}
