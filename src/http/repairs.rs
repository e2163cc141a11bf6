//! Repairs in the API: `GET /api/v1/repairs` (filter by state, rule, key), `GET
//! /api/v1/repairs/{id}`, `POST /api/v1/repairs/{id}/approve` (optionally picking another of
//! the rule's actions, with a comment) and `/reject`, `POST /api/v1/rules/{name}/repairs/approve`
//! (every repair of the rule waiting for a person), and `POST
//! /api/v1/rules/{name}/repairs/enable` (let the rule as it is now repair by itself). Every
//! decision is the token's name's, recorded in the audit log with the change.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;

use super::auth::Caller;
use super::{ApiError, ListParams, next_cursor};
use crate::api::repairs::{BulkView, DecisionBody, EnableAnswer, Refused, RepairView};
use crate::api::views::Page;
use crate::context::Handle;
use crate::state::{
    Decision, EnableRequest, Enabling, Refusal, RepairFilter, RepairRecord, RepairState,
};

/// The repair as `caller` may see it: without a token, the result keeps the target's status
/// but not the start of its answer.
pub fn view_for(r: &RepairRecord, caller: Option<&Caller>) -> RepairView {
    let mut view = RepairView::from(r);
    if caller.is_none() {
        view.result = view
            .result
            .map(|t| crate::actions::public_result(&t).into_owned());
    }
    view
}

pub async fn list(
    State(handle): State<Arc<Handle>>,
    caller: Option<axum::Extension<Caller>>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page<RepairView>>, ApiError> {
    let caller = caller.map(|axum::Extension(c)| c);
    let Query(p) = query?;
    let state = match p.state.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(RepairState::parse(s).ok_or_else(|| {
            let all: Vec<&str> = RepairState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(format!(
                "state must be one of {} or all, not `{s}`",
                all.join(", ")
            ))
        })?),
    };
    let limit = p.limit()?;
    let ctx = handle.current();
    let rules = super::selected(&ctx, p.select.as_ref(), p.exclude.as_ref())?
        .map(|rules| rules.iter().map(|r| r.name.clone()).collect());
    let items = ctx
        .store
        .repairs(&RepairFilter {
            rules,
            state,
            rule: p.rule.clone(),
            key: p.key.clone(),
            after_id: p.cursor()?,
            limit,
            newest_first: false,
        })
        .await?;
    Ok(Json(Page {
        next: next_cursor(items.len(), limit, items.last().map(|r| r.id)),
        items: items.iter().map(|r| view_for(r, caller.as_ref())).collect(),
    }))
}

fn id_of(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("no repair with id `{id}`")))
}

pub async fn show(
    State(handle): State<Arc<Handle>>,
    caller: Option<axum::Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Json<RepairView>, ApiError> {
    let number = id_of(&id)?;
    let caller = caller.map(|axum::Extension(c)| c);
    handle
        .current()
        .store
        .repair(number)
        .await?
        .map(|r| Json(view_for(&r, caller.as_ref())))
        .ok_or_else(|| ApiError::not_found(format!("no repair with id `{id}`")))
}

/// The body, which may be empty.
fn decision_body(body: &Bytes) -> Result<DecisionBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DecisionBody::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn refusal(r: Refusal, id: i64) -> ApiError {
    let status = match &r {
        Refusal::NotFound => StatusCode::NOT_FOUND,
        Refusal::NotWaiting(_) => StatusCode::CONFLICT,
        Refusal::SelfApproval => StatusCode::FORBIDDEN,
        Refusal::UnknownAction(_) => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, format!("repair {id}: {r}"))
}

/// Decides one repair: shared by the single and bulk endpoints.
async fn decide_one(
    handle: &Handle,
    id: i64,
    by: &str,
    approve: bool,
    body: &DecisionBody,
) -> Result<Result<RepairRecord, Refusal>, ApiError> {
    let ctx = handle.current();
    let action = match (&body.action, approve) {
        (Some(_), false) => return Err(ApiError::bad_request("a rejection takes no action")),
        (action, _) => action.clone(),
    };
    let decision = Decision {
        by: by.to_string(),
        approve,
        action,
        comment: body.comment.clone(),
        four_eyes: ctx.config.repairs.four_eyes,
    };
    let result = ctx
        .store
        .decide(id, &decision, Utc::now().timestamp_micros())
        .await?;
    if let Ok(r) = &result {
        tracing::info!(by, repair = id, rule = %r.rule, key = %r.key, state = r.state.as_str(), "Repair decided.");
        // The repair service applies an approved repair now, not at its next tick; the alert
        // evaluator sees the held repairs change.
        handle.wake.repairs.notify_one();
        handle.wake.alerts.notify_one();
    }
    Ok(result)
}

/// `approve` and `reject` of one repair.
async fn decide_route(
    handle: &Handle,
    by: &str,
    id: &str,
    body: &Bytes,
    approve: bool,
) -> Result<Json<RepairView>, ApiError> {
    let number = id_of(id)?;
    let body = decision_body(body)?;
    decide_one(handle, number, by, approve, &body)
        .await?
        .map(|r| Json(RepairView::from(&r)))
        .map_err(|r| refusal(r, number))
}

pub async fn approve(
    State(handle): State<Arc<Handle>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<RepairView>, ApiError> {
    decide_route(&handle, &caller.0, &id, &body, true).await
}

pub async fn reject(
    State(handle): State<Arc<Handle>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<RepairView>, ApiError> {
    decide_route(&handle, &caller.0, &id, &body, false).await
}

/// How many repairs one bulk approval decides at most; call again for more.
const BULK_MAX: u32 = 1000;

/// Approves every repair of the rule waiting for a person (up to 1,000 per call).
pub async fn approve_rule(
    State(handle): State<Arc<Handle>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<BulkView>, ApiError> {
    let body = decision_body(&body)?;
    let ctx = handle.current();
    if ctx.rule(&name).is_none() {
        return Err(ApiError::not_found(format!("no rule named `{name}`")));
    }
    let mut waiting = Vec::new();
    for state in [RepairState::Pending, RepairState::DryRun] {
        waiting.extend(
            ctx.store
                .repairs(&RepairFilter {
                    rules: None,
                    state: Some(state),
                    rule: Some(name.clone()),
                    limit: BULK_MAX,
                    ..Default::default()
                })
                .await?,
        );
    }
    drop(ctx);
    let mut view = BulkView {
        approved: Vec::new(),
        refused: Vec::new(),
    };
    for r in waiting.iter().take(BULK_MAX as usize) {
        match decide_one(&handle, r.id, &caller.0, true, &body).await? {
            Ok(done) => view.approved.push(done.id.to_string()),
            Err(why) => view.refused.push(Refused {
                id: r.id.to_string(),
                error: why.to_string(),
            }),
        }
    }
    Ok(Json(view))
}

/// Lets the rule, as it is loaded now, apply its automatic repairs: at once, or under four
/// eyes when a second person asks for the same version (202 until then). What it planned
/// meanwhile is approved, or held for a person when it is more than the rule's cap.
pub async fn enable(
    State(handle): State<Arc<Handle>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<EnableAnswer>), ApiError> {
    let ctx = handle.current();
    let rule = ctx
        .rule(&name)
        .ok_or_else(|| ApiError::not_found(format!("no rule named `{name}`")))?;
    let Some(repair) = &rule.repair else {
        return Err(ApiError::bad_request(format!(
            "rule `{name}` has no repair section"
        )));
    };
    let request = EnableRequest {
        rule: &name,
        fingerprint: &rule.fingerprint,
        by: &caller.0,
        four_eyes: ctx.config.repairs.four_eyes,
        max_auto_per_run: repair.max_auto_per_run,
    };
    let enabling = ctx
        .store
        .enable_repairs(&request, Utc::now().timestamp_micros())
        .await?
        .map_err(|r| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!("rule `{name}`: {}", match r {
                    Refusal::SelfApproval => "four eyes: you asked to enable this version; a second person must enable it too".to_string(),
                    other => other.to_string(),
                }),
            )
        })?;
    // Enabling may approve repairs: the repair service looks now.
    handle.wake.repairs.notify_one();
    handle.wake.alerts.notify_one();
    match enabling {
        Enabling::Requested { reset } => {
            tracing::info!(by = %caller.0, rule = %name, fingerprint = %rule.fingerprint, "Enabling automatic repairs asked for; four eyes: waiting for a second person.");
            Ok((
                StatusCode::ACCEPTED,
                Json(EnableAnswer {
                    rule: name,
                    enabled: false,
                    fingerprint: rule.fingerprint.clone(),
                    requested_by: Some(caller.0.clone()),
                    waiting_for: Some(
                        "four eyes: a second person to enable the same version".into(),
                    ),
                    reset: Some(reset),
                    ..EnableAnswer::default()
                }),
            ))
        }
        Enabling::Enabled { by, approved, held } => {
            if let Some((hold, why, n)) = &held {
                ctx.metrics.repairs_held(rule, hold.as_str());
                tracing::warn!(rule = %name, reason = hold.as_str(), held = n, "Automatic repairs held for a person: {why}");
            }
            tracing::info!(by = %by, rule = %name, fingerprint = %rule.fingerprint, approved, "Automatic repairs enabled.");
            Ok((
                StatusCode::OK,
                Json(EnableAnswer {
                    rule: name,
                    enabled: true,
                    enabled_by: Some(by),
                    fingerprint: rule.fingerprint.clone(),
                    approved: Some(approved),
                    held: Some(held.as_ref().map_or(0, |h| h.2)),
                    held_by: Some(held.as_ref().map(|h| h.0)),
                    hold_reason: Some(held.as_ref().map(|h| h.1.clone())),
                    ..EnableAnswer::default()
                }),
            ))
        }
    }
}
