//! What actions that send share: one HTTP client and NATS connections kept by URL, going only
//! where `outbound.allow` lets them, with one timeout.

use std::collections::HashMap;
use std::time::Duration;

use crate::outbound::Allowed;

/// The outbound clients of the repair worker; a change of `outbound.allow` builds new ones.
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
