//! `sql` actions: one statement with bound parameters on a named source, in its own
//! transaction, committed only when it affects `expect_rows` rows. The statement is fixed
//! text; every value from a row is a parameter (`params`, expressions), never spliced in.

use std::any::Any;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::template::param;
use super::{ActionKind, Checker, Configure, Fill, Targets};
use crate::diag::Diagnostics;
use crate::expr::{self, Env, Program, Scope};
use crate::lifecycle::repair::Attempt;
use crate::sources::WriteError;
use crate::verdict::{ActionSpec, Param};
use crate::yaml::{self, Shape};

#[derive(Debug, Deserialize)]
pub(crate) struct RawSql {
    source: Spanned<String>,
    statement: Spanned<String>,
    #[serde(default)]
    params: Vec<Spanned<String>>,
    expect_rows: Option<u64>,
}

/// A checked `sql` action.
#[derive(Debug)]
pub struct Sql {
    pub source: String,
    pub statement: String,
    /// Expressions, bound in order as the statement's parameters.
    pub params: Vec<expr::parser::Expr>,
    pub param_texts: Vec<String>,
    pub expect_rows: u64,
}

/// What an `sql` action does for one key: the statement's parameters, in order.
#[derive(Serialize, Deserialize)]
struct Values {
    params: Vec<Param>,
}

impl Configure for RawSql {
    fn shape() -> Shape {
        Shape::of::<RawSql>(vec![])
    }

    fn check(
        self,
        c: &Checker<'_>,
        ctx: &str,
        diags: &mut Diagnostics,
    ) -> Option<Arc<dyn ActionKind>> {
        let before = diags.len();
        if c.config.source(&self.source.value).is_none() {
            let names: Vec<&str> = c.config.sources.iter().map(|s| s.name.as_str()).collect();
            diags.push(
                c.file,
                c.at(&self.source),
                format!(
                    "{ctx}: unknown source `{}`; sources: {}",
                    self.source.value,
                    names.join(", ")
                ),
            );
        }
        let statement = c.expand(&self.statement, "a repair statement", diags);
        if statement.contains("{{") {
            diags.push(
                c.file,
                c.at(&self.statement),
                format!(
                    "{ctx}: the statement must not contain `{{{{…}}}}`: values go in `params` and are bound, never spliced into SQL"
                ),
            );
        }
        let mut params = Vec::new();
        for p in &self.params {
            match expr::parse(&p.value) {
                Ok(ast) => {
                    if let Err(errors) = expr::compile(&ast, c.scope) {
                        for e in errors {
                            diags.push(
                                c.file,
                                yaml::pos_in_scalar(c.doc, p, e.span.start),
                                format!("{ctx}: params: {}", e.message),
                            );
                        }
                    }
                    params.push(ast);
                }
                Err(e) => diags.push(
                    c.file,
                    yaml::pos_in_scalar(c.doc, p, e.span.start),
                    format!("{ctx}: params: {}", e.message),
                ),
            }
        }
        (diags.len() == before).then(|| {
            Arc::new(Sql {
                source: self.source.value.clone(),
                statement: statement.trim().to_string(),
                params,
                param_texts: self.params.iter().map(|p| p.value.clone()).collect(),
                expect_rows: self.expect_rows.unwrap_or(1),
            }) as Arc<dyn ActionKind>
        })
    }
}

/// The parameters compiled for a run.
#[derive(Debug)]
struct Params(Vec<Program>);

impl Fill for Params {
    fn fill(&self, env: &Env<'_>) -> Result<ActionSpec, String> {
        let params = self
            .0
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let v = p
                    .eval(env)
                    .map_err(|e| format!("params[{i}]: {}", e.message))?;
                param(&v).map_err(|e| format!("params[{i}]: {e}"))
            })
            .collect::<Result<_, _>>()?;
        super::spec("sql", &Values { params })
    }
}

impl ActionKind for Sql {
    fn kind(&self) -> &'static str {
        "sql"
    }

    fn compile(&self, scope: &Scope<'_>, what: &str) -> Result<Box<dyn Fill>, Vec<String>> {
        let mut programs = Vec::new();
        let mut errors = Vec::new();
        for p in &self.params {
            match expr::compile(p, scope) {
                Ok(p) => programs.push(p),
                Err(es) => errors.extend(
                    es.into_iter()
                        .map(|e| format!("{what}: params: {}", e.message)),
                ),
            }
        }
        if errors.is_empty() {
            Ok(Box::new(Params(programs)))
        } else {
            Err(errors)
        }
    }

    fn describe(&self, spec: &ActionSpec) -> Result<String, String> {
        let Values { params } = super::values(spec)?;
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
        Ok(format!(
            "on source `{}`, in one transaction:\n{}\nwith parameters: {}",
            self.source,
            self.statement,
            values.join(", ")
        ))
    }

    fn apply<'a>(
        &'a self,
        to: &'a Targets<'a>,
        spec: &'a ActionSpec,
        _key: &'a str,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let params = match super::values::<Values>(spec) {
                Ok(v) => v.params,
                Err(e) => return Attempt::Failed(e),
            };
            let Some(source) = to.sources.get(&self.source) else {
                return Attempt::Failed(format!("source `{}` is not configured", self.source));
            };
            let c = &source.config;
            let timeout = c.connect_timeout + c.statement_timeout;
            match source
                .execute(&self.statement, &params, self.expect_rows, timeout)
                .await
            {
                Ok(n) => Attempt::Applied(format!(
                    "{n} row{} changed on `{}`",
                    if n == 1 { "" } else { "s" },
                    self.source
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

    fn as_any(&self) -> &dyn Any {
        self
    }
}
