//! What the receivers share: the send timeout, an HTTP client that goes only where
//! `outbound.allow` lets it and follows no redirect, posting JSON, describing a failure
//! without the URL, and checking and printing URLs without their secrets.

use std::path::Path;

use super::SendError;
use crate::diag::{Diagnostics, Pos};
use crate::outbound::Allowed;

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

/// Whether `url` is an http:// or https:// URL with a host; an error at `at` if not.
pub fn check_http_url(
    url: &str,
    what: &str,
    at: Pos,
    path: &Path,
    diags: &mut Diagnostics,
) -> bool {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => true,
        _ => {
            diags.push(
                path,
                at,
                format!(
                    "{what}: `{}` is not an http:// or https:// URL",
                    redact_url(url)
                ),
            );
            false
        }
    }
}

/// Only where a URL goes (scheme, host, port): its user, password, path and query may hold
/// secrets (a Slack webhook's path is one), so they are never printed.
pub(super) fn url_origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}/…",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "<invalid URL>".into(),
    }
}

/// A URL with its password, if any, replaced by `***`.
pub(super) fn redact_url(url: &str) -> String {
    let mut secrets = crate::value::Secrets::default();
    secrets.add_url_password(url);
    secrets.redact(url).into_owned()
}
