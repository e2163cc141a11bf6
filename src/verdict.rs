//! What one run of one rule found: its `Outcome`, the `Violation`s, the keys that could not be
//! judged, and — when the run could not finish or left keys unjudged — a typed `RunError`.
//!
//! These are the vocabulary shared by everything downstream of the engine (state, metrics,
//! reports, the API, alerts, and later repairs), so they depend on nothing but `value`.
//! Error kinds are a closed set with stable strings: they are metric label values
//! (`invariantd_rule_run_errors_total{kind}`), stored in the state store, shown in the API and
//! in `check --format json`, and alerts route on them. Add a kind only with a README entry.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::value::Key;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    Unknown,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Pass, Outcome::Fail, Outcome::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

/// What a rule's violations amount to under its thresholds (`warn_if`, `error_if`): `error`
/// (any violation, for a rule without thresholds), `warn`, `pass`; `unknown` when it could
/// not be judged.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RuleStatus {
    #[default]
    Pass,
    Warn,
    Error,
    Unknown,
}

impl RuleStatus {
    pub const ALL: [RuleStatus; 4] = [
        RuleStatus::Pass,
        RuleStatus::Warn,
        RuleStatus::Error,
        RuleStatus::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleStatus::Pass => "pass",
            RuleStatus::Warn => "warn",
            RuleStatus::Error => "error",
            RuleStatus::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<RuleStatus> {
        RuleStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// How much a run read: every key (the ground truth), or only the keys that changed since the
/// previous run and the keys of open violations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    #[default]
    Full,
    Incremental,
}

impl RunMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Full => "full",
            RunMode::Incremental => "incremental",
        }
    }

    pub fn parse(text: &str) -> Option<RunMode> {
        [RunMode::Full, RunMode::Incremental]
            .into_iter()
            .find(|m| m.as_str() == text)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a run could not finish, or why some of its keys could not be judged.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No connection to a source could be had: it is down, refuses, or its credentials are
    /// wrong. Also what `source_up` reports.
    SourceUnreachable,
    /// The database rejected or aborted a query (a syntax error, a missing table, a lost
    /// connection mid-read, rows not in the requested key order).
    QueryFailed,
    /// A query did not finish within the source's `statement_timeout`.
    Timeout,
    /// A query returns something the rule cannot use: no key column, a key of an unusable
    /// type, no `updated_at` column, a column type invariantd cannot read, an assertion that
    /// names a column the query does not return.
    SchemaMismatch,
    /// A dataset without `many: true` returned more than one row for a key.
    DuplicateRows,
    /// The assertion (or `updated_at`) could not be evaluated for a key.
    Evaluation,
    /// The run was abandoned: the daemon is shutting down.
    Cancelled,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::SourceUnreachable,
        ErrorKind::QueryFailed,
        ErrorKind::Timeout,
        ErrorKind::SchemaMismatch,
        ErrorKind::DuplicateRows,
        ErrorKind::Evaluation,
        ErrorKind::Cancelled,
    ];

    /// The stable name: a metric label value, stored, and shown in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::SourceUnreachable => "source_unreachable",
            ErrorKind::QueryFailed => "query_failed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::SchemaMismatch => "schema_mismatch",
            ErrorKind::DuplicateRows => "duplicate_rows",
            ErrorKind::Evaluation => "evaluation",
            ErrorKind::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed error of a rule run: its kind and a message for people (which may quote the
/// database's own message, never a connection string).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{message}")]
pub struct RunError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RunError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> RunError {
        RunError {
            kind,
            message: message.into(),
        }
    }

    /// The same error with `context` (a dataset and source, say) in front of its message.
    pub fn context(self, context: impl fmt::Display) -> RunError {
        RunError {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }
}

/// A key for which the assertion is false.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Violation {
    pub key: Key,
    /// Boxed, as are `repairs`: a run holds every violation it found until it is recorded,
    /// and a capacity per field is room a million of them do not use.
    pub message: Box<str>,
    /// What each dataset held for the key: a row, a list of rows (`many`), or null.
    pub datasets: Evidence,
    /// What it puts at risk, in the rule's `impact.unit`.
    pub impact: Option<rust_decimal::Decimal>,
    /// The rule's repair actions filled in for this key, in the rule's order; empty when the
    /// rule offers none.
    pub repairs: Box<[PlannedAction]>,
}

/// The rows behind a violation — an object of each dataset's row, list of rows or null — kept
/// as its JSON text rather than as a tree of values: what a run holds for each violation it
/// found is the evidence's bytes, not a map per row (a run that finds a million violations
/// holds a million of them until they are recorded). Serialized as the object itself.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Evidence(Box<serde_json::value::RawValue>);

impl Evidence {
    pub fn new(datasets: &serde_json::Map<String, serde_json::Value>) -> Evidence {
        Evidence(serde_json::value::to_raw_value(datasets).expect("JSON values serialize"))
    }

    /// The JSON text, as stored.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The evidence as JSON values, for what shows or inspects them.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).expect("evidence is JSON")
    }

    /// Every secret in the evidence's strings replaced by `***`. The text is parsed only when
    /// a secret may be in it: when it shows as text, or when the text has escapes (a secret
    /// with a quote, a backslash or a control character is written escaped in JSON).
    pub fn redact(&mut self, secrets: &crate::value::Secrets) {
        let text = self.as_str();
        if matches!(secrets.redact(text), std::borrow::Cow::Borrowed(_)) && !text.contains('\\') {
            return;
        }
        if let serde_json::Value::Object(mut map) = self.to_value() {
            map.values_mut().for_each(|v| secrets.redact_json(v));
            *self = Evidence::new(&map);
        }
    }
}

impl Default for Evidence {
    fn default() -> Evidence {
        Evidence::new(&serde_json::Map::new())
    }
}

/// One repair action filled in for one violation: what will be done, exactly, as shown to an
/// approver and kept with the repair. What is the same for every repair (a statement's text,
/// an HTTP method and headers, a NATS server) stays in the rule.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlannedAction {
    pub name: String,
    #[serde(flatten)]
    pub spec: ActionSpec,
}

/// What one action will do for one key, in the terms of its kind (`actions::sql`,
/// `actions::http`, …), which alone reads `values`: stored and shown as
/// `{"kind": "sql", "params": […]}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ActionSpec {
    /// The action kind's name, or `invalid`.
    pub kind: String,
    #[serde(flatten)]
    pub values: serde_json::Map<String, serde_json::Value>,
}

impl ActionSpec {
    /// The kind of a spec that could not be filled in.
    pub const INVALID: &'static str = "invalid";

    /// The action could not be filled in for this key (a parameter that is not a single
    /// value, a URL that is not valid); the repair needs a person.
    pub fn invalid(error: String) -> ActionSpec {
        let mut values = serde_json::Map::new();
        values.insert("error".into(), serde_json::Value::String(error));
        ActionSpec {
            kind: Self::INVALID.into(),
            values,
        }
    }

    /// Why the action could not be filled in, for a spec that is `invalid`.
    pub fn invalid_error(&self) -> Option<&str> {
        (self.kind == Self::INVALID).then(|| {
            self.values
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or_default()
        })
    }
}

/// A SQL parameter with its type, so that it is bound as the database expects.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Param {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    /// Exact, as text.
    Decimal(String),
    Text(String),
    /// Microseconds since the epoch, UTC.
    Timestamp(i64),
    Bytes(Vec<u8>),
}

/// A key that could not be judged.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeyError {
    pub key: Key,
    pub kind: ErrorKind,
    pub message: String,
}

/// The keys of a rule's open violations (as `Key` displays them), as a run asks about them:
/// whether a key it did not judge is one of them, and, for an incremental run, which they
/// are. The run borrows them in whatever form the caller holds them — the state store's open
/// violations, sorted by key — rather than a set of its own: a rule with a million open
/// violations does not index their keys twice.
pub trait OpenKeys: Sync {
    fn contains(&self, key: &str) -> bool;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn keys(&self) -> Box<dyn Iterator<Item = &str> + '_>;
}

/// No open violations.
pub struct NoneOpen;

pub const NONE_OPEN: &NoneOpen = &NoneOpen;

impl OpenKeys for NoneOpen {
    fn contains(&self, _: &str) -> bool {
        false
    }
    fn len(&self) -> usize {
        0
    }
    fn keys(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        Box::new(std::iter::empty())
    }
}

impl OpenKeys for std::collections::HashSet<&str> {
    fn contains(&self, key: &str) -> bool {
        std::collections::HashSet::contains(self, key)
    }
    fn len(&self) -> usize {
        std::collections::HashSet::len(self)
    }
    fn keys(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        Box::new(self.iter().copied())
    }
}

/// Serializable for the parts of a partitioned sweep, which the replica that ran each part
/// hands to the one that merges them through the state store.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RuleRun {
    pub rule: String,
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    pub outcome: Outcome,
    /// Why the run is unknown, or a summary of the keys that could not be judged.
    pub error: Option<RunError>,
    /// The rule's dataset names, in rule order.
    pub datasets: Vec<String>,
    /// Rows read, per dataset in rule order.
    pub rows_scanned: Vec<u64>,
    pub keys_judged: u64,
    pub keys_in_grace: u64,
    pub violations: Vec<Violation>,
    /// The first key errors, with their text; `key_errors_total` counts them all.
    pub key_errors: Vec<KeyError>,
    pub key_errors_total: u64,
    /// Whether the run read every dataset to the end. Only then do its verdicts count: a key
    /// it did not report may be resolved.
    pub finished: bool,
    /// Keys that had an open violation before the run but were not judged by it (still in
    /// `grace`, or an error for that key): they stay as they are.
    pub unjudged_open: Vec<String>,
    /// Sources this run could not connect to.
    pub sources_down: Vec<String>,
    /// Sources this run connected to.
    pub sources_reached: Vec<String>,
    pub mode: RunMode,
    /// The fingerprint of the rule version that ran (empty for a run that never started).
    pub fingerprint: String,
    /// In an incremental run, the keys found changed (open violations' keys are judged too).
    pub keys_changed: u64,
    /// Of a rule with `partition`, every `partition.keys`-th key a full sweep met, in key
    /// order: where the next partitioned sweep splits the keys.
    #[serde(default)]
    pub samples: Vec<Key>,
    /// What a rule that measures (`Rule::measure`: a `row_count` check with `max_drop`)
    /// counted in this run: its next run's `previous`.
    #[serde(default)]
    pub measure: Option<i64>,
    /// The rule's status after this run, under its thresholds (`rules::Thresholds`).
    #[serde(default)]
    pub status: RuleStatus,
}

impl RuleRun {
    /// A run that could not happen or was abandoned: it judges nothing.
    pub fn unknown(
        rule: &str,
        started_at: DateTime<Utc>,
        duration: Duration,
        error: RunError,
    ) -> RuleRun {
        RuleRun {
            rule: rule.to_string(),
            started_at,
            duration,
            outcome: Outcome::Unknown,
            error: Some(error),
            datasets: Vec::new(),
            rows_scanned: Vec::new(),
            keys_judged: 0,
            keys_in_grace: 0,
            violations: Vec::new(),
            key_errors: Vec::new(),
            key_errors_total: 0,
            finished: false,
            unjudged_open: Vec::new(),
            sources_down: Vec::new(),
            sources_reached: Vec::new(),
            mode: RunMode::Full,
            fingerprint: String::new(),
            keys_changed: 0,
            samples: Vec::new(),
            measure: None,
            status: RuleStatus::Unknown,
        }
    }

    pub fn total_rows_scanned(&self) -> u64 {
        self.rows_scanned.iter().sum()
    }

    /// The error's kind, for metrics and routing.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        self.error.as_ref().map(|e| e.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shortcut in `Evidence::redact` (no parse when the secret does not show in the text)
    /// must not let through a secret that JSON writes escaped, nor one inside a JSON column.
    #[test]
    fn evidence_redaction_finds_secrets_that_json_escapes_or_nests() {
        for secret in [
            "pa\"ss'word",
            "pa\\ss\\word",
            "pa\u{1}ss\tword",
            "pässwörd\u{7f}",
            "plain-secret",
        ] {
            let mut secrets = crate::value::Secrets::default();
            secrets.add(secret);
            let datasets = serde_json::json!({
                "payment": {"id": 1, "note": format!("dsn=postgres://u:{secret}@db")},
                "lines": [{"memo": secret}, {"memo": "fine"}],
                "meta": {"doc": {secret: secret, "nested": [secret]}},
            });
            let serde_json::Value::Object(map) = datasets else {
                unreachable!()
            };
            let mut evidence = Evidence::new(&map);
            evidence.redact(&secrets);
            let value = evidence.to_value();
            let escaped = serde_json::to_string(secret).unwrap();
            let escaped = &escaped[1..escaped.len() - 1];
            assert!(
                !evidence.as_str().contains(escaped),
                "{secret:?} in {}",
                evidence.as_str()
            );
            assert!(
                !value.to_string().contains(escaped),
                "{secret:?} in {value}"
            );
            assert_eq!(value["lines"][0]["memo"], "***", "{secret:?}");
            assert_eq!(value["lines"][1]["memo"], "fine");
            assert_eq!(value["payment"]["note"], "dsn=postgres://u:***@db");
            assert_eq!(value["meta"]["doc"]["***"], "***", "{secret:?}: {value}");
        }
    }

    #[test]
    fn evidence_without_secrets_is_left_as_it_was() {
        let mut secrets = crate::value::Secrets::default();
        secrets.add("hunter22");
        let serde_json::Value::Object(map) =
            serde_json::json!({"t": {"note": "a \"quoted\" \\ note"}})
        else {
            unreachable!()
        };
        let mut evidence = Evidence::new(&map);
        let before = evidence.as_str().to_string();
        evidence.redact(&secrets);
        assert_eq!(evidence.as_str(), before);
    }

    #[test]
    fn kinds_and_outcomes_round_trip_through_their_stable_names() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(k.as_str()), Some(k));
            assert!(
                k.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
        }
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(ErrorKind::parse("nope"), None);
    }
}
