//! What every repair action is behind: `Action::apply` acts once with an idempotency key
//! and says how it ended. One file per kind (`sql`, `http`, `publish`); `build` picks one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::config::Allowed;
use crate::rules::ActionKind;
use crate::sources::Sources;
use crate::verdict::ActionSpec;

/// How one attempt at an action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Done; what the target answered.
    Applied(String),
    /// Not done, and trying again will not help (the target refused it).
    Failed(String),
    /// Not done; trying again later may work (the target is down, busy, or answered 5xx).
    Retry(String),
    /// Sent, and no answer came: it may have been done.
    Ambiguous(String),
}

/// What actions share: the sources (for SQL), one HTTP client, NATS connections by URL, all
/// going only where `outbound.allow` lets them.
pub struct Clients {
    pub http: crate::outbound::Client,
    pub nats: tokio::sync::Mutex<HashMap<String, async_nats::Client>>,
    /// The longest an HTTP request or a publish may take.
    pub timeout: Duration,
    /// `outbound.allow`, as the clients were built with it.
    pub allow: Vec<Allowed>,
}

impl Clients {
    pub fn new(timeout: Duration, allow: &[Allowed]) -> Result<Clients, String> {
        Ok(Clients {
            http: crate::outbound::Client::new(
                allow,
                timeout,
                timeout.min(Duration::from_secs(10)),
            )?,
            nats: tokio::sync::Mutex::new(HashMap::new()),
            timeout,
            allow: allow.to_vec(),
        })
    }
}

/// One kind of action, configured from the rule.
pub trait Action: Send + Sync {
    /// Acts once for one repair, with the values filled in for its key.
    fn apply<'a>(
        &'a self,
        spec: &'a ActionSpec,
        idempotency_key: &'a str,
    ) -> BoxFuture<'a, Attempt>;
}

/// The action a rule's configuration describes.
pub fn build<'a>(
    kind: &'a ActionKind,
    sources: &'a Sources,
    clients: &'a Arc<Clients>,
) -> Box<dyn Action + 'a> {
    match kind {
        ActionKind::Sql {
            source,
            statement,
            expect_rows,
            ..
        } => Box::new(super::sql::Sql {
            source: sources.get(source).cloned(),
            source_name: source,
            statement,
            expect_rows: *expect_rows,
        }),
        ActionKind::Http {
            method,
            headers,
            on_409,
            on_422,
            ..
        } => Box::new(super::http::Http {
            client: &clients.http,
            method,
            headers,
            on_409: *on_409,
            on_422: *on_422,
        }),
        ActionKind::Publish { url, .. } => Box::new(super::publish::Publish { clients, url }),
    }
}

/// The spec is not of the kind the rule's action is (the rule changed kind since planning).
pub(super) fn mismatch(spec: &ActionSpec, kind: &str) -> Attempt {
    Attempt::Failed(format!(
        "the repair was planned as a different kind of action than the rule's `{kind}` now ({spec:?}); plan it again"
    ))
}

/// What an action will do, as an approver reads it: the statement and its parameters, the
/// request, or the event — the rule's fixed parts with this repair's values.
pub fn describe(kind: &ActionKind, spec: &ActionSpec) -> String {
    let json = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .map(|v| serde_json::to_string_pretty(v).unwrap_or_default())
            .unwrap_or_default()
    };
    match (kind, spec) {
        (
            ActionKind::Sql {
                source, statement, ..
            },
            ActionSpec::Sql { params },
        ) => {
            let values: Vec<String> = params
                .iter()
                .map(|p| match p {
                    crate::verdict::Param::Null => "NULL".to_string(),
                    crate::verdict::Param::Bool(b) => b.to_string(),
                    crate::verdict::Param::Int(i) => i.to_string(),
                    crate::verdict::Param::Double(d) => d.to_string(),
                    crate::verdict::Param::Decimal(d) => d.clone(),
                    crate::verdict::Param::Text(t) => format!("'{t}'"),
                    crate::verdict::Param::Timestamp(t) => crate::value::format_timestamp(*t),
                    crate::verdict::Param::Bytes(b) => crate::value::hex(b),
                })
                .collect();
            format!(
                "on source `{source}`, in one transaction:\n{statement}\nwith parameters: {}",
                values.join(", ")
            )
        }
        (ActionKind::Http { method, .. }, ActionSpec::Http { url, body }) => {
            format!("{method} {url}\n{}", json(body))
                .trim_end()
                .to_string()
        }
        (ActionKind::Publish { .. }, ActionSpec::Publish { subject, payload }) => {
            format!("publish on `{subject}`\n{}", json(payload))
                .trim_end()
                .to_string()
        }
        (_, ActionSpec::Invalid { error }) => format!("cannot be filled in: {error}"),
        (kind, spec) => format!(
            "planned as {spec:?}, but the rule's action is now a {} action",
            kind.kind_name()
        ),
    }
}
