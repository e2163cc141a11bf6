//! What every request goes through first: changes from a foreign web page are refused (CSRF),
//! and every error answer — including the router's own (404, 405) — is the documented JSON
//! `{"error": …}`. Request bodies are read by `body`, after the token check, bounded in size
//! and by the request's deadline.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::serve::{REQUEST_TIMEOUT, Receiving};

/// The largest request body taken: no endpoint needs more.
pub const MAX_BODY: usize = 64 * 1024;

pub async fn guard(request: Request, next: Next) -> Response {
    if !is_safe(request.method())
        && let Some(reason) = foreign(&request)
    {
        tracing::warn!(path = %request.uri().path(), reason, "Refused a cross-site request.");
        return ApiError::new(StatusCode::FORBIDDEN, reason).into_response();
    }
    json_errors(next.run(request).await)
}

/// Reads a change's body, bounded in size and by the request's deadline (headers and body
/// together: `super::serve::REQUEST_TIMEOUT` from when the connection started waiting for it).
/// Layered inside the token check, so that a client without a valid token is answered before a
/// byte of its body is read, and cannot hold a connection by sending it slowly.
pub async fn body(request: Request, next: Next) -> Response {
    if is_safe(request.method()) {
        return next.run(request).await;
    }
    let receiving = request.extensions().get::<Receiving>().cloned();
    let limit = receiving
        .as_ref()
        .map_or(REQUEST_TIMEOUT, Receiving::timeout);
    let deadline = receiving
        .as_ref()
        .map_or_else(|| tokio::time::Instant::now() + limit, Receiving::deadline);
    match tokio::time::timeout_at(deadline, bounded(request)).await {
        Ok(Ok(request)) => {
            if let Some(r) = &receiving {
                r.received();
            }
            next.run(request).await
        }
        Ok(Err(response)) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request did not arrive whole within {} of its connection waiting for it",
                humantime::format_duration(limit)
            ),
        )
        .into_response(),
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Why a request that changes something looks sent by another site's page: a browser says so
/// (`Sec-Fetch-Site: cross-site`), or its `Origin` is not the host it was sent to. Clients that
/// are not browsers send neither header and are judged by their token alone.
fn foreign(request: &Request) -> Option<&'static str> {
    let headers = request.headers();
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return Some("cross-site requests cannot change anything");
    }
    let origin = headers.get(header::ORIGIN)?.to_str().ok();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.and_then(|o| o.split_once("://")).map(|(_, h)| h);
    match (origin_host, host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => None,
        _ => Some("requests from another origin cannot change anything"),
    }
}

/// The request with its body read, when it is at most `MAX_BODY`; a 413 answer otherwise.
async fn bounded(request: Request) -> Result<Request, Response> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {} KiB", MAX_BODY / 1024),
        )
        .into_response()
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => Ok(Request::from_parts(parts, Body::from(bytes))),
        Err(e) if e.to_string().contains("length limit") => Err(too_large()),
        Err(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the request body could not be read",
        )
        .into_response()),
    }
}

/// An error answer without a body (the router's 405, say) as `{"error": …}`, keeping its
/// status and headers such as `Allow`.
fn json_errors(response: Response) -> Response {
    let status = response.status();
    // Answers with a body of their own stay as they are: JSON errors, and the probes' text.
    let has_body = response.headers().contains_key(header::CONTENT_TYPE);
    if !(status.is_client_error() || status.is_server_error()) || has_body {
        return response;
    }
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => "this endpoint does not take that method".to_string(),
        other => other
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_lowercase(),
    };
    let (parts, _) = response.into_parts();
    let mut json = ApiError::new(status, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().insert(name.clone(), value.clone());
        }
    }
    json
}
