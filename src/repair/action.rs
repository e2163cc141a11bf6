//! What every repair action is behind: `Action::apply` acts once with an idempotency key
//! and says how it ended. One file per kind (`sql`, `http`, `publish`); `build` picks one.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::config::Allowed;
use crate::verdict::ActionSpec;

pub use crate::lifecycle::repair::Attempt;

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

/// The spec is not of the kind the rule's action is (the rule changed kind since planning).
pub(super) fn mismatch(spec: &ActionSpec, kind: &str) -> Attempt {
    Attempt::Failed(format!(
        "the repair was planned as a different kind of action than the rule's `{kind}` now ({spec:?}); plan it again"
    ))
}
