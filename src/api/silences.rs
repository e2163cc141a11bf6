//! Silences and alert groups in the API's words: a silence as shown, the body that adds one,
//! and an alert group as `GET /api/v1/alerts` shows it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::state::Silence;
use crate::value::format_timestamp;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SilenceView {
    pub id: String,
    pub matchers: BTreeMap<String, String>,
    pub key: Option<String>,
    pub comment: String,
    pub created_by: String,
    pub created_at: String,
    pub ends_at: String,
    pub expired_at: Option<String>,
    pub expired_by: Option<String>,
    pub active: bool,
}

impl SilenceView {
    pub fn new(s: &Silence, now_us: i64) -> SilenceView {
        SilenceView {
            id: s.id.to_string(),
            matchers: s.matchers.clone(),
            key: s.key.clone(),
            comment: s.comment.clone(),
            created_by: s.created_by.clone(),
            created_at: format_timestamp(s.created_us),
            ends_at: format_timestamp(s.ends_us),
            expired_at: s.expired_us.map(format_timestamp),
            expired_by: s.expired_by.clone(),
            active: s.is_active(now_us),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilenceBody {
    pub matchers: BTreeMap<String, String>,
    pub key: Option<String>,
    pub comment: String,
    /// RFC 3339, or give `duration` instead.
    pub ends_at: Option<String>,
    /// `2h`, `30m`: from now.
    pub duration: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertView {
    pub group: String,
    pub fields: BTreeMap<String, String>,
    /// `firing` (announced), or `pending` (failing, not yet for `alerting.for`).
    pub state: String,
    pub since: Option<String>,
    pub last_sent_at: Option<String>,
    pub announced_count: i64,
    /// The active silences that hold this group (a key silence does not hold a group).
    pub silenced_by: Vec<String>,
}
