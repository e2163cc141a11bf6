//! A rule's status in the daemon, and what an alert group announces when it changes while
//! firing. The status is the rule's thresholds (`warn_if`, `error_if`) applied to its open
//! violations: their count, their sum of `impact`, and their fraction of the keys its newest
//! full sweep judged. The alert evaluator, the metrics it sets and the API all read it from
//! here, so they agree. The escalation decision is pure (`escalation`).

use std::collections::HashMap;

use crate::notification::Event;
use crate::rules::Rule;
use crate::rules::thresholds::{Measure, Tally, effective_severity};
use crate::rules::{Severity, thresholds};
use crate::state::{AlertGroupState, RuleSnapshot, StateError, StateStore};
use crate::verdict::RuleStatus;

/// Where a rule stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleState {
    pub status: RuleStatus,
    /// The severity its violations carry now: its own when they are an error, at most
    /// `warning` when they warn; its own when it passes (for what it would announce).
    pub severity: Severity,
    pub tally: Tally,
    /// The threshold conditions that hold (`violations > 10`).
    pub reasons: Vec<String>,
}

/// The state of a rule whose open violations are `snap` (and whose newest full sweep judged
/// `judged` keys, when that matters).
pub fn state_of(rule: &Rule, snap: &RuleSnapshot, judged: Option<i64>) -> RuleState {
    let tally = Tally {
        violations: snap.open.max(0) as u64,
        // Not known (no full sweep of this version yet): no fraction condition holds.
        judged: judged.unwrap_or(0).max(0) as u64,
        impact: rule
            .impact
            .as_ref()
            .map(|_| snap.impact.unwrap_or_default()),
    };
    let status = rule.thresholds.status(&tally);
    RuleState {
        status,
        severity: effective_severity(rule.severity, status).unwrap_or(rule.severity),
        reasons: rule.thresholds.reasons(&tally, status),
        tally,
    }
}

/// Whether a rule's thresholds divide by the keys judged.
fn needs_judged(t: &thresholds::Thresholds) -> bool {
    [&t.warn_if, &t.error_if]
        .into_iter()
        .flatten()
        .flatten()
        .any(|c| c.measure == Measure::Fraction)
}

/// The keys the rule's newest full sweep judged, when its thresholds divide by them.
pub async fn judged(store: &StateStore, rule: &Rule) -> Result<Option<i64>, StateError> {
    if needs_judged(&rule.thresholds) {
        store.full_sweep_keys(&rule.name, &rule.fingerprint).await
    } else {
        Ok(None)
    }
}

/// Every rule's state, from the open violations (`open`, per rule): one more index lookup
/// for each rule with a `fraction` condition, none for the others.
pub async fn states(
    store: &StateStore,
    rules: &[Rule],
    open: &HashMap<String, RuleSnapshot>,
) -> Result<HashMap<String, RuleState>, StateError> {
    let mut out = HashMap::with_capacity(rules.len());
    for rule in rules {
        let judged = judged(store, rule).await?;
        let snap = open.get(&rule.name).cloned().unwrap_or_default();
        out.insert(rule.name.clone(), state_of(rule, &snap, judged));
    }
    Ok(out)
}

/// Whether severity `a` is more severe than `b` (as written: an unknown one counts as info).
fn more_severe(a: &str, b: &str) -> bool {
    let rank = |s: &str| Severity::parse(s).unwrap_or(Severity::Info);
    rank(a) < rank(b)
}

/// What a firing group announces beyond its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    /// The receivers to tell.
    pub to: Vec<String>,
    /// The severity rose (told to every receiver routed now); otherwise only the routing
    /// gained receivers (a route by `min_impact`), and only they are told.
    pub raised: bool,
}

/// A firing group last announced at `announced` to `notified`, now at `severity` and routed to
/// `routed`: an escalation when its severity rose, or when its routes reach receivers it
/// never told; nothing otherwise (a lower severity is recorded without an announcement).
pub fn escalation(
    announced: Option<&str>,
    severity: &str,
    notified: &[String],
    routed: &[String],
) -> Option<Escalation> {
    let raised = announced.is_some_and(|a| more_severe(severity, a));
    if raised {
        return Some(Escalation {
            to: routed.to_vec(),
            raised,
        });
    }
    let new: Vec<String> = routed
        .iter()
        .filter(|r| !notified.contains(r))
        .cloned()
        .collect();
    (!new.is_empty()).then_some(Escalation {
        to: new,
        raised: false,
    })
}

/// What one evaluation announces for a group, and to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub event: Event,
    pub to: Vec<String>,
    /// The severity it carries (a resolve carries the one its firing was told with).
    pub severity: String,
    /// The severity it rose from, for an escalation.
    pub escalated_from: Option<String>,
}

/// Settles what a group announces after its lifecycle stepped from `state` to `next` with
/// `event`, observed at `severity` and routed to `routed` now; records in `next` the severity
/// announced and the receivers told (a resolve goes to each receiver told it fired, whatever
/// the routes say now, at the highest severity they were told). A firing group whose
/// severity rose above the highest announced, or whose routes reach further, announces
/// `escalated`, once.
pub fn settle(
    state: &AlertGroupState,
    next: &mut AlertGroupState,
    event: Option<Event>,
    severity: &str,
    routed: Vec<String>,
    now_us: i64,
) -> Option<Announcement> {
    let tell = |next: &mut AlertGroupState, to: &[String]| {
        for r in to {
            if !next.receivers.contains(r) {
                next.receivers.push(r.clone());
            }
        }
        // The highest severity announced while it fires: a drop back below `error_if` and a
        // new crossing are not announced again (no message per flap), and the resolve ends
        // the alert at the severity receivers last heard of it.
        next.severity = match next.severity.take() {
            Some(peak) if more_severe(&peak, severity) => Some(peak),
            _ => Some(severity.to_string()),
        };
    };
    match event {
        Some(Event::Resolved) => {
            let mut to = routed;
            for r in &state.receivers {
                if !to.contains(r) {
                    to.push(r.clone());
                }
            }
            next.severity = None;
            next.receivers.clear();
            Some(Announcement {
                event: Event::Resolved,
                to,
                severity: state
                    .severity
                    .clone()
                    .unwrap_or_else(|| severity.to_string()),
                escalated_from: None,
            })
        }
        Some(event) => {
            tell(next, &routed);
            Some(Announcement {
                event,
                to: routed,
                severity: severity.to_string(),
                escalated_from: None,
            })
        }
        None if next.firing && state.severity.is_some() => {
            let found = escalation(
                state.severity.as_deref(),
                severity,
                &state.receivers,
                &routed,
            );
            tell(next, found.as_ref().map_or(&[][..], |e| &e.to));
            let e = found?;
            next.sequence += 1;
            next.last_sent_us = Some(now_us);
            Some(Announcement {
                event: Event::Escalated,
                severity: severity.to_string(),
                escalated_from: e.raised.then(|| state.severity.clone()).flatten(),
                to: e.to,
            })
        }
        None if next.firing => {
            // Fired before severities were kept: recorded, not announced again.
            tell(next, &routed);
            None
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_group_escalates_once_when_its_severity_rises_or_a_route_reaches_further() {
        let chat = names(&["chat"]);
        let both = names(&["chat", "pager"]);
        // Warning to critical: everyone routed now hears it.
        assert_eq!(
            escalation(Some("warning"), "critical", &chat, &both),
            Some(Escalation {
                to: both.clone(),
                raised: true
            })
        );
        // Announced at critical already: nothing more.
        assert_eq!(escalation(Some("critical"), "critical", &both, &both), None);
        // Down to warning: nothing announced.
        assert_eq!(escalation(Some("critical"), "warning", &both, &chat), None);
        // The same severity, a route by min_impact now matches: only the pager is told.
        assert_eq!(
            escalation(Some("warning"), "warning", &chat, &both),
            Some(Escalation {
                to: names(&["pager"]),
                raised: false
            })
        );
    }

    #[test]
    fn an_escalation_is_announced_once_and_the_resolve_reaches_everyone_told() {
        let firing = AlertGroupState {
            firing: true,
            sequence: 1,
            severity: Some("warning".into()),
            receivers: names(&["tickets"]),
            ..Default::default()
        };
        // Crossing error_if while firing: escalated, to the routes of now.
        let mut next = firing.clone();
        let a = settle(&firing, &mut next, None, "critical", names(&["pager"]), 7).unwrap();
        assert_eq!(a.event, Event::Escalated);
        assert_eq!(a.to, ["pager"]);
        assert_eq!(a.escalated_from.as_deref(), Some("warning"));
        assert_eq!(next.sequence, 2);
        assert_eq!(next.receivers, ["tickets", "pager"]);
        // The next evaluation at the same severity says nothing.
        let mut again = next.clone();
        assert_eq!(
            settle(&next, &mut again, None, "critical", names(&["pager"]), 8),
            None
        );
        assert_eq!(again, next);
        // Nor a drop back to warning and a new crossing: one escalation per firing.
        let mut dropped = next.clone();
        let tickets = names(&["tickets"]);
        assert_eq!(
            settle(&next, &mut dropped, None, "warning", tickets, 8),
            None
        );
        assert_eq!(dropped.severity.as_deref(), Some("critical"));
        let mut risen = dropped.clone();
        let pager = names(&["pager"]);
        assert_eq!(
            settle(&dropped, &mut risen, None, "critical", pager, 9),
            None
        );
        // The resolve goes to both, at the severity they were last told.
        let mut done = AlertGroupState {
            firing: false,
            ..next.clone()
        };
        let r = settle(
            &next,
            &mut done,
            Some(Event::Resolved),
            "critical",
            names(&["tickets"]),
            9,
        )
        .unwrap();
        assert_eq!(r.to, ["tickets", "pager"]);
        assert_eq!(r.severity, "critical");
        assert!(done.receivers.is_empty() && done.severity.is_none());
    }
}
