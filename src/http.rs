//! HTTP: `/metrics` for Prometheus, `/healthz` and `/readyz` for the orchestrator, and the JSON
//! API under `/api/v1/` (rules, runs, violations). `router()` takes the state, so tests call it
//! without a port. Errors are JSON `{"error": …}` and never carry SQL or connection strings:
//! the details go to the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::daemon::Shared;
use crate::state::{ViolationFilter, run_json, violation_json};
use crate::value::format_timestamp;

const MAX_LIMIT: u32 = 1000;
const DEFAULT_LIMIT: u32 = 100;

#[derive(Clone)]
pub struct AppState {
    pub shared: Arc<Shared>,
    /// Set once the state store is migrated and the rules are loaded.
    pub ready: Arc<AtomicBool>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/runs", get(runs))
        .route("/api/v1/violations", get(violations))
        .route("/api/v1/reload", axum::routing::post(reload))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(state)
}

struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<crate::state::StateError> for ApiError {
    fn from(e: crate::state::StateError) -> ApiError {
        tracing::error!(error = %e, "State store request failed.");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the state store is unavailable",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let body = s
        .shared
        .current()
        .metrics
        .render(chrono::Utc::now().timestamp_micros());
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

async fn rules(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let rt = s.shared.current();
    let snapshots = rt.store.rule_snapshots().await?;
    let items: Vec<serde_json::Value> = rt
        .rules
        .iter()
        .map(|r| {
            let snap = snapshots.get(&r.name).cloned().unwrap_or_default();
            json!({
                "name": r.name,
                "description": r.description,
                "severity": r.severity.as_str(),
                "labels": r.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "schedule": r.schedule.to_string(),
                "datasets": r.datasets.iter().map(|d| json!({"name": d.name, "source": d.source, "many": d.many})).collect::<Vec<_>>(),
                "open_violations": snap.open,
                "last_success": snap.last_success_us.map(format_timestamp),
            })
        })
        .collect();
    Ok(Json(json!({ "items": items, "next": null })))
}

#[derive(Debug, Deserialize)]
struct ListParams {
    rule: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

impl ListParams {
    fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(0) => Err(ApiError::bad_request("limit must be at least 1")),
            Some(n) => Ok(n.min(MAX_LIMIT)),
        }
    }

    fn cursor(&self) -> Result<Option<i64>, ApiError> {
        self.cursor
            .as_deref()
            .map(|c| {
                c.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid cursor `{c}`")))
            })
            .transpose()
    }
}

async fn violations(
    State(s): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let state = match p.state.as_deref() {
        None | Some("open") => Some("open".to_string()),
        Some("resolved") => Some("resolved".to_string()),
        Some("all") => None,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "state must be open, resolved or all, not `{other}`"
            )));
        }
    };
    let limit = p.limit()?;
    let items = s
        .shared
        .current()
        .store
        .violations(&ViolationFilter {
            rule: p.rule.clone(),
            state,
            after_id: p.cursor()?,
            limit,
        })
        .await?;
    let next = (items.len() as u32 == limit)
        .then(|| items.last().map(|v| v.id.to_string()))
        .flatten();
    Ok(Json(
        json!({ "items": items.iter().map(violation_json).collect::<Vec<_>>(), "next": next }),
    ))
}

async fn runs(
    State(s): State<AppState>,
    Query(p): Query<ListParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if p.state.is_some() {
        return Err(ApiError::bad_request("runs take rule, limit and cursor"));
    }
    let limit = p.limit()?;
    let items = s
        .shared
        .current()
        .store
        .runs(p.rule.as_deref(), p.cursor()?, limit)
        .await?;
    let next = (items.len() as u32 == limit)
        .then(|| items.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(Json(
        json!({ "items": items.iter().map(run_json).collect::<Vec<_>>(), "next": next }),
    ))
}

/// Reloads config and rules, as SIGHUP does. 200 with the number of rules, or 422 with every
/// error of the refused set (the old set keeps running).
async fn reload(State(s): State<AppState>) -> Response {
    match s.shared.reload().await {
        Ok(rules) => Json(json!({ "reloaded": true, "rules": rules })).into_response(),
        Err(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "the new configuration is invalid; the previous one keeps running", "details": errors })),
        )
            .into_response(),
    }
}
