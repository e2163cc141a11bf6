//! What a reload changes, worked out in one place: the sources, rules and receivers added,
//! changed and removed, and whether who may use the API changed. A source is unchanged when
//! its URL (as expanded) and settings are, and its pool is kept; a rule when everything that
//! decides its runs is (its fingerprint, schedule, severity, labels, texts, impact and reads,
//! the sources it reads, and the settings all runs share): its scheduling loop goes on.
//! The reload's audit entry carries this diff.

use std::collections::BTreeMap;

use crate::auth::Tokens;
use crate::config::{Config, ReceiverConfig, SourceConfig};
use crate::rules::Rule;

/// Names added, changed and removed, each in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl Changes {
    /// From each side's (name, version) pairs.
    fn between<V: PartialEq>(old: BTreeMap<&str, V>, new: BTreeMap<&str, V>) -> Changes {
        let mut out = Changes::default();
        for (name, version) in &new {
            match old.get(name) {
                None => out.added.push(name.to_string()),
                Some(v) if v != version => out.changed.push(name.to_string()),
                Some(_) => {}
            }
        }
        out.removed = old
            .keys()
            .filter(|n| !new.contains_key(*n))
            .map(|n| n.to_string())
            .collect();
        out
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// Whether `name`, if it is in the new generation, is there unchanged.
    pub fn kept(&self, name: &str) -> bool {
        !self.added.iter().chain(&self.changed).any(|n| n == name)
    }

    /// Whether `name` is in both generations, unchanged.
    pub fn unchanged(&self, name: &str) -> bool {
        self.kept(name) && !self.removed.iter().any(|n| n == name)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadDiff {
    pub sources: Changes,
    pub rules: Changes,
    pub receivers: Changes,
    /// The API's tokens or its `auth` settings changed.
    pub auth: bool,
}

fn source_version(s: &SourceConfig) -> String {
    format!(
        "{} {:?} {} {:?} {:?} {:?}",
        s.identity,
        s.kind,
        s.max_connections,
        s.statement_timeout,
        s.connect_timeout,
        s.max_rows_per_second
    )
}

fn rule_version(r: &Rule) -> String {
    format!(
        "{} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
        r.fingerprint,
        r.schedule,
        r.severity,
        r.labels,
        r.description,
        r.message,
        r.impact.as_ref().map(|i| (&i.value, &i.unit, i.scale)),
        r.incremental,
        r.consistent_cut,
    )
}

fn sources(c: &Config) -> BTreeMap<&str, String> {
    c.sources
        .iter()
        .map(|s| (s.name.as_str(), source_version(s)))
        .collect()
}

fn rules(rs: &[Rule]) -> BTreeMap<&str, String> {
    rs.iter()
        .map(|r| (r.name.as_str(), rule_version(r)))
        .collect()
}

/// Receivers compare whole, secrets included (their `Debug` form hides those).
fn receivers(c: &Config) -> BTreeMap<&str, &ReceiverConfig> {
    c.alerting
        .receivers
        .iter()
        .map(|r| (r.name.as_str(), r))
        .collect()
}

impl ReloadDiff {
    pub fn between(
        (old, old_rules, old_tokens): (&Config, &[Rule], &Tokens),
        (new, new_rules, new_tokens): (&Config, &[Rule], &Tokens),
    ) -> ReloadDiff {
        // Rules are unchanged only if the sources they read are.
        let mut rule_changes = Changes::between(rules(old_rules), rules(new_rules));
        let source_changes = Changes::between(sources(old), sources(new));
        for r in new_rules {
            let reads_changed = r.datasets.iter().any(|d| !source_changes.kept(&d.source));
            if reads_changed && rule_changes.kept(&r.name) && !rule_changes.added.contains(&r.name)
            {
                rule_changes.changed.push(r.name.clone());
            }
        }
        // What every rule's runs share: when it changes, every rule is changed.
        if old.metric_rule_labels != new.metric_rule_labels
            || old.max_concurrent_runs != new.max_concurrent_runs
        {
            for r in new_rules {
                if old_rules.iter().any(|o| o.name == r.name) {
                    rule_changes.changed.push(r.name.clone());
                }
            }
        }
        rule_changes.changed.sort();
        rule_changes.changed.dedup();
        ReloadDiff {
            sources: source_changes,
            rules: rule_changes,
            receivers: Changes::between(receivers(old), receivers(new)),
            auth: old.auth != new.auth || old_tokens != new_tokens,
        }
    }
}
