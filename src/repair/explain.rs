//! `explain`: the engine's evidence for one key, with what the state store remembers of it —
//! its violations (each occurrence) and their repairs — as on-call sees it in the CLI, the API
//! and the web page.

use chrono::Utc;
use serde::Serialize;

use crate::engine::Explanation;
use crate::rules::Rule;
use crate::sources::Sources;
use crate::state::{RepairFilter, StateError, StateStore, ViolationFilter};
use crate::value::format_timestamp;

/// How many violations and repairs of a key are shown, newest last.
const HISTORY: u32 = 50;

#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    #[serde(flatten)]
    pub now: Explanation,
    pub history: Vec<serde_json::Value>,
    pub repairs: Vec<serde_json::Value>,
}

/// Explains `key` of `rule` now, with its history.
pub async fn evidence(
    rule: &Rule,
    sources: &Sources,
    store: &StateStore,
    key: &str,
) -> Result<Evidence, StateError> {
    let now = crate::engine::explain(rule, sources, Utc::now(), key).await;
    let history: Vec<serde_json::Value> = store
        .violations(&ViolationFilter {
            rule: Some(rule.name.clone()),
            key: Some(key.to_string()),
            state: None,
            after_id: None,
            limit: HISTORY,
        })
        .await?
        .into_iter()
        .map(|v| {
            serde_json::json!({
                "id": v.id.to_string(),
                "state": v.state.as_str(),
                "first_seen": format_timestamp(v.first_seen_us),
                "last_seen": format_timestamp(v.last_seen_us),
                "resolved_at": v.resolved_us.map(format_timestamp),
                "occurrences": v.occurrences,
                "message": v.message,
            })
        })
        .collect();
    let repairs: Vec<serde_json::Value> = store
        .repairs(&RepairFilter {
            rule: Some(rule.name.clone()),
            key: Some(key.to_string()),
            limit: HISTORY,
            ..Default::default()
        })
        .await?
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id.to_string(),
                "state": r.state.as_str(),
                "action": r.action,
                "planned": r.chosen(),
                "created_at": format_timestamp(r.created_us),
                "approved_by": r.approved_by,
                "hold_reason": r.hold_reason,
                "result": r.result,
            })
        })
        .collect();
    // What the store kept was redacted when it was written; a secret added since (a new
    // token, a changed password) is redacted now too.
    let (mut history, mut repairs) = (history, repairs);
    for value in history.iter_mut().chain(repairs.iter_mut()) {
        sources.secrets().redact_json(value);
    }
    Ok(Evidence {
        now,
        history,
        repairs,
    })
}
