//! What an announcement says, whatever carries it (`Notification`, stored in the outbox as
//! JSON): the rule's description, severity and labels, the counts, a sample of keys with their
//! messages, links and the message's stable id; and how people read it (a subject and a text
//! body, which email sends as they are). It knows no receiver: each one writes its own wire
//! format in its own file (`receivers`).

mod kinds;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

pub use kinds::{AlertKind, Event};

/// One announcement of an alert group, as queued for every receiver it is routed to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable across retries and restarts: a receiver deduplicates on it.
    pub id: String,
    /// The group (see `group::GroupKey`): `violation/RULE`, `unknown/RULE`, `stale/RULE`,
    /// `repairs_held/RULE` or `source_down/SOURCE`.
    pub group: String,
    pub event: Event,
    pub kind: AlertKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub severity: String,
    /// The rule's description, or what a dependency alert means.
    pub description: String,
    /// The rule's labels (`team`, `runbook_url`, …).
    pub labels: BTreeMap<String, String>,
    /// Open violations (for `violation`), or rules affected (for `source_down`).
    pub count: i64,
    /// Age of the oldest open violation, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_age_seconds: Option<i64>,
    /// What the open violations put at risk, for a rule with an `impact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impact: Option<ImpactSum>,
    /// A rule's status under its thresholds (`warn` or `error`; `pass` once resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The threshold conditions that hold (`violations > 10`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// For an escalation: the severity announced before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_from: Option<String>,
    /// The oldest open violations, at most `sample_size`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<Sample>,
    /// Why the rule cannot be judged (`unknown`): the typed kind and the text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The rules a source down leaves blind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// The rule's last successful run (RFC 3339), for `stale`; none if it never succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    /// When the group started firing (RFC 3339).
    pub starts_at: String,
    /// When it resolved (RFC 3339), for `resolved`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    /// When this announcement was made (RFC 3339).
    pub at: String,
    /// Where to look, when `base_url` is set: `page` (the rule's view on the web page, or the
    /// front for a source) first, then the API (`rule`, `violations`, `repairs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub links: BTreeMap<String, String>,
}

/// A rule's open violations' impact summed: in its unit, and as people read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpactSum {
    /// Exact, as a string in JSON (`"339.35"`).
    #[serde(with = "crate::value::decimal_text")]
    pub total: rust_decimal::Decimal,
    pub unit: String,
    /// `12,345.67 EUR`.
    pub display: String,
}

/// A violating key and its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub key: String,
    pub message: String,
    /// When it was first seen (RFC 3339).
    pub since: String,
}

impl Notification {
    pub fn what(&self) -> String {
        match self.kind {
            AlertKind::Violation => format!(
                "{}: {} violation{}{}",
                self.rule.as_deref().unwrap_or(""),
                self.count,
                plural(self.count),
                match &self.impact {
                    Some(i) => format!(", {} at risk", i.display),
                    None => String::new(),
                }
            ),
            AlertKind::Unknown => format!(
                "{}: cannot be judged ({})",
                self.rule.as_deref().unwrap_or(""),
                self.error_kind.as_deref().unwrap_or("error")
            ),
            AlertKind::Stale => format!(
                "{}: no successful run {}",
                self.rule.as_deref().unwrap_or(""),
                match &self.last_success {
                    Some(t) => format!("since {t}"),
                    None => "yet".into(),
                }
            ),
            AlertKind::RepairsHeld => format!(
                "{}: {} automatic repair{} held for a person",
                self.rule.as_deref().unwrap_or(""),
                self.count,
                plural(self.count)
            ),
            AlertKind::SourceDown => format!(
                "source {} is down ({} rule{} blind)",
                self.source.as_deref().unwrap_or(""),
                self.count,
                plural(self.count)
            ),
        }
    }

    /// `[FIRING critical] paid_implies_reserved: 100 violations`.
    pub fn subject(&self) -> String {
        match self.event {
            Event::Resolved => format!("[RESOLVED] {}", self.resolved_what()),
            e => format!(
                "[{} {}] {}",
                match e {
                    Event::Firing => "FIRING",
                    Event::Escalated => "ESCALATED",
                    _ => "STILL FIRING",
                },
                self.severity,
                self.what()
            ),
        }
    }

    fn resolved_what(&self) -> String {
        match self.kind {
            AlertKind::Violation => format!(
                "{}: every violation cleared",
                self.rule.as_deref().unwrap_or("")
            ),
            AlertKind::Unknown => format!("{}: judged again", self.rule.as_deref().unwrap_or("")),
            AlertKind::Stale => format!("{}: ran successfully", self.rule.as_deref().unwrap_or("")),
            AlertKind::RepairsHeld => format!(
                "{}: every held repair decided",
                self.rule.as_deref().unwrap_or("")
            ),
            AlertKind::SourceDown => {
                format!("source {} is back", self.source.as_deref().unwrap_or(""))
            }
        }
    }

    /// The plain-text body of an email (and of webhook messages); the subject is apart.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if !self.description.is_empty() {
            let _ = writeln!(out, "{}", self.description);
            let _ = writeln!(out);
        }
        match &self.escalated_from {
            Some(from) => {
                let _ = writeln!(out, "Severity:  {} (was {from})", self.severity);
            }
            None => {
                let _ = writeln!(out, "Severity:  {}", self.severity);
            }
        }
        if let Some(status) = self.status.as_ref().filter(|_| !self.reasons.is_empty()) {
            let _ = writeln!(out, "Status:    {status} ({})", self.reasons.join(", "));
        }
        if let Some(rule) = &self.rule {
            let _ = writeln!(out, "Rule:      {rule}");
        }
        if let Some(source) = &self.source {
            let _ = writeln!(out, "Source:    {source}");
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| *k != "runbook_url")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !labels.is_empty() {
            let _ = writeln!(out, "Labels:    {}", labels.join(", "));
        }
        let _ = writeln!(out, "Since:     {}", self.starts_at);
        if let Some(end) = &self.ends_at {
            let _ = writeln!(out, "Resolved:  {end}");
        }
        match self.kind {
            AlertKind::Violation if self.event != Event::Resolved => {
                let _ = writeln!(out, "Open:      {}", self.count);
                if let Some(i) = &self.impact {
                    let _ = writeln!(out, "At risk:   {}", i.display);
                }
                if let Some(age) = self.oldest_age_seconds {
                    let _ = writeln!(out, "Oldest:    {} open", age_text(age));
                }
            }
            AlertKind::Unknown => {
                if let (Some(kind), Some(error)) = (&self.error_kind, &self.error) {
                    let _ = writeln!(out, "Error:     {kind}: {error}");
                }
            }
            AlertKind::Stale => {
                let _ = writeln!(
                    out,
                    "Last success: {}",
                    self.last_success.as_deref().unwrap_or("never")
                );
            }
            AlertKind::SourceDown if !self.rules.is_empty() => {
                let _ = writeln!(out, "Blind rules: {}", self.rules.join(", "));
            }
            _ => {}
        }
        if !self.sample.is_empty() && self.event != Event::Resolved {
            let _ = writeln!(out);
            let shown = self.sample.len() as i64;
            if shown < self.count {
                let _ = writeln!(out, "The oldest {shown} of {}:", self.count);
            } else {
                let _ = writeln!(out, "Violations:");
            }
            for s in &self.sample {
                let _ = writeln!(out, "  - {}: {} (since {})", s.key, s.message, s.since);
            }
        }
        if !self.links.is_empty() || self.labels.contains_key("runbook_url") {
            let _ = writeln!(out);
            if let Some(runbook) = self.labels.get("runbook_url") {
                let _ = writeln!(out, "Runbook:    {runbook}");
            }
            for (name, url) in &self.links {
                let _ = writeln!(out, "{:<11} {url}", format!("{}:", capitalise(name)));
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "-- invariantd, message {}", self.id);
        out
    }
}

fn plural(n: i64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `3h 12m`, `45s`: an age as people read it.
pub fn age_text(seconds: i64) -> String {
    let s = seconds.max(0);
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Slack treats `&`, `<` and `>` as markup.
/// A Prometheus label name, which rule labels must be to become metric and Alertmanager labels: (`[a-zA-Z_][a-zA-Z0-9_]*`) not reserved by Prometheus (`__…`).
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        && !name.starts_with("__")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn firing() -> Notification {
        Notification {
            id: "violation/paid_implies_reserved/1795000000000000/1".into(),
            group: "violation/paid_implies_reserved".into(),
            event: Event::Firing,
            kind: AlertKind::Violation,
            rule: Some("paid_implies_reserved".into()),
            source: None,
            severity: "critical".into(),
            description: "Every captured payment has its stock reserved.".into(),
            labels: [
                ("team".to_string(), "inventory".to_string()),
                (
                    "runbook_url".to_string(),
                    "https://runbooks.example.com/paid".to_string(),
                ),
            ]
            .into(),
            count: 100,
            // 339.35, summed from amounts whose binary sum is not 339.35: every body carries
            // the exact decimal, as a string.
            impact: Some(ImpactSum {
                total: ["100.10", "200.20", "0.10", "0.20", "38.75"]
                    .iter()
                    .map(|a| a.parse::<rust_decimal::Decimal>().unwrap())
                    .sum(),
                unit: "eur".into(),
                display: "339.35 EUR".into(),
            }),
            oldest_age_seconds: Some(3 * 3600 + 12 * 60),
            status: None,
            reasons: Vec::new(),
            escalated_from: None,
            sample: (1..=3)
                .map(|i| Sample {
                    key: format!("{}", 1000 + i),
                    message: format!("order {}: 4999 cents captured, nothing reserved", 1000 + i),
                    since: "2026-11-27T09:00:00Z".into(),
                })
                .collect(),
            error_kind: None,
            error: None,
            rules: Vec::new(),
            last_success: None,
            starts_at: "2026-11-27T09:05:00Z".into(),
            ends_at: None,
            at: "2026-11-27T12:17:00Z".into(),
            links: [
                (
                    "page".to_string(),
                    "https://invariantd.example.com/rules/paid_implies_reserved".to_string(),
                ),
                (
                    "rule".to_string(),
                    "https://invariantd.example.com/api/v1/rules/paid_implies_reserved".to_string(),
                ),
                (
                    "violations".to_string(),
                    "https://invariantd.example.com/api/v1/violations?rule=paid_implies_reserved&state=open".to_string(),
                ),
            ]
            .into(),
        }
    }

    pub(crate) fn resolved() -> Notification {
        Notification {
            id: "violation/paid_implies_reserved/1795000000000000/2".into(),
            event: Event::Resolved,
            count: 0,
            impact: None,
            oldest_age_seconds: None,
            sample: Vec::new(),
            ends_at: Some("2026-11-27T13:00:00Z".into()),
            at: "2026-11-27T13:00:00Z".into(),
            ..firing()
        }
    }

    pub(crate) fn source_down() -> Notification {
        Notification {
            id: "source_down/payments/1795000000000000/1".into(),
            group: "source_down/payments".into(),
            kind: AlertKind::SourceDown,
            rule: None,
            source: Some("payments".into()),
            description: "invariantd cannot reach this source: the rules that read it are blind until it is back.".into(),
            labels: BTreeMap::new(),
            count: 2,
            impact: None,
            oldest_age_seconds: None,
            sample: Vec::new(),
            rules: vec!["paid_implies_reserved".into(), "shipped_implies_paid".into()],
            links: BTreeMap::new(),
            ..firing()
        }
    }

    pub(crate) fn unknown() -> Notification {
        Notification {
            id: "unknown/paid_implies_reserved/1795000000000000/1".into(),
            group: "unknown/paid_implies_reserved".into(),
            kind: AlertKind::Unknown,
            count: 1,
            impact: None,
            oldest_age_seconds: None,
            sample: Vec::new(),
            error_kind: Some("timeout".into()),
            error: Some("dataset `payment` (source `payments`): the query ran longer than its statement_timeout of 30s".into()),
            links: rule_link(),
            ..firing()
        }
    }

    /// What dependency alerts link to: the rule, not its violations.
    fn rule_link() -> BTreeMap<String, String> {
        [
            (
                "page".to_string(),
                "https://invariantd.example.com/rules/paid_implies_reserved".to_string(),
            ),
            (
                "rule".to_string(),
                "https://invariantd.example.com/api/v1/rules/paid_implies_reserved".to_string(),
            ),
        ]
        .into()
    }

    pub(crate) fn stale() -> Notification {
        Notification {
            id: "stale/paid_implies_reserved/1795000000000000/1".into(),
            group: "stale/paid_implies_reserved".into(),
            kind: AlertKind::Stale,
            count: 1,
            impact: None,
            oldest_age_seconds: None,
            sample: Vec::new(),
            last_success: Some("2026-11-27T07:00:00Z".into()),
            links: rule_link(),
            ..firing()
        }
    }

    pub(crate) fn repairs_held() -> Notification {
        Notification {
            id: "repairs_held/paid_implies_reserved/1795000000000000/1".into(),
            group: "repairs_held/paid_implies_reserved".into(),
            kind: AlertKind::RepairsHeld,
            severity: "critical".into(),
            description: "A guardrail stopped the automatic repairs of this rule: the run found 150 violations, more than max_auto_per_run (10): none is applied automatically. Nothing is applied until a person approves or rejects them.".into(),
            count: 150,
            impact: None,
            oldest_age_seconds: None,
            sample: Vec::new(),
            links: [
                (
                    "repairs".to_string(),
                    "https://invariantd.example.com/api/v1/repairs?rule=paid_implies_reserved&state=pending".to_string(),
                ),
                (
                    "page".to_string(),
                    "https://invariantd.example.com/rules/paid_implies_reserved".to_string(),
                ),
            ]
            .into(),
            ..firing()
        }
    }

    #[test]
    fn email_subject_and_body() {
        for (name, n) in [
            ("firing", firing()),
            ("resolved", resolved()),
            ("source_down", source_down()),
            ("unknown", unknown()),
            ("stale", stale()),
            ("repairs_held", repairs_held()),
        ] {
            insta::assert_snapshot!(
                format!("email_{name}"),
                format!("Subject: {}\n\n{}", n.subject(), n.text())
            );
        }
    }

    #[test]
    fn notifications_round_trip_through_the_outbox() {
        for n in [
            firing(),
            resolved(),
            source_down(),
            unknown(),
            stale(),
            repairs_held(),
        ] {
            let text = serde_json::to_string(&n).unwrap();
            assert_eq!(serde_json::from_str::<Notification>(&text).unwrap(), n);
        }
    }
}
