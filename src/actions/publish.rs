//! `publish` actions: an event on a NATS subject, with the idempotency key as its message id
//! (`Nats-Msg-Id`, which JetStream streams deduplicate on). The publish is flushed: the
//! server has the message when the attempt says applied. Connections are kept per URL; the
//! server's addresses are checked against `outbound.allow` before each new connection, and
//! servers it announces are ignored. A value in the subject is one token.

use std::any::Any;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::template::{self, Body, pretty, render_body, subject_token};
use super::{ActionKind, Checker, Clients, Configure, Fill, Targets};
use crate::diag::Diagnostics;
use crate::expr::{Env, Scope, Template};
use crate::lifecycle::repair::Attempt;
use crate::verdict::ActionSpec;
use crate::yaml::Shape;

#[derive(Debug, Deserialize)]
pub(crate) struct RawPublish {
    url: Spanned<String>,
    subject: Spanned<String>,
    json: Option<Spanned<serde_json::Value>>,
}

/// A checked `publish` action.
#[derive(Debug)]
pub struct Publish {
    pub url: String,
    pub subject: String,
    pub json: Option<serde_json::Value>,
}

/// What a `publish` action sends for one key.
#[derive(Serialize, Deserialize)]
struct Values {
    subject: String,
    payload: Option<serde_json::Value>,
}

impl Configure for RawPublish {
    fn shape() -> Shape {
        Shape::of::<RawPublish>(vec![("json", Shape::Any)])
    }

    fn check(
        self,
        c: &Checker<'_>,
        ctx: &str,
        diags: &mut Diagnostics,
    ) -> Option<Arc<dyn ActionKind>> {
        let before = diags.len();
        let url = c.expand(&self.url, "a publish URL", diags);
        if !(url.is_empty() || url.starts_with("nats://") || url.starts_with("tls://")) {
            diags.push(
                c.file,
                c.at(&self.url),
                format!("{ctx}: url must be a NATS server, such as nats://127.0.0.1:4222"),
            );
        }
        c.template(&self.subject, &format!("{ctx}: subject"), diags);
        if let Some(j) = &self.json {
            c.json(j, &format!("{ctx}: json"), diags);
        }
        (diags.len() == before).then(|| {
            Arc::new(Publish {
                url,
                subject: self.subject.value.clone(),
                json: self.json.map(|j| j.value),
            }) as Arc<dyn ActionKind>
        })
    }
}

/// The subject and payload compiled for a run.
#[derive(Debug)]
struct Event {
    subject: Template,
    payload: Option<Body>,
}

impl Fill for Event {
    fn fill(&self, env: &Env<'_>) -> Result<ActionSpec, String> {
        let subject = self
            .subject
            .render_strict(env, subject_token)
            .map_err(|e| format!("subject: {e}"))?;
        let payload = self
            .payload
            .as_ref()
            .map(|b| render_body(b, env))
            .transpose()?;
        super::spec("publish", &Values { subject, payload })
    }
}

/// Why no connection to NATS is at hand.
enum Unavailable {
    /// `outbound.allow` does not let the server's addresses through: trying again won't help.
    Refused(String),
    /// The server is down or does not answer.
    Down(String),
}

/// The connection to the URL's server: the one kept, or a new one once the server's addresses
/// pass `outbound.allow` (a change of the list builds new `Clients`, so kept connections were
/// checked against the list in force).
async fn connection(clients: &Clients, url: &str) -> Result<async_nats::Client, Unavailable> {
    let mut kept = clients.nats.lock().await;
    if let Some(c) = kept.get(url)
        && c.connection_state() == async_nats::connection::State::Connected
    {
        return Ok(c.clone());
    }
    let server: async_nats::ServerAddr = url
        .parse()
        .map_err(|e| Unavailable::Refused(format!("NATS URL: {e}")))?;
    crate::outbound::check_server(server.host(), &clients.allow)
        .await
        .map_err(|r| Unavailable::Refused(format!("NATS {}: {r}", server.host())))?;
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(clients.timeout)
        .ignore_discovered_servers()
        .connect(url)
        .await
        .map_err(|e| Unavailable::Down(format!("cannot connect to NATS: {e}")))?;
    kept.insert(url.to_string(), client.clone());
    Ok(client)
}

impl ActionKind for Publish {
    fn kind(&self) -> &'static str {
        "publish"
    }

    fn target_url(&self) -> Option<&str> {
        Some(&self.url)
    }

    fn compile(&self, scope: &Scope<'_>, what: &str) -> Result<Box<dyn Fill>, Vec<String>> {
        let mut errors = Vec::new();
        let subject = template::template(
            &self.subject,
            scope,
            &format!("{what}: subject"),
            &mut errors,
        );
        let payload = self
            .json
            .as_ref()
            .map(|j| template::body(j, scope, &format!("{what}: json"), &mut errors));
        match subject {
            Some(subject) if errors.is_empty() => Ok(Box::new(Event { subject, payload })),
            _ => Err(errors),
        }
    }

    fn describe(&self, spec: &ActionSpec) -> Result<String, String> {
        let Values { subject, payload } = super::values(spec)?;
        Ok(format!("publish on `{subject}`\n{}", pretty(&payload))
            .trim_end()
            .to_string())
    }

    fn apply<'a>(
        &'a self,
        to: &'a Targets<'a>,
        spec: &'a ActionSpec,
        key: &'a str,
    ) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            let Values { subject, payload } = match super::values(spec) {
                Ok(v) => v,
                Err(e) => return Attempt::Failed(e),
            };
            let client = match connection(to.clients, &self.url).await {
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
            match tokio::time::timeout(to.clients.timeout, client.flush()).await {
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

    fn as_any(&self) -> &dyn Any {
        self
    }
}
