//! `sql` actions: one statement with bound parameters on a named source, in its own
//! transaction, committed only when it affects `expect_rows` rows.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::action::{Action, Attempt, mismatch};
use crate::sources::{Source, WriteError};
use crate::verdict::{ActionSpec, Param};

pub struct Sql<'a> {
    pub source: Option<Arc<Source>>,
    pub source_name: &'a str,
    pub statement: &'a str,
    pub expect_rows: u64,
}

impl Action for Sql<'_> {
    fn apply<'a>(&'a self, spec: &'a ActionSpec, _key: &'a str) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let ActionSpec::Sql { params } = spec else {
                return mismatch(spec, "sql");
            };
            let Some(source) = &self.source else {
                return Attempt::Failed(format!("source `{}` is not configured", self.source_name));
            };
            let c = &source.config;
            let timeout = c.connect_timeout + c.statement_timeout;
            match source
                .execute(self.statement, params, self.expect_rows, timeout)
                .await
            {
                Ok(n) => Attempt::Applied(format!(
                    "{n} row{} changed on `{}`",
                    if n == 1 { "" } else { "s" },
                    self.source_name
                )),
                Err(WriteError::NotDone {
                    retry: true,
                    message,
                }) => Attempt::Retry(message),
                Err(WriteError::NotDone {
                    retry: false,
                    message,
                }) => Attempt::Failed(message),
                Err(WriteError::Ambiguous(message)) => Attempt::Ambiguous(message),
            }
        })
    }
}

/// What the statement will do, as an approver reads it: the statement and its parameters.
pub(super) fn describe(source: &str, statement: &str, params: &[Param]) -> String {
    let values: Vec<String> = params
        .iter()
        .map(|p| match p {
            Param::Null => "NULL".to_string(),
            Param::Bool(b) => b.to_string(),
            Param::Int(i) => i.to_string(),
            Param::Double(d) => d.to_string(),
            Param::Decimal(d) => d.clone(),
            Param::Text(t) => format!("'{t}'"),
            Param::Timestamp(t) => crate::value::format_timestamp(*t),
            Param::Bytes(b) => crate::value::hex(b),
        })
        .collect();
    format!(
        "on source `{source}`, in one transaction:\n{statement}\nwith parameters: {}",
        values.join(", ")
    )
}
