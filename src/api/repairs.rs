//! Repairs in the API's words: a repair as the API shows it, the body of a decision, and the
//! answers of a bulk approval and of enabling a rule's repairs.

use serde::{Deserialize, Serialize};

use crate::state::{Approval, Hold, RepairRecord, RepairState};
use crate::value::format_timestamp;
use crate::verdict::PlannedAction;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepairView {
    pub id: String,
    pub rule: String,
    pub key: String,
    pub state: RepairState,
    pub action: String,
    pub created_at: String,
    pub updated_at: String,
    pub mode: String,
    /// Every action the rule offers, filled in for this key; `action` names the chosen one.
    pub actions: Vec<PlannedAction>,
    pub idempotency_key: String,
    pub hold_reason: Option<String>,
    /// Which guardrail holds it: dry_run, not_enabled, too_many, suspicious, four_eyes, invalid.
    pub held_by: Option<Hold>,
    pub approved_by: Option<String>,
    /// Who rejected it.
    #[serde(default)]
    pub rejected_by: Option<String>,
    pub comment: Option<String>,
    pub attempts: i64,
    pub next_attempt_at: Option<String>,
    pub result: Option<String>,
    pub finished_at: Option<String>,
    /// When the violation it repairs was first seen.
    pub violation_first_seen: String,
}

impl From<&RepairRecord> for RepairView {
    fn from(r: &RepairRecord) -> RepairView {
        RepairView {
            id: r.id.to_string(),
            rule: r.rule.clone(),
            key: r.key.clone(),
            state: r.state,
            action: r.action.clone(),
            created_at: format_timestamp(r.created_us),
            updated_at: format_timestamp(r.updated_us),
            mode: r.mode.clone(),
            actions: r.actions.clone(),
            idempotency_key: r.idempotency_key.clone(),
            hold_reason: r.hold_reason.clone(),
            held_by: r.held_by,
            approved_by: r.approved_by.clone(),
            rejected_by: r.rejected_by.clone(),
            comment: r.comment.clone(),
            attempts: r.attempts,
            next_attempt_at: (r.state == RepairState::Approved)
                .then(|| format_timestamp(r.next_attempt_us)),
            result: r.result.clone(),
            finished_at: r.finished_us.map(format_timestamp),
            violation_first_seen: format_timestamp(r.occurrence_us),
        }
    }
}

/// Approve or reject one repair: optionally another of the rule's actions, and a comment.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Another of the rule's actions than the planned one.
    pub action: Option<String>,
    pub comment: Option<String>,
}

/// A bulk approval's answer: the repairs approved, and those refused with why.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BulkView {
    pub approved: Vec<String>,
    /// Repairs not approved, each with why (four eyes: your own first approval).
    pub refused: Vec<Refused>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refused {
    pub id: String,
    pub error: String,
}

/// Enabling a rule's automatic repairs: enabled (with what it approved or held), or, under four
/// eyes, asked for and waiting for a second person.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EnableAnswer {
    pub rule: String,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_by: Option<String>,
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<Option<Hold>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_reason: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// An earlier request for another version, which no longer counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<Option<Approval>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_answers_keep_their_shape_and_read_back() {
        let requested = EnableAnswer {
            rule: "r".into(),
            enabled: false,
            fingerprint: "f".into(),
            requested_by: Some("ops".into()),
            waiting_for: Some("four eyes".into()),
            reset: Some(None),
            ..EnableAnswer::default()
        };
        assert_eq!(
            serde_json::to_string(&requested).unwrap(),
            r#"{"rule":"r","enabled":false,"fingerprint":"f","requested_by":"ops","waiting_for":"four eyes","reset":null}"#
        );
        let enabled = EnableAnswer {
            rule: "r".into(),
            enabled: true,
            enabled_by: Some("ops, boss".into()),
            fingerprint: "f".into(),
            approved: Some(2),
            held: Some(0),
            held_by: Some(None),
            hold_reason: Some(None),
            ..EnableAnswer::default()
        };
        let text = serde_json::to_string(&enabled).unwrap();
        assert_eq!(
            text,
            r#"{"rule":"r","enabled":true,"enabled_by":"ops, boss","fingerprint":"f","approved":2,"held":0,"held_by":null,"hold_reason":null}"#
        );
        let back: EnableAnswer = serde_json::from_str(&text).unwrap();
        assert_eq!((back.enabled, back.approved), (true, Some(2)));
    }
}
