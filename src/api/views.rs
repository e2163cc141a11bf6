//! What the API answers about rules, runs and violations: one view per resource, built from
//! the state store's records and the rules in force, and read back by the CLI's client. Ids are strings (JavaScript clients lose
//! 64-bit integers), timestamps RFC 3339. `violations list --format json` prints the same views.

use serde::{Deserialize, Serialize};

use crate::rules::Rule;
use crate::state::{RuleSnapshot, RunRecord, ViolationRecord};
use crate::value::format_timestamp;

/// A page of a list: `{"items": [...], "next": null | "cursor"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViolationView {
    pub id: String,
    pub rule: String,
    pub key: String,
    pub state: String,
    pub message: String,
    pub first_seen: String,
    pub last_seen: String,
    pub occurrences: i64,
    pub resolved_at: Option<String>,
    /// What resolved it when not a run of its rule: `repair #17`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    pub previous_id: Option<String>,
    pub datasets: serde_json::Value,
    /// The rule's impact value for this key (a decimal string), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impact: Option<String>,
}

impl From<&ViolationRecord> for ViolationView {
    fn from(v: &ViolationRecord) -> ViolationView {
        ViolationView {
            id: v.id.to_string(),
            rule: v.rule.clone(),
            key: v.key.clone(),
            state: v.state.as_str().into(),
            message: v.message.clone(),
            first_seen: format_timestamp(v.first_seen_us),
            last_seen: format_timestamp(v.last_seen_us),
            occurrences: v.occurrences,
            resolved_at: v.resolved_us.map(format_timestamp),
            resolved_by: v.resolved_by.clone(),
            previous_id: v.previous_id.map(|p| p.to_string()),
            datasets: v.datasets.clone(),
            impact: v.impact.clone(),
        }
    }
}

/// A run's error: its kind (null for runs recorded before kinds existed) and message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorView {
    pub kind: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunView {
    pub id: String,
    pub rule: String,
    pub started_at: String,
    pub finished_at: String,
    pub outcome: String,
    pub rows_scanned: i64,
    pub violations: i64,
    pub keys_judged: i64,
    pub keys_in_grace: i64,
    pub keys_with_errors: i64,
    /// `full` or `incremental`.
    pub mode: String,
    /// In an incremental run, the keys found changed.
    pub keys_changed: i64,
    /// The rule's status under its thresholds after the run (`pass`, `warn`, `error`,
    /// `unknown`); null for runs recorded before statuses were kept.
    pub status: Option<String>,
    pub error: Option<ErrorView>,
}

impl From<&RunRecord> for RunView {
    fn from(r: &RunRecord) -> RunView {
        RunView {
            id: r.id.to_string(),
            rule: r.rule.clone(),
            started_at: format_timestamp(r.started_us),
            finished_at: format_timestamp(r.finished_us),
            outcome: r.outcome.as_str().into(),
            status: r.status.map(|s| s.as_str().into()),
            rows_scanned: r.rows_scanned,
            violations: r.violations,
            keys_judged: r.keys_judged,
            keys_in_grace: r.keys_in_grace,
            keys_with_errors: r.keys_with_errors,
            mode: r.mode.as_str().into(),
            keys_changed: r.keys_changed,
            error: r.error.as_ref().map(|message| ErrorView {
                kind: r.error_kind.map(|k| k.as_str().into()),
                message: message.clone(),
            }),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetView {
    pub name: String,
    pub source: String,
    pub many: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleView {
    pub name: String,
    pub description: String,
    pub severity: String,
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub schedule: String,
    pub datasets: Vec<DatasetView>,
    pub open_violations: i64,
    pub last_success: Option<String>,
    /// What the open violations put at risk, for a rule with an `impact`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impact: Option<ImpactView>,
    /// Under its thresholds (`warn_if`, `error_if`): `pass`, `warn` or `error`.
    pub status: String,
    /// The severity its violations carry now (its own when an error, at most `warning` when
    /// they warn); none when it passes.
    pub effective_severity: Option<String>,
    /// The threshold conditions that hold now (`violations > 10`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// The thresholds as loaded (`violations > 10`, …), when the rule has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<ThresholdsView>,
}

/// A rule's `warn_if` and `error_if`, each condition as text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThresholdsView {
    pub warn_if: Option<Vec<String>>,
    pub error_if: Option<Vec<String>>,
}

/// A rule's open violations' impact: the sum in its unit, and as people read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImpactView {
    /// Exact, as a string in JSON (`"339.35"`).
    #[serde(with = "crate::value::decimal_text")]
    pub total: rust_decimal::Decimal,
    pub unit: String,
    pub display: String,
}

impl RuleView {
    /// The rule as it stands with these open violations (and, for a `fraction` threshold,
    /// the keys its newest full sweep judged).
    pub fn new(rule: &Rule, snapshot: &RuleSnapshot, judged: Option<i64>) -> RuleView {
        let state = crate::alert::status::state_of(rule, snapshot, judged);
        let text = |c: &Option<Vec<crate::rules::thresholds::Condition>>| {
            c.as_ref()
                .map(|c| c.iter().map(ToString::to_string).collect())
        };
        RuleView {
            status: state.status.as_str().into(),
            effective_severity: crate::rules::thresholds::effective_severity(
                rule.severity,
                state.status,
            )
            .map(|s| s.as_str().into()),
            reasons: state.reasons,
            thresholds: rule.thresholds.is_set().then(|| ThresholdsView {
                warn_if: text(&rule.thresholds.warn_if),
                error_if: text(&rule.thresholds.error_if),
            }),
            name: rule.name.clone(),
            description: rule.description.clone(),
            severity: rule.severity.as_str().into(),
            labels: rule
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
            schedule: rule.schedule.to_string(),
            datasets: rule
                .datasets
                .iter()
                .map(|d| DatasetView {
                    name: d.name.clone(),
                    source: d.source.clone(),
                    many: d.many,
                })
                .collect(),
            open_violations: snapshot.open,
            last_success: snapshot.last_success_us.map(format_timestamp),
            impact: rule.impact.as_ref().map(|i| {
                let total = snapshot.impact.unwrap_or_default();
                ImpactView {
                    total,
                    unit: i.unit.clone(),
                    display: i.describe(total),
                }
            }),
        }
    }
}

/// One rule in full: what the list shows, its last run, and its open violations (the oldest
/// `limit`, with a cursor for the rest).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleDetailView {
    #[serde(flatten)]
    pub rule: RuleView,
    pub assert: String,
    pub key: String,
    pub last_run: Option<RunView>,
    pub violations: Page<ViolationView>,
}

/// A diagnostic of a refused configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiagnosticView {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl From<&crate::diag::Diagnostic> for DiagnosticView {
    fn from(d: &crate::diag::Diagnostic) -> DiagnosticView {
        DiagnosticView {
            file: d.file.display().to_string(),
            line: d.line,
            column: d.column,
            message: d.message.clone(),
        }
    }
}
