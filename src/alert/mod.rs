//! Alerting: turning what the state store and the metrics say into announcements, and
//! delivering them.
//!
//! Alerts are grouped: one group per rule for its violations (`violation/RULE`), one per rule
//! that cannot be judged (`unknown/RULE`, with the typed error kind) or has not succeeded for
//! long (`stale/RULE`), one per source down (`source_down/SOURCE`) — never one per key.
//! `evaluate` observes every group, steps its lifecycle (`lifecycle`), and for each
//! announcement renders a `Notification` (`notification`), routes it (`route`) and queues it in
//! the state store's outbox for each receiver, in the same transaction as the group's new
//! state; and says when the next evaluation is due by time alone (`Evaluated::next_us`), so
//! that an evaluator with nothing else to wake it sleeps until then. `deliver` sends a
//! receiver's queue in order, retrying failures with backoff and jitter; each receiver has
//! its own, so one that is down delays no other. Receivers, each with its config and wire
//! format, are `receivers`.
//!
//! A rule unknown because a source is down is covered by that source's alert, not alerted
//! again; a run cancelled by a shutdown is not an incident. A silence that matches a group
//! keeps it from being announced (its lifecycle goes on, so the API shows it; a group still
//! firing when the silence ends is announced then); one for a key takes that key's violation
//! out of its group's count and sample.

pub mod group;
pub mod lifecycle;
pub mod route;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::lifecycle::backoff::backoff;
use crate::metrics::Metrics;
use crate::notification::AlertKind;
use crate::notification::Event;
use crate::notification::{ImpactSum, Notification, Sample};
use crate::receivers::Receiver;
use crate::rules::Rule;
use crate::state::{
    AlertGroupState, OutboxEntry, Silence, StateError, StateStore, ViolationFilter, ViolationState,
};
use crate::verdict::{ErrorKind, Outcome, RuleStatus};
use group::GroupKey;
use lifecycle::{Timing, micros};

/// What one evaluation looks at besides the store.
pub struct Inputs<'a> {
    pub config: &'a Config,
    pub rules: &'a [Rule],
    /// The sources known to be down now.
    pub sources_down: &'a [String],
    /// When the daemon started: a rule that has not succeeded since is stale once
    /// `stale_after` has passed.
    pub started_us: i64,
    /// The `alerting` lease this replica holds, which every group's write checks (none for a
    /// one-off evaluation).
    pub lease: Option<&'a crate::state::Lease>,
}

/// One group as observed now.
struct Observed {
    key: GroupKey,
    rule: Option<String>,
    source: Option<String>,
    failing: bool,
    count: i64,
    severity: String,
    description: String,
    labels: BTreeMap<String, String>,
    error_kind: Option<String>,
    error: Option<String>,
    rules: Vec<String>,
    last_success_us: Option<i64>,
    oldest_first_seen_us: Option<i64>,
    impact: Option<ImpactSum>,
    /// When what is observed changes by time alone (a rule turning stale), if it does.
    flips_us: Option<i64>,
    /// For a rule's violations: its status under its thresholds, the conditions that hold,
    /// and the keys its newest full sweep judged (when a `fraction` needs them).
    status: Option<crate::verdict::RuleStatus>,
    reasons: Vec<String>,
    judged: Option<i64>,
}

impl Observed {
    fn new(kind: AlertKind, name: &str, rule: Option<&Rule>) -> Observed {
        Observed {
            key: GroupKey::new(kind, name),
            rule: rule.map(|r| r.name.clone()),
            source: None,
            failing: false,
            count: 0,
            severity: rule.map_or("warning", |r| r.severity.as_str()).into(),
            description: rule.map(|r| r.description.clone()).unwrap_or_default(),
            labels: rule
                .map(|r| r.labels.iter().cloned().collect())
                .unwrap_or_default(),
            error_kind: None,
            error: None,
            rules: Vec::new(),
            last_success_us: None,
            oldest_first_seen_us: None,
            impact: None,
            flips_us: None,
            status: None,
            reasons: Vec::new(),
            judged: None,
        }
    }

    /// What routes match on: the rule's labels, then the alert's own fields.
    fn fields(&self) -> BTreeMap<String, String> {
        let mut fields = self.labels.clone();
        fields.insert("severity".into(), self.severity.clone());
        fields.insert("kind".into(), self.key.kind.as_str().into());
        if let Some(r) = &self.rule {
            fields.insert("rule".into(), r.clone());
        }
        if let Some(s) = &self.source {
            fields.insert("source".into(), s.clone());
        }
        fields
    }
}

fn rfc3339(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Every group, as observed now.
async fn observe(
    store: &StateStore,
    inputs: &Inputs<'_>,
    now_us: i64,
) -> Result<Vec<Observed>, StateError> {
    let alerting = &inputs.config.alerting;
    // Costs what is open, and two index lookups per rule (in one statement for many rules):
    // never a scan of the run history.
    let open = store.open_summaries().await?;
    let held = store.held_repairs().await?;
    let names: Vec<&str> = inputs.rules.iter().map(|r| r.name.as_str()).collect();
    let mut latest = store.latest_runs(&names).await?;
    let states = status::states(store, inputs.rules, &open).await?;
    let mut out = Vec::new();
    let mut blind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for rule in inputs.rules {
        let mut snap = open.get(&rule.name).cloned().unwrap_or_default();
        let (last, last_success) = latest.remove(&rule.name).unwrap_or_default();
        snap.last_success_us = last_success;
        let mut v = Observed::new(AlertKind::Violation, &rule.name, Some(rule));
        // Under its thresholds: violations that neither warn nor are an error fire nothing,
        // and the group carries the severity they have now.
        if let Some(state) = states.get(&rule.name) {
            v.failing = matches!(state.status, RuleStatus::Warn | RuleStatus::Error);
            v.severity = state.severity.as_str().into();
            v.status = Some(state.status);
            v.reasons = state.reasons.clone();
            v.judged = Some(state.tally.judged as i64);
        }
        v.count = snap.open;
        v.oldest_first_seen_us = snap.oldest_first_seen_us;
        v.impact = rule.impact.as_ref().map(|i| {
            let total = snap.impact.unwrap_or_default();
            ImpactSum {
                total,
                unit: i.unit.clone(),
                display: i.describe(total),
            }
        });
        out.push(v);

        let mut u = Observed::new(AlertKind::Unknown, &rule.name, Some(rule));
        u.description = format!(
            "invariantd cannot judge this rule: its violations are neither found nor cleared until it can. {}",
            rule.description
        );
        if let Some(run) = last.filter(|r| r.outcome == Outcome::Unknown) {
            let covered = matches!(
                run.error_kind,
                Some(ErrorKind::SourceUnreachable | ErrorKind::Cancelled)
            );
            u.failing = !covered;
            u.count = 1;
            u.error_kind = Some(
                run.error_kind
                    .map_or("unknown", ErrorKind::as_str)
                    .to_string(),
            );
            u.error = run.error;
        }
        out.push(u);

        let mut s = Observed::new(AlertKind::Stale, &rule.name, Some(rule));
        s.description = format!(
            "This rule has not run successfully for longer than alerting.stale_after (or twice its schedule): nobody is checking it. {}",
            rule.description
        );
        let at = DateTime::<Utc>::from_timestamp_micros(now_us).unwrap_or_default();
        let threshold = alerting.stale_after.max(rule.schedule.gap(at) * 2);
        let since = snap.last_success_us.unwrap_or(inputs.started_us);
        s.failing = now_us.saturating_sub(since) > micros(threshold);
        s.flips_us = (!s.failing).then(|| since.saturating_add(micros(threshold)) + 1);
        s.count = 1;
        s.last_success_us = snap.last_success_us;
        out.push(s);

        if rule.repair.is_some() {
            let mut h = Observed::new(AlertKind::RepairsHeld, &rule.name, Some(rule));
            // A guardrail that fired says more often that the check is broken than the data:
            // whoever owns the rule must look before anything is applied.
            h.severity = "critical".into();
            if let Some((count, why)) = held.get(&rule.name) {
                h.failing = *count > 0;
                h.count = *count;
                h.description = format!(
                    "A guardrail stopped the automatic repairs of this rule: {why}. Nothing is applied until a person approves or rejects them."
                );
            }
            out.push(h);
        }

        for d in &rule.datasets {
            blind
                .entry(d.source.as_str())
                .or_default()
                .push(rule.name.clone());
        }
    }
    for source in &inputs.config.sources {
        let mut rules = blind.remove(source.name.as_str()).unwrap_or_default();
        rules.dedup();
        let mut o = Observed::new(AlertKind::SourceDown, &source.name, None);
        o.source = Some(source.name.clone());
        o.description = "invariantd cannot reach this source: the rules that read it are blind until it is back.".into();
        o.severity = source_severity(inputs.rules, &source.name).into();
        o.failing = inputs.sources_down.contains(&source.name);
        o.count = rules.len() as i64;
        o.rules = rules;
        out.push(o);
    }
    Ok(out)
}

/// What one evaluation did, and when the next is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluated {
    /// Notifications queued.
    pub queued: usize,
    /// The earliest instant at which an evaluation would find something else with nothing
    /// else changing (no run recorded, no silence, repair, reload or source's health
    /// changed): a `for` running out, a repeat or a grown group's announcement, a rule
    /// turning stale, a silence ending, a re-send; never before `now_us`. `None` when nothing
    /// is due by time alone.
    pub next_us: Option<i64>,
    /// Each rule's status under its thresholds, from its open violations.
    pub statuses: std::collections::HashMap<String, RuleStatus>,
}

/// One evaluation: steps every group's lifecycle and queues the announcements.
pub async fn evaluate(
    store: &StateStore,
    inputs: &Inputs<'_>,
    now_us: i64,
) -> Result<Evaluated, StateError> {
    let alerting = &inputs.config.alerting;
    let timing = Timing {
        for_: alerting.for_,
        repeat_interval: alerting.repeat_interval,
        group_interval: alerting.group_interval,
    };
    let mut groups = store.alert_groups().await?;
    let mut observed = observe(store, inputs, now_us).await?;
    // Groups of rules and sources no longer configured resolve.
    for (key, state) in &groups {
        if state.firing && !observed.iter().any(|o| o.key.to_string() == *key) {
            let group = GroupKey::parse(key);
            let mut o = Observed::new(group.kind, &group.name, None);
            // The group as stored, even if written otherwise before.
            o.description = "No longer configured.".into();
            if group.kind == AlertKind::SourceDown {
                o.source = Some(group.name);
            } else {
                o.rule = Some(group.name);
            }
            observed.push(o);
        }
    }
    let silences = store.silences(false, now_us).await?;
    // A receiver that has not taken what is queued for it gets no re-sends on top.
    let backlog = store.undelivered().await?;
    let mut queued = 0;
    // Each silence's end announces what it held back.
    let mut next_us = silences.iter().map(|s| s.ends_us).min();
    let mut due = |at: Option<i64>| {
        if let Some(at) = at {
            next_us = Some(next_us.map_or(at, |n| n.min(at)));
        }
    };
    let mut statuses = std::collections::HashMap::new();
    for mut o in observed {
        if let (AlertKind::Violation, Some(rule), Some(s)) = (o.key.kind, &o.rule, o.status) {
            statuses.insert(rule.clone(), s);
        }
        let fields = o.fields();
        let silenced = silences
            .iter()
            .any(|s| s.key.is_none() && silence_matches(s, &fields));
        let (silenced_keys, silenced_impact) = silenced_keys(store, &o, &fields, &silences).await?;
        if !silenced_keys.is_empty() {
            o.count -= silenced_keys.len() as i64;
            o.failing = o.count > 0;
            let rule = inputs
                .rules
                .iter()
                .find(|r| Some(&r.name) == o.rule.as_ref());
            if let (Some(sum), Some(rule_impact)) =
                (o.impact.as_mut(), rule.and_then(|r| r.impact.as_ref()))
            {
                sum.total = sum.total.saturating_sub(silenced_impact);
                sum.display = rule_impact.describe(sum.total);
            }
            // What is left, under the thresholds.
            if let (Some(rule), Some(_)) = (rule, o.status) {
                let left = crate::state::RuleSnapshot {
                    open: o.count,
                    impact: o.impact.as_ref().map(|i| i.total),
                    ..Default::default()
                };
                let state = status::state_of(rule, &left, o.judged);
                o.failing = matches!(state.status, RuleStatus::Warn | RuleStatus::Error);
                o.severity = state.severity.as_str().into();
                o.status = Some(state.status);
                o.reasons = state.reasons;
            }
        }
        let stored = o.key.to_string();
        let state = groups.remove(&stored).unwrap_or_else(|| AlertGroupState {
            group_key: stored.clone(),
            ..Default::default()
        });
        let (mut next, event) = lifecycle::step(&state, o.failing, o.count, now_us, timing);
        due(o.flips_us);
        if silenced {
            // Not announced. A start or an end is still recorded, without a last announcement,
            // so that a group still firing when the silence ends is announced at once.
            match event {
                Some(Event::Firing | Event::Resolved) => next.last_sent_us = None,
                Some(Event::Repeat | Event::Grown | Event::Escalated) => next = state.clone(),
                None => {}
            }
            if next != state {
                store
                    .save_alert_group(&next, &[], now_us, inputs.lease)
                    .await?;
            }
            continue;
        }
        // Routed by what the group is now (its severity, its impact), after silences.
        let impact = o.impact.as_ref().map(|i| i.total);
        let receivers = route::receivers(&alerting.routes, &o.fields(), impact);
        let announced = status::settle(
            &state,
            &mut next,
            event,
            &o.severity,
            receivers.clone(),
            now_us,
        );
        let mut entries = Vec::new();
        // A silenced group's lifecycle waits for the silence's end, already counted.
        due(lifecycle::next_step(&next, o.failing, o.count, timing));
        if let Some(a) = announced {
            let event = a.event;
            o.severity = a.severity;
            let mut n =
                notification(store, inputs, &o, &next, event, now_us, &silenced_keys).await?;
            n.escalated_from = a.escalated_from;
            let text = serde_json::to_string(&n).expect("a notification serialises");
            entries.extend(a.to.iter().map(|r| OutboxEntry {
                message_id: n.id.clone(),
                receiver: r.clone(),
                notification: text.clone(),
            }));
            info!(
                group = %o.key,
                event = event.as_str(),
                count = o.count,
                receivers = %a.to.join(","),
                "Alert {}.", event.as_str()
            );
            if next.firing {
                next.refreshed_us = Some(now_us);
            }
        } else if next.firing {
            // Some receivers (Alertmanager) expect a firing alert to be sent again while it fires.
            let resend: Vec<(&String, Duration)> = receivers
                .iter()
                .filter(|r| backlog.get(*r).copied().unwrap_or(0) == 0)
                .filter_map(|r| Some((r, alerting.receiver(r)?.kind.resend_interval()?)))
                .collect();
            let every = resend.iter().map(|(_, d)| *d).min();
            let resend_due = every.is_some_and(|d| {
                now_us.saturating_sub(next.refreshed_us.unwrap_or(i64::MIN)) >= micros(d)
            });
            if resend_due {
                let mut n = notification(
                    store,
                    inputs,
                    &o,
                    &next,
                    Event::Repeat,
                    now_us,
                    &silenced_keys,
                )
                .await?;
                n.id = format!("{}/resend/{now_us}", n.id);
                let text = serde_json::to_string(&n).expect("a notification serialises");
                entries.extend(resend.iter().map(|(r, _)| OutboxEntry {
                    message_id: n.id.clone(),
                    receiver: (*r).clone(),
                    notification: text.clone(),
                }));
                next.refreshed_us = Some(now_us);
            }
            if let Some(d) = every {
                due(Some(
                    next.refreshed_us
                        .unwrap_or(now_us)
                        .saturating_add(micros(d)),
                ));
            }
            // A re-send held back by a backlog goes once it is taken: look again meanwhile.
            if receivers.iter().any(|r| {
                backlog.get(r).copied().unwrap_or(0) > 0
                    && alerting
                        .receiver(r)
                        .is_some_and(|c| c.kind.resend_interval().is_some())
            }) {
                due(Some(
                    now_us.saturating_add(micros(alerting.evaluation_interval)),
                ));
            }
        }
        if next != state || !entries.is_empty() {
            queued += entries.len();
            store
                .save_alert_group(&next, &entries, now_us, inputs.lease)
                .await?;
        }
    }
    Ok(Evaluated {
        statuses,
        queued,
        next_us: next_us.map(|n| n.max(now_us)),
    })
}

/// Whether every matcher of a silence holds for an alert with these fields.
pub fn silence_matches(silence: &Silence, fields: &BTreeMap<String, String>) -> bool {
    silence
        .matchers
        .iter()
        .all(|(k, v)| fields.get(k) == Some(v))
}

/// The open violations of a `violation` group that key silences cover, and their impact.
async fn silenced_keys(
    store: &StateStore,
    o: &Observed,
    fields: &BTreeMap<String, String>,
    silences: &[Silence],
) -> Result<(Vec<String>, rust_decimal::Decimal), StateError> {
    let mut keys = Vec::new();
    let mut impact = rust_decimal::Decimal::ZERO;
    if o.key.kind != AlertKind::Violation {
        return Ok((keys, impact));
    }
    for s in silences {
        let Some(key) = &s.key else { continue };
        if !silence_matches(s, fields) || keys.contains(key) {
            continue;
        }
        let open = store
            .violations(&ViolationFilter {
                rules: None,
                rule: o.rule.clone(),
                key: Some(key.clone()),
                state: Some(ViolationState::Open),
                limit: 1,
                ..Default::default()
            })
            .await?;
        if let Some(v) = open.first() {
            keys.push(key.clone());
            let value = v.impact.as_deref().and_then(|i| i.parse().ok());
            impact = impact.saturating_add(value.unwrap_or_default());
        }
    }
    Ok((keys, impact))
}

/// What a silence may match on, checked as routes are: an alert field or a rule's label, with
/// valid values, at least one of them.
pub fn check_silence(
    matchers: &BTreeMap<String, String>,
    key: Option<&str>,
    rules: &[Rule],
) -> Result<(), String> {
    use crate::config::MATCH_FIELDS;
    if matchers.is_empty() {
        return Err("a silence needs at least one matcher (such as rule)".into());
    }
    for (field, value) in matchers {
        let ok = match field.as_str() {
            "severity" => ["critical", "warning", "info"].contains(&value.as_str()),
            "kind" => AlertKind::parse(value).is_some(),
            "rule" => rules.iter().any(|r| &r.name == value),
            f if MATCH_FIELDS.contains(&f) => true,
            f => {
                if !rules.iter().any(|r| r.labels.iter().any(|(k, _)| k == f)) {
                    return Err(format!(
                        "matchers: `{f}` is not {} or a label of any rule",
                        MATCH_FIELDS.join(", ")
                    ));
                }
                // A silence no rule's labels can satisfy would silence nothing.
                let carries = |r: &&Rule| r.labels.iter().any(|(k, v)| k == f && v == value);
                if !rules.iter().any(|r| carries(&r)) {
                    let values: std::collections::BTreeSet<&str> = rules
                        .iter()
                        .flat_map(|r| r.labels.iter())
                        .filter(|(k, _)| k == f)
                        .map(|(_, v)| v.as_str())
                        .collect();
                    let values: Vec<&str> = values.into_iter().collect();
                    return Err(format!(
                        "matchers: no rule has {f}={value} (the rules' {f} labels: {})",
                        values.join(", ")
                    ));
                }
                if let Some(rule) = matchers.get("rule")
                    && !rules
                        .iter()
                        .filter(|r| &r.name == rule)
                        .any(|r| carries(&r))
                {
                    return Err(format!("matchers: rule `{rule}` has no label {f}={value}"));
                }
                true
            }
        };
        if !ok {
            return Err(format!("matchers: no {field} is `{value}`"));
        }
    }
    if key.is_some() && matchers.get("kind").is_some_and(|k| k != "violation") {
        return Err("a silence for one key applies to violations (kind: violation)".into());
    }
    Ok(())
}

/// A source down is as bad as the worst rule it blinds (`warning` when none reads it).
fn source_severity(rules: &[Rule], source: &str) -> &'static str {
    rules
        .iter()
        .filter(|r| r.datasets.iter().any(|d| d.source == source))
        .map(|r| r.severity)
        .min()
        .map_or("warning", |s| s.as_str())
}

/// The fields an alert group is matched on (routes, silences), from its key and the rules.
pub fn group_fields(group_key: &str, rules: &[Rule]) -> BTreeMap<String, String> {
    let GroupKey { kind, name } = GroupKey::parse(group_key);
    let name = name.as_str();
    let mut fields = BTreeMap::new();
    if kind == AlertKind::SourceDown {
        fields.insert("source".into(), name.to_string());
        fields.insert("severity".into(), source_severity(rules, name).into());
    } else if let Some(rule) = rules.iter().find(|r| r.name == name) {
        fields.extend(rule.labels.iter().cloned());
        fields.insert("rule".into(), name.to_string());
        fields.insert("severity".into(), rule.severity.as_str().into());
    } else {
        fields.insert("rule".into(), name.to_string());
    }
    fields.insert("kind".into(), kind.as_str().to_string());
    fields
}

async fn notification(
    store: &StateStore,
    inputs: &Inputs<'_>,
    o: &Observed,
    state: &AlertGroupState,
    event: Event,
    now_us: i64,
    silenced_keys: &[String],
) -> Result<Notification, StateError> {
    let alerting = &inputs.config.alerting;
    let started = state.started_us.unwrap_or(now_us);
    let mut sample = Vec::new();
    if o.key.kind == AlertKind::Violation && event != Event::Resolved && alerting.sample_size > 0 {
        let rows = store
            .violations(&ViolationFilter {
                rules: None,
                rule: o.rule.clone(),
                state: Some(ViolationState::Open),
                limit: (alerting.sample_size + silenced_keys.len()) as u32,
                ..Default::default()
            })
            .await?;
        sample = rows
            .into_iter()
            .filter(|v| !silenced_keys.contains(&v.key))
            .take(alerting.sample_size)
            .map(|v| Sample {
                key: crate::value::truncated(&v.key, 200).into_owned(),
                message: crate::value::truncated(&v.message, 500).into_owned(),
                since: rfc3339(v.first_seen_us),
            })
            .collect();
    }
    let mut links = BTreeMap::new();
    // The page first (the rule's view, or the front for a source), then the API.
    if let Some(base) = &alerting.base_url {
        let page = match &o.rule {
            Some(rule) => format!("{base}/rules/{rule}"),
            None => format!("{base}/"),
        };
        links.insert("page".into(), page);
    }
    if let (Some(base), Some(rule)) = (&alerting.base_url, &o.rule) {
        links.insert("rule".into(), format!("{base}/api/v1/rules/{rule}"));
        if o.key.kind == AlertKind::Violation {
            links.insert(
                "violations".into(),
                format!("{base}/api/v1/violations?rule={rule}&state=open"),
            );
        }
        if o.key.kind == AlertKind::RepairsHeld {
            links.remove("rule");
            links.insert(
                "repairs".into(),
                format!("{base}/api/v1/repairs?rule={rule}&state=pending"),
            );
        }
    }
    Ok(Notification {
        id: format!("{}/{started}/{}", o.key, state.sequence),
        group: o.key.to_string(),
        event,
        kind: o.key.kind,
        rule: o.rule.clone(),
        source: o.source.clone(),
        severity: o.severity.clone(),
        description: o.description.clone(),
        labels: o.labels.clone(),
        count: o.count,
        impact: o.impact.clone().filter(|_| event != Event::Resolved),
        status: o.status.map(|s| s.as_str().to_string()),
        reasons: o.reasons.clone(),
        escalated_from: None,
        oldest_age_seconds: o
            .oldest_first_seen_us
            .filter(|_| o.key.kind == AlertKind::Violation)
            .map(|f| (now_us - f) / 1_000_000),
        sample,
        error_kind: o.error_kind.clone(),
        error: o.error.clone(),
        rules: o.rules.clone(),
        last_success: o.last_success_us.map(rfc3339),
        starts_at: rfc3339(started),
        ends_at: (event == Event::Resolved).then(|| rfc3339(now_us)),
        at: rfc3339(now_us),
        links,
    })
}

/// How long a receiver's delivery waits with nothing queued for it before it looks anyway.
const EMPTY_OUTBOX_LOOK: Duration = Duration::from_secs(900);

/// Delivers `name`'s notifications in order until `stop`: waits for the next one (woken by
/// `wake` when some are queued), sends it, marks it sent, or records the failure and retries
/// after `backoff`. Before each attempt it asks `is_current` whether its receiver is still
/// configured as it was built, and returns if not: after a reload, nothing goes out through an
/// old receiver's address or credentials.
pub async fn deliver(
    store: Arc<StateStore>,
    metrics: Arc<Metrics>,
    name: String,
    receiver: Box<dyn Receiver>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    is_current: impl Fn() -> bool + Send,
) {
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let row = match store.next_notification(&name).await {
            Ok(row) => row,
            Err(e) => {
                error!(receiver = %name, error = %e, "Cannot read the alert outbox; trying again.");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    () = stop.cancelled() => return,
                }
            }
        };
        let Some(row) = row else {
            // Only the evaluator next to it queues (both run under the `alerting` lease), and
            // it wakes this: the look is a safety net, not how new notifications are found.
            tokio::select! {
                () = &mut notified => continue,
                () = tokio::time::sleep(EMPTY_OUTBOX_LOOK) => continue,
                () = stop.cancelled() => return,
            }
        };
        let now_us = Utc::now().timestamp_micros();
        if row.next_attempt_us > now_us {
            let wait = Duration::from_micros((row.next_attempt_us - now_us) as u64);
            tokio::select! {
                () = tokio::time::sleep(wait) => continue,
                () = stop.cancelled() => return,
            }
        }
        let n: Notification = match serde_json::from_str(&row.notification) {
            Ok(n) => n,
            Err(e) => {
                // Written by another version: nothing can send it. Dropped, and said so.
                error!(receiver = %name, message = %row.message_id, error = %e, "An alert in the outbox cannot be read; it is dropped.");
                metrics.alert_sent(&name, "dropped");
                let _ = store.notification_sent(row.id, now_us).await;
                continue;
            }
        };
        if !is_current() {
            return;
        }
        let result = tokio::select! {
            r = receiver.send(&n) => r,
            () = stop.cancelled() => return,
        };
        let done = Utc::now().timestamp_micros();
        let recorded = match result {
            Ok(()) => {
                metrics.alert_sent(&name, "sent");
                if row.attempts > 0 {
                    info!(receiver = %name, message = %n.id, attempts = row.attempts + 1, "Alert delivered after retrying.");
                }
                store.notification_sent(row.id, done).await
            }
            Err(e) => {
                metrics.alert_sent(&name, "failed");
                let wait = backoff(row.attempts);
                warn!(
                    receiver = %name,
                    message = %n.id,
                    attempt = row.attempts + 1,
                    retry_in = %humantime::format_duration(Duration::from_secs(wait.as_secs().max(1))),
                    error = %e,
                    "Alert not delivered; it will be retried."
                );
                store
                    .notification_failed(row.id, done + micros(wait), &e.message)
                    .await
            }
        };
        if let Err(e) = recorded {
            error!(receiver = %name, error = %e, "Cannot update the alert outbox; trying again.");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}
