//! What the orchestrator and Prometheus poll: `/metrics`, `/healthz` (the process answers) and
//! `/readyz` (the state store is migrated and can be written, the rules are loaded, and every
//! service runs).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::context::Handle;

pub async fn metrics(State(handle): State<Arc<Handle>>) -> Response {
    let ctx = handle.current();
    // The audit chain's head, read at scrape time (one indexed row); a store that does not
    // answer at once leaves the last value.
    if let Ok(Ok((entries, hash))) = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        ctx.store.audit_head(),
    )
    .await
    {
        ctx.metrics.set_audit_head(entries, hash.as_deref());
    }
    let body = ctx.metrics.render(chrono::Utc::now().timestamp_micros());
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(handle): State<Arc<Handle>>) -> Response {
    if !handle.health.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response();
    }
    if let Some(away) = handle.health.store_away() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the state store does not answer: {away}\n"),
        )
            .into_response();
    }
    match handle.health.store_problem() {
        // Verdicts that cannot be recorded are lost: not ready, and say why.
        Some(problem) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the state store cannot be written: {problem}\n"),
        )
            .into_response(),
        None => {
            // Ready; but say what an operator should know.
            let mut body = String::from("ready\n");
            for (source, power) in handle.health.privileged() {
                body.push_str(&format!(
                    "warning: source `{source}` can do more than read: {power}\n"
                ));
            }
            (StatusCode::OK, body).into_response()
        }
    }
}
