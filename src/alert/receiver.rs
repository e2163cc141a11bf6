//! The `Receiver` trait every kind of receiver implements — send one notification, say
//! whether a failure is worth retrying — and what the HTTP receivers share. Building a
//! receiver from its config is `registry.rs`.

use futures_util::future::BoxFuture;

use crate::notification::Notification;
use crate::outbound::Allowed;

/// Why a notification did not get through.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub message: String,
}

impl SendError {
    pub fn new(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
        }
    }
}

/// Somewhere notifications go.
pub trait Receiver: Send + Sync {
    /// Delivers one notification. Sending the same notification (same `id`) twice must be
    /// harmless for the receiver: every format carries the id to deduplicate on.
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SendError>>;
}

/// How long one delivery attempt may take, connection included.
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// An HTTP client with invariantd's user agent and the send timeout, going only where `allow`
/// lets it. It follows no redirect: a receiver's answer must not send alerts to another
/// address (a 307 to a service on loopback); a 3xx is a failed delivery, retried as any other.
pub fn http_client(allow: &[Allowed]) -> Result<crate::outbound::Client, String> {
    crate::outbound::Client::new(allow, SEND_TIMEOUT, SEND_TIMEOUT)
}

/// Posts a JSON body; any answer but 2xx is a failure, with the start of the answer's body.
pub async fn post_json(
    client: &crate::outbound::Client,
    url: &str,
    body: &serde_json::Value,
    idempotency_key: Option<&str>,
) -> Result<(), SendError> {
    let mut request = client
        .request(reqwest::Method::POST, url)
        .map_err(|r| SendError::new(r.0))?
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string());
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request
        .send()
        .await
        .map_err(|e| SendError::new(describe_reqwest(&e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    Err(SendError::new(format!(
        "answered {status}: {}",
        crate::value::truncated(text.trim(), 200)
    )))
}

/// A reqwest error with its causes, without the URL (which may hold a token).
fn describe_reqwest(e: &reqwest::Error) -> String {
    if let Some(refused) = crate::outbound::refused_in(e) {
        return refused;
    }
    let what = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    match causes.last() {
        Some(c) => format!("{what}: {c}"),
        None => what,
    }
}
