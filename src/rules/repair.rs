//! A rule's `repair:` section: the compensating actions it offers for a violation, and the
//! guardrails around applying them automatically. Checked as strictly as the rest of the rule:
//! an unknown source, a template naming an unknown field, a SQL parameter that does not
//! parse, an action that is not exactly one of `sql`, `http` or `publish` — each with its file,
//! line and column. Templates are compiled here against what is known at load time, and again
//! by the engine against the columns the queries really return.

use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::{Config, valid_name};
use crate::diag::{Diagnostics, Pos};
use crate::expr::{self, Scope, Template};
use crate::yaml::{self, Document, OrderedMap};

#[derive(Debug, Deserialize)]
pub(super) struct RawRepair {
    mode: Option<Spanned<String>>,
    #[serde(default)]
    dry_run: bool,
    max_auto_per_run: Option<Spanned<u32>>,
    max_per_hour: Option<Spanned<u32>>,
    action: Option<Spanned<RawAction>>,
    actions: Option<OrderedMap<RawAction>>,
}

#[derive(Debug, Deserialize)]
struct RawAction {
    sql: Option<RawSql>,
    http: Option<RawHttp>,
    publish: Option<RawPublish>,
    #[serde(default)]
    idempotent: bool,
}

#[derive(Debug, Deserialize)]
struct RawSql {
    source: Spanned<String>,
    statement: Spanned<String>,
    #[serde(default)]
    params: Vec<Spanned<String>>,
    expect_rows: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct RawHttp {
    method: Option<Spanned<String>>,
    url: Spanned<String>,
    #[serde(default)]
    headers: OrderedMap<String>,
    json: Option<Spanned<serde_json::Value>>,
    on_409: Option<Spanned<String>>,
    on_422: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
struct RawPublish {
    url: Spanned<String>,
    subject: Spanned<String>,
    json: Option<Spanned<serde_json::Value>>,
}

/// The shape of a `repair:` section, for finding unknown fields.
pub(super) fn shape() -> yaml::Shape {
    use yaml::Shape;
    let action = || {
        Shape::of::<RawAction>(vec![
            ("sql", Shape::of::<RawSql>(vec![])),
            (
                "http",
                Shape::of::<RawHttp>(vec![("headers", Shape::Any), ("json", Shape::Any)]),
            ),
            (
                "publish",
                Shape::of::<RawPublish>(vec![("json", Shape::Any)]),
            ),
        ])
    };
    Shape::of::<RawRepair>(vec![
        ("action", action()),
        ("actions", Shape::MapOf(Box::new(action()))),
    ])
}

/// Whether a rule's repairs are applied once planned, or wait for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairMode {
    Auto,
    Approve,
}

impl RepairMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RepairMode::Auto => "auto",
            RepairMode::Approve => "approve",
        }
    }
}

/// What a rule's `repair:` section says.
#[derive(Debug, Clone)]
pub struct Repair {
    pub mode: RepairMode,
    /// Plan and show, never apply automatically.
    pub dry_run: bool,
    /// A run finding more violations than this applies none of its repairs automatically.
    pub max_auto_per_run: u32,
    /// At most this many repairs of the rule are applied per rolling hour.
    pub max_per_hour: Option<u32>,
    /// The actions offered, the first one planned unless an approver picks another.
    pub actions: Vec<Action>,
}

/// What a 409 or 422 answer to an HTTP action means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMeaning {
    /// The target says it is already done: the repair is applied.
    Applied,
    /// The target refuses: the repair failed, and is not retried.
    Failed,
}

#[derive(Debug, Clone)]
pub struct Action {
    pub name: String,
    pub kind: ActionKind,
    /// Safe to repeat after an ambiguous failure (a timeout, a connection reset): the target
    /// deduplicates by the idempotency key, or the statement is conditional.
    pub idempotent: bool,
}

#[derive(Debug, Clone)]
pub enum ActionKind {
    Sql {
        source: String,
        statement: String,
        /// Expressions, bound in order as the statement's parameters.
        params: Vec<expr::parser::Expr>,
        param_texts: Vec<String>,
        expect_rows: u64,
    },
    Http {
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        /// Template strings inside; a string that is one `{{ expr }}` keeps the value's type.
        json: Option<serde_json::Value>,
        on_409: StatusMeaning,
        on_422: StatusMeaning,
    },
    Publish {
        url: String,
        subject: String,
        json: Option<serde_json::Value>,
    },
}

impl ActionKind {
    pub fn kind_name(&self) -> &'static str {
        match self {
            ActionKind::Sql { .. } => "sql",
            ActionKind::Http { .. } => "http",
            ActionKind::Publish { .. } => "publish",
        }
    }
}

/// The default of `max_auto_per_run`.
pub const DEFAULT_MAX_AUTO_PER_RUN: u32 = 10;

/// Every template string inside a JSON body, in document order.
pub fn json_templates(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_templates(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| json_templates(v, out)),
        _ => {}
    }
}

/// Checks one rule's `repair:` section.
pub(super) struct Checker<'a> {
    pub file: &'a Path,
    pub doc: &'a Document<'a>,
    pub config: &'a Config,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub scope: &'a Scope<'a>,
    pub ctx: &'a str,
}

impl Checker<'_> {
    fn at<T>(&self, s: &Spanned<T>) -> Pos {
        yaml::pos(s, self.doc.line_offset)
    }

    pub(super) fn check(&self, raw: RawRepair, diags: &mut Diagnostics) -> Option<Repair> {
        let before = diags.len();
        let ctx = self.ctx;
        let mode = match &raw.mode {
            None => RepairMode::Approve,
            Some(m) => match m.value.as_str() {
                "auto" => RepairMode::Auto,
                "approve" => RepairMode::Approve,
                other => {
                    diags.push(
                        self.file,
                        self.at(m),
                        format!("{ctx}: repair.mode `{other}` is not one of auto, approve"),
                    );
                    RepairMode::Approve
                }
            },
        };
        let mut actions = Vec::new();
        match (raw.action, raw.actions) {
            (Some(a), None) => {
                let pos = self.at(&a);
                actions.extend(self.action("default", pos, a.value, diags));
            }
            (None, Some(map)) if !map.0.is_empty() => {
                for (name, a) in map.0 {
                    let pos = self.at(&name);
                    if !valid_name(&name.value) {
                        diags.push(
                            self.file,
                            pos,
                            format!(
                                "{ctx}: repair action name `{}` must match [a-z0-9_]+",
                                name.value
                            ),
                        );
                    }
                    actions.extend(self.action(&name.value, pos, a, diags));
                }
            }
            (Some(a), Some(_)) => diags.push(
                self.file,
                self.at(&a),
                format!("{ctx}: repair: give either `action` or `actions`, not both"),
            ),
            _ => diags.push(
                self.file,
                Pos {
                    line: self.doc.line_offset + 1,
                    column: 1,
                },
                format!("{ctx}: repair needs an `action` (or named `actions`)"),
            ),
        }
        let positive = |v: &Option<Spanned<u32>>, what: &str, diags: &mut Diagnostics| {
            if let Some(n) = v
                && n.value == 0
            {
                diags.push(
                    self.file,
                    self.at(n),
                    format!("{ctx}: repair.{what} must be at least 1"),
                );
            }
        };
        positive(&raw.max_auto_per_run, "max_auto_per_run", diags);
        positive(&raw.max_per_hour, "max_per_hour", diags);
        (diags.len() == before).then(|| Repair {
            mode,
            dry_run: raw.dry_run,
            max_auto_per_run: raw
                .max_auto_per_run
                .map_or(DEFAULT_MAX_AUTO_PER_RUN, |n| n.value),
            max_per_hour: raw.max_per_hour.map(|n| n.value),
            actions,
        })
    }

    fn action(
        &self,
        name: &str,
        pos: Pos,
        raw: RawAction,
        diags: &mut Diagnostics,
    ) -> Option<Action> {
        let ctx = format!("{}: repair action `{name}`", self.ctx);
        let kind = match (raw.sql, raw.http, raw.publish) {
            (Some(sql), None, None) => self.sql(&ctx, sql, diags),
            (None, Some(http), None) => self.http(&ctx, http, diags),
            (None, None, Some(publish)) => self.publish(&ctx, publish, diags),
            _ => {
                diags.push(
                    self.file,
                    pos,
                    format!("{ctx}: give exactly one of `sql`, `http` or `publish`"),
                );
                return None;
            }
        }?;
        Some(Action {
            name: name.to_string(),
            kind,
            idempotent: raw.idempotent,
        })
    }

    fn expand(&self, s: &Spanned<String>, what: &str, diags: &mut Diagnostics) -> String {
        yaml::expand_spanned(s, what, self.file, self.doc.line_offset, self.env, diags)
    }

    /// Compiles a template against the rule's scope, reporting errors where they are written.
    fn template(&self, s: &Spanned<String>, what: &str, diags: &mut Diagnostics) {
        if let Err(errors) = Template::compile(&s.value, self.scope) {
            for e in errors {
                diags.push(
                    self.file,
                    yaml::pos_in_scalar(self.doc, s, e.offset),
                    format!("{what}: {}", e.message),
                );
            }
        }
    }

    /// Compiles every template string of a JSON body; errors point at the body.
    fn json(&self, j: &Spanned<serde_json::Value>, what: &str, diags: &mut Diagnostics) {
        let mut texts = Vec::new();
        json_templates(&j.value, &mut texts);
        for t in texts {
            if let Err(errors) = Template::compile(&t, self.scope) {
                for e in errors {
                    diags.push(
                        self.file,
                        self.at(j),
                        format!("{what}: in `{t}`: {}", e.message),
                    );
                }
            }
        }
    }

    fn sql(&self, ctx: &str, raw: RawSql, diags: &mut Diagnostics) -> Option<ActionKind> {
        let before = diags.len();
        if self.config.source(&raw.source.value).is_none() {
            let names: Vec<&str> = self
                .config
                .sources
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            diags.push(
                self.file,
                self.at(&raw.source),
                format!(
                    "{ctx}: unknown source `{}`; sources: {}",
                    raw.source.value,
                    names.join(", ")
                ),
            );
        }
        let statement = self.expand(&raw.statement, "a repair statement", diags);
        if statement.contains("{{") {
            diags.push(
                self.file,
                self.at(&raw.statement),
                format!(
                    "{ctx}: the statement must not contain `{{{{…}}}}`: values go in `params` and are bound, never spliced into SQL"
                ),
            );
        }
        let mut params = Vec::new();
        for p in &raw.params {
            match expr::parse(&p.value) {
                Ok(ast) => {
                    if let Err(errors) = expr::compile(&ast, self.scope) {
                        for e in errors {
                            diags.push(
                                self.file,
                                yaml::pos_in_scalar(self.doc, p, e.span.start),
                                format!("{ctx}: params: {}", e.message),
                            );
                        }
                    }
                    params.push(ast);
                }
                Err(e) => diags.push(
                    self.file,
                    yaml::pos_in_scalar(self.doc, p, e.span.start),
                    format!("{ctx}: params: {}", e.message),
                ),
            }
        }
        (diags.len() == before).then(|| ActionKind::Sql {
            source: raw.source.value.clone(),
            statement: statement.trim().to_string(),
            params,
            param_texts: raw.params.iter().map(|p| p.value.clone()).collect(),
            expect_rows: raw.expect_rows.unwrap_or(1),
        })
    }

    fn http(&self, ctx: &str, raw: RawHttp, diags: &mut Diagnostics) -> Option<ActionKind> {
        let before = diags.len();
        let method = match &raw.method {
            None => "POST".to_string(),
            Some(m) => {
                let up = m.value.to_ascii_uppercase();
                if !["POST", "PUT", "PATCH", "DELETE", "GET"].contains(&up.as_str()) {
                    diags.push(
                        self.file,
                        self.at(m),
                        format!(
                            "{ctx}: method `{}` is not one of POST, PUT, PATCH, DELETE, GET",
                            m.value
                        ),
                    );
                }
                up
            }
        };
        let url = self.expand(&raw.url, "a repair URL", diags);
        self.template(&raw.url, &format!("{ctx}: url"), diags);
        // The scheme and host must be there before any value is filled in.
        let prefix = url.split("{{").next().unwrap_or_default();
        if !(url.is_empty() || prefix.starts_with("http://") || prefix.starts_with("https://")) {
            diags.push(
                self.file,
                self.at(&raw.url),
                format!("{ctx}: url must start with http:// or https://, before any {{{{…}}}}"),
            );
        } else if url.contains("{{") && !authority_ends(prefix) {
            // A value from a row must never choose where the request goes: only the path and
            // the query take templates.
            let offset = raw.url.value.find("{{").unwrap_or_default();
            diags.push(
                self.file,
                yaml::pos_in_scalar(self.doc, &raw.url, offset),
                format!(
                    "{ctx}: url takes {{{{…}}}} only in its path and query, never in the scheme, host or port: write the host out (`http://payments.internal/refunds/{{{{key}}}}`)"
                ),
            );
        }
        let mut headers = Vec::new();
        for (k, v) in raw.headers.0 {
            if v.contains("{{") {
                diags.push(
                    self.file,
                    self.at(&k),
                    format!(
                        "{ctx}: header `{}` must not contain `{{{{…}}}}`: headers are the same for every repair",
                        k.value
                    ),
                );
            }
            if k.value.eq_ignore_ascii_case("idempotency-key") {
                diags.push(
                    self.file,
                    self.at(&k),
                    format!("{ctx}: Idempotency-Key is set by invariantd itself"),
                );
            }
            let value = yaml::expand_env(&v, self.env).unwrap_or_else(|missing| {
                diags.push(
                    self.file,
                    self.at(&k),
                    format!(
                        "{ctx}: header `{}`: environment variable {} is not set",
                        k.value,
                        missing.join(", ")
                    ),
                );
                String::new()
            });
            headers.push((k.value, value));
        }
        if let Some(j) = &raw.json {
            self.json(j, &format!("{ctx}: json"), diags);
        }
        let meaning = |v: &Option<Spanned<String>>, what: &str, diags: &mut Diagnostics| match v {
            None => StatusMeaning::Failed,
            Some(s) => match s.value.as_str() {
                "applied" => StatusMeaning::Applied,
                "failed" => StatusMeaning::Failed,
                other => {
                    diags.push(
                        self.file,
                        self.at(s),
                        format!("{ctx}: {what} `{other}` is not one of applied, failed"),
                    );
                    StatusMeaning::Failed
                }
            },
        };
        let on_409 = meaning(&raw.on_409, "on_409", diags);
        let on_422 = meaning(&raw.on_422, "on_422", diags);
        (diags.len() == before).then(|| ActionKind::Http {
            method,
            url,
            headers,
            json: raw.json.map(|j| j.value),
            on_409,
            on_422,
        })
    }

    fn publish(&self, ctx: &str, raw: RawPublish, diags: &mut Diagnostics) -> Option<ActionKind> {
        let before = diags.len();
        let url = self.expand(&raw.url, "a publish URL", diags);
        if !(url.is_empty() || url.starts_with("nats://") || url.starts_with("tls://")) {
            diags.push(
                self.file,
                self.at(&raw.url),
                format!("{ctx}: url must be a NATS server, such as nats://127.0.0.1:4222"),
            );
        }
        self.template(&raw.subject, &format!("{ctx}: subject"), diags);
        if let Some(j) = &raw.json {
            self.json(j, &format!("{ctx}: json"), diags);
        }
        (diags.len() == before).then(|| ActionKind::Publish {
            url,
            subject: raw.subject.value.clone(),
            json: raw.json.map(|j| j.value),
        })
    }
}

/// Whether the literal start of a URL (up to its first `{{`) holds the whole authority: a `/`,
/// `?` or `#` follows a non-empty host after the scheme.
fn authority_ends(prefix: &str) -> bool {
    let rest = prefix.split_once("://").map_or("", |(_, r)| r);
    rest.find(['/', '?', '#']).is_some_and(|end| end > 0)
}
