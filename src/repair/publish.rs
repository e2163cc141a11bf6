//! `publish` actions: an event on a NATS subject, with the idempotency key as its message id
//! (`Nats-Msg-Id`, which JetStream streams deduplicate on). The publish is flushed: the
//! server has the message when the attempt says applied. Connections are kept per URL; the
//! server's addresses are checked against `outbound.allow` before each new connection, and
//! servers it announces are ignored.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::action::{Action, Attempt, Clients, mismatch};
use crate::verdict::ActionSpec;

pub struct Publish<'a> {
    pub clients: &'a Arc<Clients>,
    pub url: &'a str,
}

/// Why no connection to NATS is at hand.
enum Unavailable {
    /// `outbound.allow` does not let the server's addresses through: trying again won't help.
    Refused(String),
    /// The server is down or does not answer.
    Down(String),
}

impl Publish<'_> {
    /// The connection to the URL's server: the one kept, or a new one once the server's
    /// addresses pass `outbound.allow` (a change of the list builds new `Clients`, so kept
    /// connections were checked against the list in force).
    async fn client(&self) -> Result<async_nats::Client, Unavailable> {
        let mut clients = self.clients.nats.lock().await;
        if let Some(c) = clients.get(self.url)
            && c.connection_state() == async_nats::connection::State::Connected
        {
            return Ok(c.clone());
        }
        let server: async_nats::ServerAddr = self
            .url
            .parse()
            .map_err(|e| Unavailable::Refused(format!("NATS URL: {e}")))?;
        crate::outbound::check_server(server.host(), &self.clients.allow)
            .await
            .map_err(|r| Unavailable::Refused(format!("NATS {}: {r}", server.host())))?;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(self.clients.timeout)
            .ignore_discovered_servers()
            .connect(self.url)
            .await
            .map_err(|e| Unavailable::Down(format!("cannot connect to NATS: {e}")))?;
        clients.insert(self.url.to_string(), client.clone());
        Ok(client)
    }
}

impl Action for Publish<'_> {
    fn apply<'a>(&'a self, spec: &'a ActionSpec, key: &'a str) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let ActionSpec::Publish { subject, payload } = spec else {
                return mismatch(spec, "publish");
            };
            let client = match self.client().await {
                Ok(c) => c,
                Err(Unavailable::Refused(why)) => return Attempt::Failed(why),
                Err(Unavailable::Down(why)) => return Attempt::Retry(why),
            };
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", key);
            headers.insert("Content-Type", "application/json");
            let body = payload
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default()
                .into_bytes();
            if let Err(e) = client
                .publish_with_headers(subject.clone(), headers, body.into())
                .await
            {
                return Attempt::Retry(format!("cannot publish on `{subject}`: {e}"));
            }
            match tokio::time::timeout(self.clients.timeout, client.flush()).await {
                Ok(Ok(())) => Attempt::Applied(format!("published on `{subject}`")),
                Ok(Err(e)) => {
                    Attempt::Ambiguous(format!("published on `{subject}`, not confirmed: {e}"))
                }
                Err(_) => {
                    Attempt::Ambiguous(format!("published on `{subject}`, not confirmed in time"))
                }
            }
        })
    }
}

/// The event as an approver reads it.
pub(super) fn describe(subject: &str, payload: &Option<serde_json::Value>) -> String {
    format!("publish on `{subject}`\n{}", super::http::pretty(payload))
        .trim_end()
        .to_string()
}
