//! `explain`: the engine's evidence for one key, with what the state store remembers of it —
//! its violations (each occurrence) and their repairs — as on-call sees it in the CLI, the API
//! and the web page.

use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::engine::Explanation;
use crate::rules::Rule;
use crate::sources::Sources;
use crate::state::{RepairFilter, StateError, StateStore, ViolationFilter};
use crate::value::{Secrets, format_timestamp};
use crate::verdict::PlannedAction;

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
    pub occurrences: i64,
    pub message: String,
}

/// One repair of the key, as the store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PastRepair {
    pub id: String,
    pub state: String,
    pub action: String,
    /// The chosen action, filled in.
    pub planned: Option<PlannedAction>,
    pub created_at: String,
    pub approved_by: Option<String>,
    pub hold_reason: Option<String>,
    pub result: Option<String>,
}

/// `value` with every secret in any of its texts redacted.
fn redacted<T: Serialize + DeserializeOwned>(value: T, secrets: &Secrets) -> T {
    let Ok(mut json) = serde_json::to_value(&value) else {
        return value;
    };
    secrets.redact_json(&mut json);
    serde_json::from_value(json).unwrap_or(value)
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
            occurrences: v.occurrences,
            message: v.message,
        })
        .collect();
    let repairs: Vec<PastRepair> = store
        .repairs(&RepairFilter {
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
            planned: r.chosen().cloned(),
            action: r.action,
            created_at: format_timestamp(r.created_us),
            approved_by: r.approved_by,
            hold_reason: r.hold_reason,
            result: r.result,
        })
        .collect();
    // What the store kept was redacted when it was written; a secret added since (a new
    // token, a changed password) is redacted now too.
    let secrets = sources.secrets();
    let history = history.into_iter().map(|v| redacted(v, secrets)).collect();
    let repairs = repairs.into_iter().map(|r| redacted(r, secrets)).collect();
    Ok(Evidence {
        now,
        history,
        repairs,
    })
}
