//! `explain`: the engine's evidence for one key, with what the state store remembers of it —
//! its violations (each occurrence) and their repairs — as on-call sees it in the CLI, the API
//! and the web page.

use chrono::Utc;
use serde::{Deserialize, Serialize};

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
    pub history: Vec<PastViolation>,
    pub repairs: Vec<PastRepair>,
}

/// One occurrence of a violation of the key, as the store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PastViolation {
    pub id: String,
    pub state: String,
    pub first_seen: String,
    pub last_seen: String,
    pub resolved_at: Option<String>,
    /// What resolved it when not a run of its rule: `repair #17`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    pub occurrences: i64,
    pub message: String,
}

/// One repair of the key, as the store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PastRepair {
    pub id: String,
    pub state: String,
    pub action: String,
    /// The chosen action, filled in (as JSON, redacted).
    pub planned: Option<serde_json::Value>,
    pub created_at: String,
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_by: Option<String>,
    pub hold_reason: Option<String>,
    pub result: Option<String>,
}

/// Explains `key` of `rule` now, with its history.
pub async fn evidence(
    rule: &Rule,
    sources: &Sources,
    store: &StateStore,
    key: &str,
) -> Result<Evidence, StateError> {
    let now = crate::engine::explain(rule, sources, Utc::now(), key).await;
    let history: Vec<PastViolation> = store
        .violations(&ViolationFilter {
            rules: None,
            rule: Some(rule.name.clone()),
            key: Some(key.to_string()),
            state: None,
            after_id: None,
            limit: HISTORY,
        })
        .await?
        .into_iter()
        .map(|v| PastViolation {
            id: v.id.to_string(),
            state: v.state.as_str().into(),
            first_seen: format_timestamp(v.first_seen_us),
            last_seen: format_timestamp(v.last_seen_us),
            resolved_at: v.resolved_us.map(format_timestamp),
            resolved_by: v.resolved_by,
            occurrences: v.occurrences,
            message: v.message,
        })
        .collect();
    let repairs: Vec<PastRepair> = store
        .repairs(&RepairFilter {
            rules: None,
            rule: Some(rule.name.clone()),
            key: Some(key.to_string()),
            limit: HISTORY,
            ..Default::default()
        })
        .await?
        .into_iter()
        .map(|r| PastRepair {
            id: r.id.to_string(),
            state: r.state.as_str().into(),
            planned: r.chosen().and_then(|a| serde_json::to_value(a).ok()),
            action: r.action,
            created_at: format_timestamp(r.created_us),
            approved_by: r.approved_by,
            rejected_by: r.rejected_by,
            hold_reason: r.hold_reason,
            result: r.result,
        })
        .collect();
    // What the store kept was redacted when it was written; a secret added since (a new
    // token, a changed password) is redacted now too.
    let secrets = sources.secrets();
    let clean = |s: &mut String| {
        if let std::borrow::Cow::Owned(r) = secrets.redact(s) {
            *s = r;
        }
    };
    let mut history = history;
    for v in &mut history {
        clean(&mut v.message);
    }
    let mut repairs = repairs;
    for r in &mut repairs {
        clean(&mut r.action);
        r.approved_by.iter_mut().for_each(clean);
        r.rejected_by.iter_mut().for_each(clean);
        r.hold_reason.iter_mut().for_each(clean);
        r.result.iter_mut().for_each(clean);
        if let Some(planned) = &mut r.planned {
            secrets.redact_json(planned);
        }
    }
    Ok(Evidence {
        now,
        history,
        repairs,
    })
}
