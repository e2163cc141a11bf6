//! What a source holds, for `invariantd init`: the tables and views its role can read, their
//! columns in order, their types and which are the primary key. Read like a dataset — the
//! same read-only transaction, statement timeout and TLS — with a query each backend gives
//! (`Backend::catalog_query`).

use std::sync::Arc;
use std::time::Duration;

use super::request::{KeyMode, ReadRequest, ReaderMsg};
use super::{Source, spawn_reader};
use crate::value::Value;
use crate::verdict::{ErrorKind, RunError};

/// One column of a table the source's role can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub schema: String,
    pub table: String,
    pub name: String,
    pub position: i64,
    /// As the database names it (`bigint`, `varchar(20)`, `INTEGER`).
    pub data_type: String,
    pub primary_key: bool,
}

/// The catalog's columns, in the order every backend's query names them.
const FIELDS: [&str; 6] = [
    "table_schema",
    "table_name",
    "column_name",
    "position",
    "data_type",
    "primary_key",
];

impl Source {
    /// Every column of every table and view the role can read, by table then position.
    pub async fn catalog(self: &Arc<Self>, timeout: Duration) -> Result<Vec<Column>, RunError> {
        let request = ReadRequest {
            query: self.backend.catalog_query().to_string(),
            key: "id".to_string(),
            deadline: tokio::time::Instant::now() + timeout,
            keys: None,
            changed_since: None,
            snapshot: None,
            range: None,
        };
        let permit = self.reserve(1).await?;
        let mut reader = spawn_reader(self.clone(), request, permit);
        let stopped = || RunError::new(ErrorKind::QueryFailed, "the catalog read stopped early");
        let description = match reader.messages.recv().await {
            Some(ReaderMsg::Described(d)) => d,
            Some(ReaderMsg::Failed(e)) => return Err(e),
            _ => return Err(stopped()),
        };
        let at: Vec<usize> = FIELDS
            .iter()
            .map(|f| description.columns.iter().position(|c| c == f))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                RunError::new(
                    ErrorKind::SchemaMismatch,
                    format!(
                        "the catalog query returned {}, not {}",
                        description.columns.join(", "),
                        FIELDS.join(", ")
                    ),
                )
            })?;
        let _ = reader.mode.send(KeyMode::Text);
        let mut columns = Vec::new();
        loop {
            match reader.messages.recv().await {
                Some(ReaderMsg::Rows(rows)) => {
                    for row in rows {
                        let v = |i: usize| row.values.get(at[i]).unwrap_or(&Value::Null);
                        columns.push(Column {
                            schema: text(v(0)),
                            table: text(v(1)),
                            name: text(v(2)),
                            position: int(v(3)),
                            data_type: text(v(4)),
                            primary_key: int(v(5)) != 0,
                        });
                    }
                }
                Some(ReaderMsg::Done { .. }) => break,
                Some(ReaderMsg::Failed(e)) => return Err(e),
                _ => return Err(stopped()),
            }
        }
        columns.sort_by(|a, b| {
            (&a.schema, &a.table, a.position).cmp(&(&b.schema, &b.table, b.position))
        });
        Ok(columns)
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Text(t) => t.to_string(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => other.to_string(),
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::Decimal(d) => i64::try_from(*d).unwrap_or(0),
        Value::Bool(b) => i64::from(*b),
        Value::Text(t) => t.parse().unwrap_or(0),
        _ => 0,
    }
}
