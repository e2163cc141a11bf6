//! Silences and alerts in the API: `POST /api/v1/silences` (an on-call engineer's "I'm on
//! it": matchers, an optional key, an end, a comment; the token's name is recorded),
//! `GET /api/v1/silences`, `DELETE /api/v1/silences/{id}` (lift it; safe to repeat), and
//! `GET /api/v1/alerts`: the alert groups firing or about to, each marked with the silences
//! that hold it.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;

use super::ApiError;
use super::auth::Caller;
use crate::api::silences::{AlertView, NewSilenceBody, SilenceView};
use crate::api::views::Page;
use crate::context::Handle;
use crate::state::NewSilence;
use crate::value::format_timestamp;

/// The longest a silence may last: past that, fix the rule or the routing instead.
const MAX_SILENCE_DAYS: i64 = 90;

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> ApiError {
        ApiError::bad_request(format!("invalid JSON body: {}", e.body_text()))
    }
}

pub async fn add(
    State(handle): State<Arc<Handle>>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Json<NewSilenceBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let now = Utc::now();
    let now_us = now.timestamp_micros();
    let ends_us = match (&body.ends_at, &body.duration) {
        (Some(t), None) => chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "ends_at: `{t}` is not an RFC 3339 time such as 2026-11-28T09:00:00Z"
                ))
            })?
            .timestamp_micros(),
        (None, Some(d)) => {
            let d = humantime::parse_duration(d).map_err(|_| {
                ApiError::bad_request(format!("duration: `{d}` is not a duration such as 2h"))
            })?;
            now_us.saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        }
        _ => {
            return Err(ApiError::bad_request(
                "give either ends_at (RFC 3339) or duration (such as 2h)",
            ));
        }
    };
    if ends_us <= now_us {
        return Err(ApiError::bad_request("the silence would end in the past"));
    }
    if ends_us - now_us > MAX_SILENCE_DAYS * 86_400_000_000 {
        return Err(ApiError::bad_request(format!(
            "a silence lasts at most {MAX_SILENCE_DAYS} days"
        )));
    }
    if body.comment.trim().is_empty() {
        return Err(ApiError::bad_request(
            "comment: say why (a ticket, what you are doing)",
        ));
    }
    let ctx = handle.current();
    crate::alert::check_silence(&body.matchers, body.key.as_deref(), &ctx.rules)
        .map_err(ApiError::bad_request)?;
    let new = NewSilence {
        matchers: body.matchers,
        key: body.key,
        comment: body.comment,
        created_by: caller.0.clone(),
        ends_us,
    };
    let silence = ctx.store.add_silence(&new, now_us).await?;
    let id = silence.id;
    tracing::info!(by = %caller.0, id, matchers = ?new.matchers, key = ?new.key, ends_at = %format_timestamp(ends_us), "Silence added.");
    // Alerts are evaluated again now: a resolve goes out at once, not at the next evaluation.
    handle.wake.alerts.notify_one();
    handle
        .audit(
            &caller.0,
            "silence.add",
            &format!("silence/{id}"),
            serde_json::json!({
                "matchers": new.matchers,
                "key": new.key,
                "comment": new.comment,
                "ends_at": format_timestamp(ends_us),
            }),
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(SilenceView::new(&silence, now_us)),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    state: Option<String>,
}

pub async fn list(
    State(handle): State<Arc<Handle>>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page<SilenceView>>, ApiError> {
    let Query(p) = query?;
    let all = match p.state.as_deref() {
        None | Some("active") => false,
        Some("all") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "state must be active or all, not `{other}`"
            )));
        }
    };
    let now_us = Utc::now().timestamp_micros();
    let silences = handle.current().store.silences(all, now_us).await?;
    Ok(Json(Page {
        items: silences
            .iter()
            .map(|s| SilenceView::new(s, now_us))
            .collect(),
        next: None,
    }))
}

pub async fn expire(
    State(handle): State<Arc<Handle>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<SilenceView>, ApiError> {
    let missing = || ApiError::not_found(format!("no silence with id `{id}`"));
    let number: i64 = id.parse().map_err(|_| missing())?;
    let now_us = Utc::now().timestamp_micros();
    let silence = handle
        .current()
        .store
        .expire_silence(number, &caller.0, now_us)
        .await?
        .ok_or_else(missing)?;
    tracing::info!(by = %caller.0, id = number, "Silence expired.");
    handle.wake.alerts.notify_one();
    handle
        .audit(
            &caller.0,
            "silence.expire",
            &format!("silence/{number}"),
            serde_json::json!({ "expired_at": silence.expired_us.map(format_timestamp) }),
        )
        .await;
    Ok(Json(SilenceView::new(&silence, now_us)))
}

pub async fn alerts(State(handle): State<Arc<Handle>>) -> Result<Json<Page<AlertView>>, ApiError> {
    let ctx = handle.current();
    let now_us = Utc::now().timestamp_micros();
    let silences = ctx.store.silences(false, now_us).await?;
    let mut groups: Vec<_> = ctx.store.alert_groups().await?.into_values().collect();
    groups.sort_by(|a, b| a.group_key.cmp(&b.group_key));
    let items = groups
        .into_iter()
        .filter(|g| g.firing || g.pending_since_us.is_some())
        .map(|g| {
            let fields = crate::alert::group_fields(&g.group_key, &ctx.rules);
            // A resolve that is pending is still firing; a start that is pending is pending.
            let state = if g.firing { "firing" } else { "pending" };
            AlertView {
                silenced_by: silences
                    .iter()
                    .filter(|s| s.key.is_none() && crate::alert::silence_matches(s, &fields))
                    .map(|s| s.id.to_string())
                    .collect(),
                since: if g.firing {
                    g.started_us
                } else {
                    g.pending_since_us
                }
                .map(format_timestamp),
                last_sent_at: g.last_sent_us.map(format_timestamp),
                announced_count: g.sent_count,
                group: g.group_key,
                fields,
                state: state.into(),
            }
        })
        .collect();
    Ok(Json(Page { items, next: None }))
}
