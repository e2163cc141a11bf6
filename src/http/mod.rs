//! HTTP: `/metrics` for Prometheus, `/healthz` and `/readyz` for the orchestrator (`probes`),
//! the web page at `/` and `/rules/NAME` (`ui`), a rule's history (`history`, for the page's charts
//! and `/api/v1/rules/NAME/history`), and the JSON API under `/api/v1/` (rules, runs, violations — lists and single ones —,
//! reload, alerts and their silences in `silences`, repairs and their approvals in `repairs`), answering with the `views`. `router()` takes the daemon's `Handle`, so tests call it without a port. Errors are
//! JSON `{"error": …}` and never carry SQL or connection strings: the details go to the log.
//! Every request passes `guard` first (CSRF, body size, JSON errors); `serve` is the server
//! loop with its timeouts and connection cap.

mod auth;
mod guard;
pub mod history;
mod probes;
mod repairs;
pub mod serve;
mod silences;
mod ui;

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::api::views::{DiagnosticView, Page, RuleDetailView, RuleView, RunView, ViolationView};
use crate::auth::Role;
use crate::context::{Handle, ReloadError};
use crate::rules::select::Selection;
use crate::state::{ViolationFilter, ViolationState};

const MAX_LIMIT: u32 = 1000;
const DEFAULT_LIMIT: u32 = 100;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the probes (orchestrators send no tokens) and the page's shell, script and style.
    Open,
    /// A token of this role or above; for `Role::Read`, only with `auth.read: token`.
    Role(Role),
}

/// One endpoint of the API, as `endpoints()` lists them.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

/// Every endpoint with who may call it and its handler: the one place both the router and
/// `endpoints()` read, so that no endpoint can be served without a role, or listed without
/// being served.
fn table() -> Vec<(Endpoint, axum::routing::MethodRouter<Arc<Handle>>)> {
    use Access::Open;
    const READ: Access = Access::Role(Role::Read);
    const APPROVE: Access = Access::Role(Role::Approve);
    const ADMIN: Access = Access::Role(Role::Admin);
    let e = |method, path, access| Endpoint {
        method,
        path,
        access,
    };
    vec![
        (e("GET", "/healthz", Open), get(probes::healthz)),
        (e("GET", "/readyz", Open), get(probes::readyz)),
        // The page's shell, script and style: no data without the read token (`ui::page`).
        (e("GET", "/", Open), get(ui::page)),
        (e("GET", "/ui/app.js", Open), get(ui::script)),
        (e("GET", "/ui/app.css", Open), get(ui::style)),
        (e("GET", "/rules/{name}", Open), get(ui::rule_page)),
        (e("GET", "/ui/content", READ), get(ui::content)),
        (e("GET", "/ui/rules/{name}", READ), get(ui::rule_content)),
        (e("GET", "/ui/explain/{id}", READ), get(ui::explain)),
        (e("GET", "/metrics", READ), get(probes::metrics)),
        (e("GET", "/api/v1/rules", READ), get(rules)),
        (e("GET", "/api/v1/rules/{name}", READ), get(rule)),
        (
            e("GET", "/api/v1/rules/{name}/history", READ),
            get(rule_history),
        ),
        (e("GET", "/api/v1/runs", READ), get(runs)),
        (e("GET", "/api/v1/violations", READ), get(violations)),
        (e("GET", "/api/v1/violations/{id}", READ), get(violation)),
        (
            e("GET", "/api/v1/violations/{id}/explain", READ),
            get(explain),
        ),
        (e("GET", "/api/v1/alerts", READ), get(silences::alerts)),
        (e("GET", "/api/v1/silences", READ), get(silences::list)),
        (e("GET", "/api/v1/repairs", READ), get(repairs::list)),
        (e("GET", "/api/v1/repairs/{id}", READ), get(repairs::show)),
        (e("GET", "/api/v1/audit/head", READ), get(audit_head)),
        (e("GET", "/api/v1/cluster", READ), get(cluster)),
        (e("POST", "/api/v1/silences", APPROVE), post(silences::add)),
        (
            e("DELETE", "/api/v1/silences/{id}", APPROVE),
            delete(silences::expire),
        ),
        (
            e("POST", "/api/v1/repairs/{id}/approve", APPROVE),
            post(repairs::approve),
        ),
        (
            e("POST", "/api/v1/repairs/{id}/reject", APPROVE),
            post(repairs::reject),
        ),
        (
            e("POST", "/api/v1/rules/{name}/repairs/approve", APPROVE),
            post(repairs::approve_rule),
        ),
        (
            e("POST", "/api/v1/rules/{name}/repairs/enable", ADMIN),
            post(repairs::enable),
        ),
        (e("POST", "/api/v1/reload", ADMIN), post(reload)),
    ]
}

/// Every endpoint the daemon serves, with who may call it.
pub fn endpoints() -> Vec<Endpoint> {
    table().into_iter().map(|(e, _)| e).collect()
}

/// The endpoints `http.probes_listen` serves: what orchestrators and Prometheus ask.
pub const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

pub fn router(handle: Arc<Handle>) -> Router {
    build(handle, |_| true)
}

/// The probes and `/metrics` alone, with the same access, for a listener of their own.
pub fn probes_router(handle: Arc<Handle>) -> Router {
    build(handle, |e| PROBES.contains(&e.path))
}

fn build(handle: Arc<Handle>, keep: impl Fn(&Endpoint) -> bool) -> Router {
    let mut router = Router::new();
    for (endpoint, route) in table().into_iter().filter(|(e, _)| keep(e)) {
        // What reads or writes the state store answers 503 at once while it is away.
        // The body is read only once the token has been accepted (`guard::body`).
        let route = route.route_layer(axum::middleware::from_fn(guard::body));
        let uses_store = endpoint.path.starts_with("/api/")
            || (endpoint.path.starts_with("/ui/") && endpoint.access != Access::Open);
        let route = if uses_store {
            route.route_layer(from_fn_with_state(handle.clone(), store_answers))
        } else {
            route
        };
        let route = match endpoint.access {
            Access::Open => route,
            Access::Role(role) => {
                route.route_layer(from_fn_with_state((handle.clone(), role), auth::require))
            }
        };
        router = router.route(endpoint.path, route);
    }
    router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::middleware::from_fn(guard::guard))
        .with_state(handle)
}

/// 503 at once while the state store does not answer (`daemon::store` watches it).
async fn store_answers(
    State(handle): State<Arc<Handle>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if handle.health.store_away().is_some() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the state store is unavailable",
        )
        .into_response();
    }
    next.run(request).await
}

/// The audit chain's head, to keep elsewhere and give back to `audit verify --head`.
async fn audit_head(
    State(handle): State<Arc<Handle>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (entries, hash) = handle.current().store.audit_head().await?;
    Ok(Json(json!({ "entries": entries, "hash": hash })))
}

/// The replicas sharing the state store, their leases and what each runs.
async fn cluster(
    State(handle): State<Arc<Handle>>,
) -> Result<Json<crate::api::cluster::ClusterView>, ApiError> {
    let ctx = handle.current();
    let rows = ctx.store.leases().await?;
    let rules: Vec<String> = ctx.rules.iter().map(|r| r.name.clone()).collect();
    Ok(Json(crate::api::cluster::cluster_view(
        &rows,
        Some(&handle.cluster.replica),
        &rules,
    )))
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

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        // "Failed to deserialize query string: unknown field `x`, expected …": keep the reason.
        let text = e.body_text();
        let reason = text.split_once(": ").map_or(text.as_str(), |(_, r)| r);
        ApiError::bad_request(format!("invalid query parameters: {reason}"))
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

/// The parameters of the rule list: a selection (README: Selecting rules).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectParams {
    select: Option<String>,
    exclude: Option<String>,
}

/// The rules a request's `select` and `exclude` select, `None` when it gives neither;
/// `path:` terms are relative to the configuration file's directory. A term that selects
/// nothing is a 400 naming it.
fn selected<'c>(
    ctx: &'c crate::context::Context,
    select: Option<&String>,
    exclude: Option<&String>,
) -> Result<Option<Vec<&'c crate::rules::Rule>>, ApiError> {
    let list = |v: Option<&String>| v.into_iter().cloned().collect::<Vec<_>>();
    let selection = Selection::parse(&list(select), &list(exclude))
        .map_err(|e| ApiError::bad_request(format!("select: {e}")))?;
    selection
        .select(&ctx.rules, ctx.config.path.parent())
        .map_err(|e| ApiError::bad_request(format!("select: {e}")))
}

async fn rules(
    State(handle): State<Arc<Handle>>,
    query: Result<Query<SelectParams>, QueryRejection>,
) -> Result<Json<Page<RuleView>>, ApiError> {
    let Query(p) = query?;
    let ctx = handle.current();
    let rules: Vec<&crate::rules::Rule> =
        match selected(&ctx, p.select.as_ref(), p.exclude.as_ref())? {
            Some(rules) => rules,
            None => ctx.rules.iter().collect(),
        };
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    let snapshots = ctx.store.rule_snapshots(&names).await?;
    let none = Default::default();
    let mut items = Vec::with_capacity(rules.len());
    for r in rules {
        let judged = crate::alert::status::judged(&ctx.store, r).await?;
        items.push(RuleView::new(
            r,
            snapshots.get(&r.name).unwrap_or(&none),
            judged,
        ));
    }
    Ok(Json(Page { items, next: None }))
}

/// The parameters of the lists; any other is refused rather than silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    rule: Option<String>,
    key: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
    select: Option<String>,
    exclude: Option<String>,
}

impl ListParams {
    fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n @ 1..=MAX_LIMIT) => Ok(n),
            Some(n) => Err(ApiError::bad_request(format!(
                "limit must be between 1 and {MAX_LIMIT}, not {n}"
            ))),
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

/// The cursor of the next page: the last item's id when the page is full.
fn next_cursor(len: usize, limit: u32, last: Option<i64>) -> Option<String> {
    (len as u32 == limit)
        .then(|| last.map(|id| id.to_string()))
        .flatten()
}

async fn violations(
    State(handle): State<Arc<Handle>>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page<ViolationView>>, ApiError> {
    let Query(p) = query?;
    let state = match p.state.as_deref() {
        None => Some(ViolationState::Open),
        Some("all") => None,
        Some(other) => Some(ViolationState::parse(other).ok_or_else(|| {
            ApiError::bad_request(format!(
                "state must be open, resolved or all, not `{other}`"
            ))
        })?),
    };
    let limit = p.limit()?;
    let ctx = handle.current();
    let rules = selected(&ctx, p.select.as_ref(), p.exclude.as_ref())?
        .map(|rules| rules.iter().map(|r| r.name.clone()).collect());
    let items = ctx
        .store
        .violations(&ViolationFilter {
            rules,
            rule: p.rule.clone(),
            key: p.key.clone(),
            state,
            after_id: p.cursor()?,
            limit,
        })
        .await?;
    Ok(Json(Page {
        next: next_cursor(items.len(), limit, items.last().map(|v| v.id)),
        items: items.iter().map(ViolationView::from).collect(),
    }))
}

async fn runs(
    State(handle): State<Arc<Handle>>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page<RunView>>, ApiError> {
    let Query(p) = query?;
    if p.state.is_some() || p.key.is_some() || p.select.is_some() || p.exclude.is_some() {
        return Err(ApiError::bad_request("runs take rule, limit and cursor"));
    }
    let limit = p.limit()?;
    let items = handle
        .current()
        .store
        .runs(p.rule.as_deref(), p.cursor()?, limit)
        .await?;
    Ok(Json(Page {
        next: next_cursor(items.len(), limit, items.last().map(|r| r.id)),
        items: items.iter().map(RunView::from).collect(),
    }))
}

async fn violation(
    State(handle): State<Arc<Handle>>,
    Path(id): Path<String>,
) -> Result<Json<ViolationView>, ApiError> {
    let missing = || ApiError::not_found(format!("no violation with id `{id}`"));
    let number: i64 = id.parse().map_err(|_| missing())?;
    let v = handle.current().store.violation(number).await?;
    v.as_ref()
        .map(|v| Json(ViolationView::from(v)))
        .ok_or_else(missing)
}

/// The evidence for a violation's key, judged now, with its history and repairs.
async fn explain(
    State(handle): State<Arc<Handle>>,
    caller: Option<axum::Extension<auth::Caller>>,
    Path(id): Path<String>,
) -> Result<Json<crate::repair::Evidence>, ApiError> {
    let missing = || ApiError::not_found(format!("no violation with id `{id}`"));
    let number: i64 = id.parse().map_err(|_| missing())?;
    let ctx = handle.current();
    let v = ctx.store.violation(number).await?.ok_or_else(missing)?;
    let rule = ctx
        .rule(&v.rule)
        .ok_or_else(|| ApiError::not_found(format!("rule `{}` is no longer configured", v.rule)))?;
    let mut evidence = crate::repair::evidence(rule, &ctx.sources, &ctx.store, &v.key).await?;
    if caller.is_none() {
        for r in &mut evidence.repairs {
            if let Some(t) = &mut r.result {
                *t = crate::actions::public_result(t).into_owned();
            }
        }
    }
    Ok(Json(evidence))
}

/// How many open violations `GET /api/v1/rules/{name}` lists.
const RULE_VIOLATIONS: u32 = 100;

/// `?window=24h|7d` (24h when absent).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    window: Option<String>,
}

/// A rule's history: its open violations and money at risk at each step of the window.
#[derive(Debug, serde::Serialize)]
struct HistoryView {
    rule: String,
    window: &'static str,
    /// Seconds between two points.
    step_seconds: i64,
    points: Vec<history::Point>,
}

async fn rule_history(
    State(handle): State<Arc<Handle>>,
    Path(name): Path<String>,
    query: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<HistoryView>, ApiError> {
    let Query(params) = query?;
    let window = match params.window.as_deref() {
        None => history::Window::Day,
        Some(w) => history::Window::parse(w)
            .ok_or_else(|| ApiError::bad_request(format!("window `{w}` is not one of 24h, 7d")))?,
    };
    let ctx = handle.current();
    ctx.rule(&name)
        .ok_or_else(|| ApiError::not_found(format!("no rule named `{name}`")))?;
    let now_us = chrono::Utc::now().timestamp_micros();
    let points = history::history(&ctx.store, &name, window, now_us).await?;
    Ok(Json(HistoryView {
        rule: name,
        window: window.as_str(),
        step_seconds: window.bounds().1 / 1_000_000,
        points,
    }))
}

async fn rule(
    State(handle): State<Arc<Handle>>,
    Path(name): Path<String>,
) -> Result<Json<RuleDetailView>, ApiError> {
    let ctx = handle.current();
    let rule = ctx
        .rule(&name)
        .ok_or_else(|| ApiError::not_found(format!("no rule named `{name}`")))?;
    let snapshot = ctx.store.rule_snapshot(&name).await?;
    let last_run = ctx.store.runs(Some(&name), None, 1).await?;
    let open = ctx
        .store
        .violations(&ViolationFilter {
            rules: None,
            rule: Some(name.clone()),
            state: Some(ViolationState::Open),
            limit: RULE_VIOLATIONS,
            ..Default::default()
        })
        .await?;
    let judged = crate::alert::status::judged(&ctx.store, rule).await?;
    Ok(Json(RuleDetailView {
        rule: RuleView::new(rule, &snapshot, judged),
        assert: rule.assertion.clone(),
        key: rule.key.clone(),
        last_run: last_run.first().map(RunView::from),
        violations: Page {
            next: next_cursor(open.len(), RULE_VIOLATIONS, open.last().map(|v| v.id)),
            items: open.iter().map(ViolationView::from).collect(),
        },
    }))
}

/// Reloads config and rules, as SIGHUP does. 200 with the number of rules, or 422 with every
/// error of the refused set (the old set keeps running).
async fn reload(
    State(handle): State<Arc<Handle>>,
    axum::Extension(caller): axum::Extension<auth::Caller>,
) -> Response {
    tracing::info!(by = %caller.0, "Reload requested through the API.");
    // The reload is audited where it is done, once, with its result.
    match handle.reload(&caller.0).await {
        Ok(r) => Json(json!({ "reloaded": true, "rules": r.rules })).into_response(),
        Err(ReloadError::Invalid(diags)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": "the new configuration is invalid; the previous one keeps running",
                "diagnostics": diags.0.iter().map(DiagnosticView::from).collect::<Vec<_>>(),
            })),
        )
            .into_response(),
        Err(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}
