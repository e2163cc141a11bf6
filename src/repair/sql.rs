//! `sql` actions: one statement with bound parameters on a named source, in its own
//! transaction, committed only when it affects `expect_rows` rows.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::action::{Action, Attempt, mismatch};
use crate::sources::{Source, WriteError};
use crate::verdict::ActionSpec;

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
