//! What every repair action is behind: `Action::apply` acts once with an idempotency key
//! and says how it ended. One file per kind (`sql`, `http`, `publish`); `build` picks one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

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

/// What actions share: the sources (for SQL), one HTTP client, NATS connections by URL.
pub struct Clients {
    pub http: reqwest::Client,
    pub nats: tokio::sync::Mutex<HashMap<String, async_nats::Client>>,
    /// The longest an HTTP request or a publish may take.
    pub timeout: Duration,
}

impl Clients {
    pub fn new(timeout: Duration) -> Clients {
        Clients {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(10)))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("invariantd/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("an HTTP client with rustls"),
            nats: tokio::sync::Mutex::new(HashMap::new()),
            timeout,
        }
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
