//! Prometheus metrics: every name in one place, through the official client
//! (`prometheus-client`), plus the process metrics every Prometheus client exports (`process`).
//! Labels come from bounded sets (rule, severity, outcome, dataset, source, receiver, kind,
//! status, unit, and the rule labels named in `metrics.rule_labels`) — never a key, an id or an
//! error text.
//!
//! HELP texts are written without their closing full stop: the client adds it.
//!
//! Values survive restarts: at start-up counters and gauges are restored from plain snapshots
//! of the state store (`RuleTotals`, `RuleSnapshot`: cumulative counters, open violations, last
//! success) — this module never queries the store — and only the rules loaded now get series,
//! so a deleted rule's series disappear. The two histograms (run duration, time to
//! consistency) start afresh.
//!
//! With several replicas on one state store, the cluster-wide series (`shared`: what the store
//! holds for every rule) are exported by the replica holding the `leader` lease alone, which
//! restores them again each round; every replica exports its own (`registry`), with the
//! `invariantd_replica_*` series.

mod labels;
mod process;

use labels::*;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::health::Health;
use crate::rules::Rule;
use crate::state::{RuleSnapshot, RuleTotals};
use crate::verdict::{ErrorKind, Outcome, RuleRun};

/// A per-rule series' labels: `rule`, the family's own, then the configured rule labels.
type Labels = Vec<(String, String)>;

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    /// This replica's own series: process, build, run durations, skips, holds, deliveries,
    /// sources as it sees them, and `invariantd_replica_*`.
    registry: Registry,
    /// The cluster-wide series, from the state store (open violations, money at risk, run and
    /// violation totals, last success, repairs): exported only while `exports_shared`.
    shared: Registry,
    /// Whether this replica exports `shared`: the `leader` lease's holder (a lone daemon is
    /// always its own leader).
    exports_shared: std::sync::atomic::AtomicBool,
    replica_info: Family<ReplicaLabel, Gauge>,
    replica_rules: Gauge,
    replica_leader: Gauge,
    replica_alerting: Gauge,
    replica_runs: Family<OutcomeLabel, Counter>,
    replica_ranges: Family<OutcomeLabel, Counter>,
    violations_open: Family<Labels, Gauge>,
    violations_detected: Family<Labels, Counter>,
    violations_resolved: Family<Labels, Counter>,
    oldest_open_age: Family<Labels, FloatGauge>,
    /// The open violations' impact summed, per rule with an `impact` (money at risk).
    impact: Family<Labels, FloatGauge>,
    rule_runs: Family<Labels, Counter>,
    rule_runs_skipped: Family<Labels, Counter>,
    run_duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// How long violations stayed open until resolved: the time to consistency.
    open_duration: Family<Labels, Histogram, fn() -> Histogram>,
    last_success: Family<Labels, FloatGauge>,
    last_full_sweep: Family<Labels, FloatGauge>,
    rows_scanned: Family<Labels, Counter>,
    run_errors: Family<Labels, Counter>,
    rule_keys: Family<Labels, Gauge>,
    /// 1 for each rule's status under its thresholds, 0 for the others: set by the replica
    /// that evaluates alerts, from what it announces.
    rule_status: Family<Labels, Gauge>,
    source_up: Family<SourceLabel, Gauge>,
    repairs: Family<Labels, Counter>,
    repairs_pending: Family<Labels, Gauge>,
    repairs_oldest_pending: Family<Labels, FloatGauge>,
    repairs_held: Family<Labels, Counter>,
    alerts_sent: Family<ReceiverOutcome, Counter>,
    /// Receivers configured, by kind (email, webhook, alertmanager).
    alert_receivers: Family<KindLabel, Gauge>,
    audit_entries: Gauge,
    audit_head: Gauge,
    /// The rule labels (`metrics.rule_labels`) every per-rule series carries.
    label_names: Mutex<Vec<String>>,
    /// Rule → (its labels, first_seen of its oldest open violation), for the age at scrape.
    oldest: Mutex<HashMap<String, (Labels, Option<i64>)>>,
    /// Rule → (its labels, since when its oldest repair waits for a person), for the age at
    /// scrape: the repair service reads the store only when something changed.
    oldest_repair: Mutex<HashMap<String, (Labels, Option<i64>)>>,
    /// When each source was last seen by a run (or a probe), to know which need a probe.
    /// Where `source_up` is read from at each scrape.
    health: Arc<Health>,
    /// The sources `source_up` has a series for.
    sources_exported: Mutex<std::collections::BTreeSet<String>>,
}

/// A minute … a week: the range an "inconsistencies heal within N" objective is set in.
fn open_duration_histogram() -> Histogram {
    Histogram::new([
        60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0, 259200.0, 604800.0,
    ])
}

fn duration_histogram() -> Histogram {
    // 10 ms … about 5.5 minutes.
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Vec::new(), Arc::default())
    }
}

impl Metrics {
    /// The metrics, with `rule_labels` (validated names) on every per-rule series.
    pub fn new(rule_labels: Vec<String>, health: Arc<Health>) -> Metrics {
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector::new()));
        let m = Metrics {
            violations_open: Family::default(),
            violations_detected: Family::default(),
            violations_resolved: Family::default(),
            oldest_open_age: Family::default(),
            impact: Family::default(),
            rule_runs: Family::default(),
            rule_runs_skipped: Family::default(),
            run_duration: Family::new_with_constructor(duration_histogram),
            open_duration: Family::new_with_constructor(open_duration_histogram),
            last_success: Family::default(),
            last_full_sweep: Family::default(),
            rows_scanned: Family::default(),
            run_errors: Family::default(),
            rule_keys: Family::default(),
            rule_status: Family::default(),
            source_up: Family::default(),
            repairs: Family::default(),
            repairs_pending: Family::default(),
            repairs_oldest_pending: Family::default(),
            repairs_held: Family::default(),
            alerts_sent: Family::default(),
            alert_receivers: Family::default(),
            audit_entries: Gauge::default(),
            audit_head: Gauge::default(),
            label_names: Mutex::new(rule_labels),
            oldest: Mutex::new(HashMap::new()),
            oldest_repair: Mutex::new(HashMap::new()),
            health,
            sources_exported: Mutex::default(),
            registry: Registry::default(),
            shared: Registry::default(),
            exports_shared: std::sync::atomic::AtomicBool::new(true),
            replica_info: Family::default(),
            replica_rules: Gauge::default(),
            replica_leader: Gauge::default(),
            replica_alerting: Gauge::default(),
            replica_runs: Family::default(),
            replica_ranges: Family::default(),
        };
        let mut shared_root = Registry::default();
        let shared = shared_root.sub_registry_with_prefix("invariantd");
        let registry = root.sub_registry_with_prefix("invariantd");
        registry.register(
            "rule_status",
            "Each rule's status under its thresholds (warn_if, error_if): 1 for the one it is in (pass, warn, error, unknown), 0 for the others; exported by the replica that evaluates alerts",
            m.rule_status.clone(),
        );
        shared.register(
            "violations_open",
            "Open violations, by rule",
            m.violations_open.clone(),
        );
        shared.register(
            "violations_detected",
            "Violations opened; a violation that comes back counts again",
            m.violations_detected.clone(),
        );
        shared.register(
            "violations_resolved",
            "Violations resolved because their key holds again",
            m.violations_resolved.clone(),
        );
        shared.register_with_unit(
            "oldest_open_violation_age",
            "Age of the rule's oldest open violation",
            Unit::Seconds,
            m.oldest_open_age.clone(),
        );
        shared.register(
            "violations_impact",
            "What the rule's open violations put at risk (its impact value summed), in the rule's impact unit",
            m.impact.clone(),
        );
        shared.register(
            "rule_runs",
            "Rule runs by outcome: pass, fail (violations found) or unknown (could not run)",
            m.rule_runs.clone(),
        );
        registry.register(
            "rule_runs_skipped",
            "Scheduled runs skipped because the previous run of the rule was still going",
            m.rule_runs_skipped.clone(),
        );
        registry.register_with_unit(
            "rule_run_duration",
            "Duration of rule runs",
            Unit::Seconds,
            m.run_duration.clone(),
        );
        registry.register_with_unit(
            "violation_open_duration",
            "How long violations stayed open until they were resolved (time to consistency)",
            Unit::Seconds,
            m.open_duration.clone(),
        );
        shared.register_with_unit(
            "rule_last_success_timestamp",
            "When the rule last ran to the end as a Unix timestamp, 0 if it never has",
            Unit::Seconds,
            m.last_success.clone(),
        );
        shared.register_with_unit(
            "rule_last_full_sweep_timestamp",
            "When the rule's last full sweep that judged every key started, as a Unix timestamp; 0 if this version of the rule has had none (incremental runs judge only what changed)",
            Unit::Seconds,
            m.last_full_sweep.clone(),
        );
        shared.register(
            "rows_scanned",
            "Rows read from each dataset of each rule",
            m.rows_scanned.clone(),
        );
        shared.register(
            "rule_run_errors",
            "Rule runs that ended with an error, by kind: source_unreachable, query_failed, timeout, schema_mismatch, duplicate_rows, evaluation or cancelled",
            m.run_errors.clone(),
        );
        shared.register(
            "rule_keys",
            "Keys in the rule's last finished run by status: judged, in_grace (changed too recently to judge) or error (could not be judged)",
            m.rule_keys.clone(),
        );
        registry.register(
            "source_up",
            "Whether invariantd could last connect to the source (1) or not (0), from rule runs or its own probe",
            m.source_up.clone(),
        );
        shared.register(
            "repairs",
            "Repairs that ended, by outcome: applied, failed, skipped, rejected or needs_manual",
            m.repairs.clone(),
        );
        shared.register(
            "repairs_pending",
            "Repairs waiting for approval",
            m.repairs_pending.clone(),
        );
        shared.register(
            "repairs_oldest_pending_age_seconds",
            "How long the rule's oldest repair has been waiting for approval (0 when none waits)",
            m.repairs_oldest_pending.clone(),
        );
        registry.register(
            "repairs_held",
            "Runs whose automatic repairs a guardrail held for a person, by reason: dry_run, not_enabled, too_many or suspicious",
            m.repairs_held.clone(),
        );
        registry.register(
            "alerts_sent",
            "Alert notifications by receiver and outcome",
            m.alerts_sent.clone(),
        );
        shared.register(
            "alert_receivers",
            "Alert receivers configured, by kind: with an alertmanager receiver, the shipped Prometheus rules that repeat invariantd's own alerts stand down",
            m.alert_receivers.clone(),
        );
        shared.register(
            "audit_entries",
            "Entries in the audit chain: keep it elsewhere with audit_head_fingerprint, and a log cut short shows as a drop",
            m.audit_entries.clone(),
        );
        shared.register(
            "audit_head_fingerprint",
            "The first 48 bits of the audit chain's newest hash, as a number (the hash in full: /api/v1/audit/head)",
            m.audit_head.clone(),
        );
        let build_info: Family<BuildInfo, Gauge> = Family::default();
        build_info
            .get_or_create(&BuildInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register(
            "build_info",
            "The running version; the value is always 1",
            build_info,
        );
        registry.register(
            "replica_info",
            "This replica's identity (random per process); the value is always 1",
            m.replica_info.clone(),
        );
        registry.register(
            "replica_rules",
            "Rules this replica holds the lease of, and runs",
            m.replica_rules.clone(),
        );
        registry.register(
            "replica_leader",
            "Whether this replica holds the leader lease and exports the cluster-wide series (1) or not (0)",
            m.replica_leader.clone(),
        );
        registry.register(
            "replica_alerting",
            "Whether this replica holds the alerting lease and evaluates and delivers alerts (1) or not (0)",
            m.replica_alerting.clone(),
        );
        registry.register(
            "replica_runs",
            "Rule runs this replica made since it started, by outcome (the cluster's totals: invariantd_rule_runs_total, from the leader)",
            m.replica_runs.clone(),
        );
        registry.register(
            "replica_ranges",
            "Key ranges of partitioned sweeps this replica read since it started: written (its run handed to the rule's holder) or lost (its lease lost before it could write)",
            m.replica_ranges.clone(),
        );
        Metrics {
            registry: root,
            shared: shared_root,
            ..m
        }
    }

    /// A rule's labels for a family: `rule`, then `extra`, then the configured rule labels
    /// (empty where the rule has none, which Prometheus treats as absent).
    fn labels(&self, rule: &Rule, extra: &[(&str, &str)]) -> Labels {
        let names = self.label_names.lock().expect("metrics lock");
        let mut labels = Vec::with_capacity(1 + extra.len() + names.len());
        labels.push(("rule".to_string(), rule.name.clone()));
        labels.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string())),
        );
        for name in names.iter() {
            let value = rule
                .labels
                .iter()
                .find(|(k, _)| k == name)
                .map_or(String::new(), |(_, v)| v.clone());
            labels.push((name.clone(), value));
        }
        labels
    }

    /// Puts new rule label names in force (on reload, after `forget` and before `restore`).
    pub fn set_rule_labels(&self, names: Vec<String>) {
        *self.label_names.lock().expect("metrics lock") = names;
    }

    /// Sets every series of `rules` from the state store's totals and snapshots, as after a
    /// restart; every rule has each series from the start, at 0 until something happens. Done
    /// again (by the leader, for the rules other replicas run), a counter is lifted to the
    /// store's total and never lowered.
    pub fn restore(
        &self,
        rules: &[Rule],
        totals: &HashMap<String, RuleTotals>,
        snapshots: &HashMap<String, RuleSnapshot>,
    ) {
        fn lift(counter: &Counter, to: u64) {
            counter.inc_by(to.saturating_sub(counter.get()));
        }
        let none = RuleTotals::default();
        let mut oldest = self.oldest.lock().expect("metrics lock");
        for rule in rules {
            let t = totals.get(&rule.name).unwrap_or(&none);
            let r = self.labels(rule, &[]);
            lift(&self.violations_detected.get_or_create(&r), t.detected);
            lift(&self.violations_resolved.get_or_create(&r), t.resolved);
            self.rule_runs_skipped.get_or_create(&r).inc_by(0);
            // Empty until a violation resolves; there from start-up for queries and alerts.
            let _ = self.open_duration.get_or_create(&r);
            for outcome in Outcome::ALL {
                lift(
                    &self
                        .rule_runs
                        .get_or_create(&self.labels(rule, &[("outcome", outcome.as_str())])),
                    t.runs.get(&outcome).copied().unwrap_or(0),
                );
            }
            for kind in ErrorKind::ALL {
                lift(
                    &self
                        .run_errors
                        .get_or_create(&self.labels(rule, &[("kind", kind.as_str())])),
                    t.errors.get(&kind).copied().unwrap_or(0),
                );
            }
            for d in &rule.datasets {
                lift(
                    &self
                        .rows_scanned
                        .get_or_create(&self.labels(rule, &[("dataset", &d.name)])),
                    t.rows_scanned.get(&d.name).copied().unwrap_or(0),
                );
            }
            let snap = snapshots.get(&rule.name).cloned().unwrap_or_default();
            self.set_open(rule, &snap, &mut oldest);
            let last = snap.last_success_us.map_or(0.0, |t| t as f64 / 1e6);
            self.last_success.get_or_create(&r).set(last);
            if let Some(counts) = snap.last_keys {
                self.set_keys(rule, counts);
            }
        }
    }

    /// When the rule's last full sweep started (microseconds), as restored from the store or
    /// seen; 0 when there was none.
    pub fn set_last_full_sweep(&self, rule: &Rule, started_us: Option<i64>) {
        self.last_full_sweep
            .get_or_create(&self.labels(rule, &[]))
            .set(started_us.map_or(0.0, |t| t as f64 / 1e6));
    }

    fn set_keys(&self, rule: &Rule, counts: [i64; 3]) {
        for (status, n) in KEY_STATUSES.iter().zip(counts) {
            self.rule_keys
                .get_or_create(&self.labels(rule, &[("status", status)]))
                .set(n);
        }
    }

    fn set_open(
        &self,
        rule: &Rule,
        snap: &RuleSnapshot,
        oldest: &mut HashMap<String, (Labels, Option<i64>)>,
    ) {
        self.violations_open
            .get_or_create(&self.labels(rule, &[("severity", rule.severity.as_str())]))
            .set(snap.open);
        oldest.insert(
            rule.name.clone(),
            (self.labels(rule, &[]), snap.oldest_first_seen_us),
        );
        if let Some(i) = &rule.impact {
            self.impact
                .get_or_create(&self.labels(rule, &[("unit", &i.unit)]))
                // A gauge is a double; the API and the alerts carry the exact sum.
                .set(
                    rust_decimal::prelude::ToPrimitive::to_f64(&snap.impact.unwrap_or_default())
                        .unwrap_or(0.0),
                );
        }
    }

    /// Sets the repair series of the rules with a `repair:` section from the store: the
    /// cumulative outcomes (`totals`) and what waits for a person (`pending`).
    pub fn repairs(
        &self,
        rules: &[Rule],
        totals: &HashMap<String, RuleTotals>,
        pending: &HashMap<String, crate::state::RepairSummary>,
    ) {
        let mut oldest = self.oldest_repair.lock().expect("metrics lock");
        oldest.clear();
        for rule in rules.iter().filter(|r| r.repair.is_some()) {
            for outcome in REPAIR_OUTCOMES {
                let counter = self
                    .repairs
                    .get_or_create(&self.labels(rule, &[("outcome", outcome)]));
                let stored = totals
                    .get(&rule.name)
                    .and_then(|t| t.repairs.get(outcome))
                    .copied()
                    .unwrap_or(0);
                counter.inc_by(stored.saturating_sub(counter.get()));
            }
            // From the first tick, so that `increase()` sees the first hold.
            for reason in HELD_REASONS {
                self.repairs_held
                    .get_or_create(&self.labels(rule, &[("reason", reason)]))
                    .inc_by(0);
            }
            let p = pending.get(&rule.name).cloned().unwrap_or_default();
            let r = self.labels(rule, &[]);
            self.repairs_pending.get_or_create(&r).set(p.pending as i64);
            oldest.insert(rule.name.clone(), (r, p.oldest_pending_us));
        }
    }

    /// A guardrail held a run's automatic repairs.
    /// The audit chain's head: how many entries, and the newest hash.
    pub fn set_audit_head(&self, entries: i64, hash: Option<&str>) {
        self.audit_entries.set(entries);
        let hex = hash.map_or("", |h| h.trim_start_matches("hmac-sha256:"));
        self.audit_head.set(
            hex.get(..12)
                .and_then(|h| i64::from_str_radix(h, 16).ok())
                .unwrap_or(0),
        );
    }

    pub fn repairs_held(&self, rule: &Rule, reason: &str) {
        self.repairs_held
            .get_or_create(&self.labels(rule, &[("reason", reason)]))
            .inc();
    }

    /// Accounts for one recorded run; `snap` is the rule's state after it, and `healed_after`
    /// how long each violation it resolved had been open.
    pub fn observe(
        &self,
        rule: &Rule,
        run: &RuleRun,
        opened: u64,
        healed_after: &[std::time::Duration],
        snap: &RuleSnapshot,
    ) {
        let resolved = healed_after.len() as u64;
        let r = self.labels(rule, &[]);
        self.rule_runs
            .get_or_create(&self.labels(rule, &[("outcome", run.outcome.as_str())]))
            .inc();
        self.replica_runs
            .get_or_create(&OutcomeLabel {
                outcome: run.outcome.as_str().to_string(),
            })
            .inc();
        self.run_duration
            .get_or_create(&r)
            .observe(run.duration.as_secs_f64());
        self.violations_detected.get_or_create(&r).inc_by(opened);
        self.violations_resolved.get_or_create(&r).inc_by(resolved);
        let histogram = self.open_duration.get_or_create(&r);
        for d in healed_after {
            histogram.observe(d.as_secs_f64());
        }
        if let Some(kind) = run.error_kind() {
            self.run_errors
                .get_or_create(&self.labels(rule, &[("kind", kind.as_str())]))
                .inc();
        }
        for (d, rows) in rule.datasets.iter().zip(&run.rows_scanned) {
            self.rows_scanned
                .get_or_create(&self.labels(rule, &[("dataset", &d.name)]))
                .inc_by(*rows);
        }
        if run.mode == crate::verdict::RunMode::Full
            && matches!(run.outcome, Outcome::Pass | Outcome::Fail)
        {
            self.set_last_full_sweep(rule, Some(run.started_at.timestamp_micros()));
        }
        if run.finished {
            let end = run.started_at.timestamp_micros() + run.duration.as_micros() as i64;
            self.last_success.get_or_create(&r).set(end as f64 / 1e6);
            self.set_keys(
                rule,
                [
                    run.keys_judged as i64,
                    run.keys_in_grace as i64,
                    run.key_errors_total as i64,
                ],
            );
        }
        let mut oldest = self.oldest.lock().expect("metrics lock");
        self.set_open(rule, snap, &mut oldest);
    }

    /// A repair resolved one of the rule's violations, open for `open_for`; `snap` is the
    /// rule's state after it.
    pub fn resolved_by_repair(
        &self,
        rule: &Rule,
        open_for: std::time::Duration,
        snap: &RuleSnapshot,
    ) {
        let r = self.labels(rule, &[]);
        self.violations_resolved.get_or_create(&r).inc();
        self.open_duration
            .get_or_create(&r)
            .observe(open_for.as_secs_f64());
        let mut oldest = self.oldest.lock().expect("metrics lock");
        self.set_open(rule, snap, &mut oldest);
    }

    /// The receivers in force: each has its delivery series from start-up (so that
    /// `increase()` sees the first failure), and the count per kind is exported. Receivers
    /// removed by a reload keep their counters (cumulative) until the restart.
    pub fn set_receivers(&self, receivers: &[(String, &'static str)]) {
        for (name, _) in receivers {
            for outcome in DELIVERY_OUTCOMES {
                self.alerts_sent
                    .get_or_create(&ReceiverOutcome {
                        receiver: name.clone(),
                        outcome: outcome.to_string(),
                    })
                    .inc_by(0);
            }
        }
        for kind in crate::receivers::KINDS {
            let n = receivers.iter().filter(|(_, k)| k == kind).count();
            self.alert_receivers
                .get_or_create(&KindLabel {
                    kind: kind.to_string(),
                })
                .set(n as i64);
        }
    }

    /// A delivery attempt of an alert: `sent`, `failed` (to be retried) or `dropped`.
    pub fn alert_sent(&self, receiver: &str, outcome: &str) {
        self.alerts_sent
            .get_or_create(&ReceiverOutcome {
                receiver: receiver.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Removes every series of these rules (before a reload restores the new set's).
    pub fn forget(&self, rules: &[Rule]) {
        let mut oldest = self.oldest.lock().expect("metrics lock");
        for rule in rules {
            let r = self.labels(rule, &[]);
            self.violations_open
                .remove(&self.labels(rule, &[("severity", rule.severity.as_str())]));
            self.violations_detected.remove(&r);
            self.violations_resolved.remove(&r);
            self.oldest_open_age.remove(&r);
            if let Some(i) = &rule.impact {
                self.impact.remove(&self.labels(rule, &[("unit", &i.unit)]));
            }
            self.rule_runs_skipped.remove(&r);
            for s in crate::verdict::RuleStatus::ALL {
                self.rule_status
                    .remove(&self.labels(rule, &[("status", s.as_str())]));
            }
            self.run_duration.remove(&r);
            self.open_duration.remove(&r);
            self.last_success.remove(&r);
            self.last_full_sweep.remove(&r);
            self.repairs_pending.remove(&r);
            self.repairs_oldest_pending.remove(&r);
            self.oldest_repair
                .lock()
                .expect("metrics lock")
                .remove(&rule.name);
            for outcome in REPAIR_OUTCOMES {
                self.repairs
                    .remove(&self.labels(rule, &[("outcome", outcome)]));
            }
            for reason in HELD_REASONS {
                self.repairs_held
                    .remove(&self.labels(rule, &[("reason", reason)]));
            }
            for outcome in Outcome::ALL {
                self.rule_runs
                    .remove(&self.labels(rule, &[("outcome", outcome.as_str())]));
            }
            for kind in ErrorKind::ALL {
                self.run_errors
                    .remove(&self.labels(rule, &[("kind", kind.as_str())]));
            }
            for status in KEY_STATUSES {
                self.rule_keys
                    .remove(&self.labels(rule, &[("status", status)]));
            }
            for d in &rule.datasets {
                self.rows_scanned
                    .remove(&self.labels(rule, &[("dataset", &d.name)]));
            }
            oldest.remove(&rule.name);
        }
    }

    /// This replica's identity and leases (from the lease keeper). Only the holder of
    /// `leader` exports the cluster-wide series, so that a sum over replicas counts each once.
    pub fn set_replica(&self, replica: &str, rules: usize, leader: bool, alerting: bool) {
        let info = ReplicaLabel {
            replica: replica.to_string(),
        };
        if self.replica_info.get(&info).is_none() {
            self.replica_info.clear();
            self.replica_info.get_or_create(&info).set(1);
        }
        self.replica_rules.set(rules as i64);
        self.replica_leader.set(i64::from(leader));
        self.replica_alerting.set(i64::from(alerting));
        self.exports_shared
            .store(leader, std::sync::atomic::Ordering::Relaxed);
    }

    /// The rules' statuses as the alert evaluator found them; none when `None` (this replica
    /// no longer evaluates alerts: another one exports them).
    pub fn set_rule_statuses(
        &self,
        rules: &[Rule],
        statuses: Option<&HashMap<String, crate::verdict::RuleStatus>>,
    ) {
        self.rule_status.clear();
        let Some(statuses) = statuses else { return };
        for rule in rules {
            let Some(now) = statuses.get(&rule.name) else {
                continue;
            };
            for s in crate::verdict::RuleStatus::ALL {
                self.rule_status
                    .get_or_create(&self.labels(rule, &[("status", s.as_str())]))
                    .set(i64::from(s == *now));
            }
        }
    }

    /// A key range of a partitioned sweep read here: `written`, or `lost` with its lease.
    pub fn range_read(&self, outcome: &str) {
        self.replica_ranges
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn skipped(&self, rule: &Rule) {
        self.rule_runs_skipped
            .get_or_create(&self.labels(rule, &[]))
            .inc();
    }

    /// The classic Prometheus text format (what `promtool check metrics` and every Prometheus
    /// version read), with ages computed at `now_us`.
    pub fn render(&self, now_us: i64) -> String {
        // Sources health no longer knows lose their series; the others are set in place, so
        // a scrape running alongside never sees them missing.
        let sources = self.health.sources();
        let mut exported = self.sources_exported.lock().expect("metrics lock");
        for gone in exported.iter().filter(|s| !sources.contains_key(*s)) {
            self.source_up.remove(&SourceLabel {
                source: gone.clone(),
            });
        }
        for (source, h) in &sources {
            self.source_up
                .get_or_create(&SourceLabel {
                    source: source.clone(),
                })
                .set(i64::from(h.up));
        }
        *exported = sources.keys().cloned().collect();
        drop(exported);
        for (labels, first_seen) in self.oldest.lock().expect("metrics lock").values() {
            let age = first_seen.map_or(0.0, |t| ((now_us - t).max(0)) as f64 / 1e6);
            self.oldest_open_age.get_or_create(labels).set(age);
        }
        for (labels, since) in self.oldest_repair.lock().expect("metrics lock").values() {
            let age = since.map_or(0.0, |t| ((now_us - t).max(0)) as f64 / 1e6);
            self.repairs_oldest_pending.get_or_create(labels).set(age);
        }
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        if self
            .exports_shared
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.shared)
                .expect("writing to a String cannot fail");
        }
        out
    }
}

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
