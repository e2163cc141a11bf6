//! Prometheus metrics: every name in one place, through the official client
//! (`prometheus-client`). Labels come from bounded sets (rule, severity, outcome, dataset,
//! source, receiver) — never a key, an id or an error text.
//!
//! Values survive restarts: at start-up counters and gauges are restored from plain snapshots
//! of the state store (`RuleTotals`, `RuleSnapshot`: cumulative counters, open violations, last
//! success) — this module never queries the store — and only the rules loaded now get series,
//! so a deleted rule's series disappear.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::rules::Rule;
use crate::state::{RuleSnapshot, RuleTotals};
use crate::verdict::{ErrorKind, Outcome, RuleRun};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleSeverity {
    rule: String,
    severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleOutcome {
    rule: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleKind {
    rule: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleStatus {
    rule: String,
    status: String,
}

/// The statuses of `rule_keys`: what the last finished run did with each key.
const KEY_STATUSES: [&str; 3] = ["judged", "in_grace", "error"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleDataset {
    rule: String,
    dataset: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverOutcome {
    receiver: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildInfo {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    violations_open: Family<RuleSeverity, Gauge>,
    violations_detected: Family<RuleLabel, Counter>,
    violations_resolved: Family<RuleLabel, Counter>,
    oldest_open_age: Family<RuleLabel, FloatGauge>,
    rule_runs: Family<RuleOutcome, Counter>,
    rule_runs_skipped: Family<RuleLabel, Counter>,
    run_duration: Family<RuleLabel, Histogram, fn() -> Histogram>,
    last_success: Family<RuleLabel, FloatGauge>,
    rows_scanned: Family<RuleDataset, Counter>,
    run_errors: Family<RuleKind, Counter>,
    rule_keys: Family<RuleStatus, Gauge>,
    source_up: Family<SourceLabel, Gauge>,
    /// Filled by the repair and alert milestones; declared now so dashboards can rely on them.
    repairs: Family<RuleOutcome, Counter>,
    repairs_pending: Family<RuleLabel, Gauge>,
    alerts_sent: Family<ReceiverOutcome, Counter>,
    /// Rule → (severity, first_seen of its oldest open violation), for the age gauge at scrape.
    oldest: Mutex<HashMap<String, (String, Option<i64>)>>,
}

fn duration_histogram() -> Histogram {
    // 10 ms … about 5.5 minutes.
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("invariantd");
        let m = Metrics {
            violations_open: Family::default(),
            violations_detected: Family::default(),
            violations_resolved: Family::default(),
            oldest_open_age: Family::default(),
            rule_runs: Family::default(),
            rule_runs_skipped: Family::default(),
            run_duration: Family::new_with_constructor(duration_histogram),
            last_success: Family::default(),
            rows_scanned: Family::default(),
            run_errors: Family::default(),
            rule_keys: Family::default(),
            source_up: Family::default(),
            repairs: Family::default(),
            repairs_pending: Family::default(),
            alerts_sent: Family::default(),
            oldest: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        registry.register(
            "violations_open",
            "Open violations, by rule.",
            m.violations_open.clone(),
        );
        registry.register(
            "violations_detected",
            "Violations opened (a violation that comes back counts again).",
            m.violations_detected.clone(),
        );
        registry.register(
            "violations_resolved",
            "Violations resolved: their key holds again.",
            m.violations_resolved.clone(),
        );
        registry.register_with_unit(
            "oldest_open_violation_age",
            "Age of the rule's oldest open violation.",
            Unit::Seconds,
            m.oldest_open_age.clone(),
        );
        registry.register(
            "rule_runs",
            "Rule runs, by outcome: pass, fail (violations found) or unknown (could not run).",
            m.rule_runs.clone(),
        );
        registry.register(
            "rule_runs_skipped",
            "Scheduled runs skipped because the previous run of the rule was still going.",
            m.rule_runs_skipped.clone(),
        );
        registry.register_with_unit(
            "rule_run_duration",
            "Duration of rule runs.",
            Unit::Seconds,
            m.run_duration.clone(),
        );
        registry.register_with_unit(
            "rule_last_success_timestamp",
            "When the rule last ran to the end (pass or fail), as a Unix timestamp.",
            Unit::Seconds,
            m.last_success.clone(),
        );
        registry.register(
            "rows_scanned",
            "Rows read from each dataset of each rule.",
            m.rows_scanned.clone(),
        );
        registry.register(
            "rule_run_errors",
            "Rule runs that ended with an error, by kind (source_unreachable, query_failed, timeout, schema_mismatch, duplicate_rows, evaluation, cancelled).",
            m.run_errors.clone(),
        );
        registry.register(
            "rule_keys",
            "Keys in the rule's last finished run, by status: judged, in_grace (changed too recently to judge) or error (could not be judged).",
            m.rule_keys.clone(),
        );
        registry.register(
            "source_up",
            "Whether the last run that used the source could connect to it (1) or not (0).",
            m.source_up.clone(),
        );
        registry.register("repairs", "Repairs by outcome.", m.repairs.clone());
        registry.register(
            "repairs_pending",
            "Repairs waiting for approval.",
            m.repairs_pending.clone(),
        );
        registry.register(
            "alerts_sent",
            "Alert notifications by receiver and outcome.",
            m.alerts_sent.clone(),
        );
        let build_info: Family<BuildInfo, Gauge> = Family::default();
        build_info
            .get_or_create(&BuildInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register("build_info", "The running version (always 1).", build_info);
        Metrics { registry, ..m }
    }

    /// Sets every series of `rules` from the state store's totals and snapshots, as after a
    /// restart.
    pub fn restore(
        &self,
        rules: &[Rule],
        totals: &HashMap<String, RuleTotals>,
        snapshots: &HashMap<String, RuleSnapshot>,
    ) {
        let none = RuleTotals::default();
        let mut oldest = self.oldest.lock().expect("metrics lock");
        for rule in rules {
            let t = totals.get(&rule.name).unwrap_or(&none);
            let r = RuleLabel {
                rule: rule.name.clone(),
            };
            self.violations_detected
                .get_or_create(&r)
                .inc_by(t.detected);
            self.violations_resolved
                .get_or_create(&r)
                .inc_by(t.resolved);
            for outcome in Outcome::ALL {
                self.rule_runs
                    .get_or_create(&RuleOutcome {
                        rule: rule.name.clone(),
                        outcome: outcome.as_str().into(),
                    })
                    .inc_by(t.runs.get(&outcome).copied().unwrap_or(0));
            }
            for kind in ErrorKind::ALL {
                self.run_errors
                    .get_or_create(&RuleKind {
                        rule: rule.name.clone(),
                        kind: kind.as_str().into(),
                    })
                    .inc_by(t.errors.get(&kind).copied().unwrap_or(0));
            }
            for d in &rule.datasets {
                self.rows_scanned
                    .get_or_create(&RuleDataset {
                        rule: rule.name.clone(),
                        dataset: d.name.clone(),
                    })
                    .inc_by(t.rows_scanned.get(&d.name).copied().unwrap_or(0));
            }
            let snap = snapshots.get(&rule.name).cloned().unwrap_or_default();
            self.set_open(rule, &snap, &mut oldest);
            if let Some(t) = snap.last_success_us {
                self.last_success.get_or_create(&r).set(t as f64 / 1e6);
            }
            if let Some(counts) = snap.last_keys {
                for (status, n) in KEY_STATUSES.iter().zip(counts) {
                    self.rule_keys
                        .get_or_create(&RuleStatus {
                            rule: rule.name.clone(),
                            status: (*status).into(),
                        })
                        .set(n);
                }
            }
        }
    }

    fn set_open(
        &self,
        rule: &Rule,
        snap: &RuleSnapshot,
        oldest: &mut HashMap<String, (String, Option<i64>)>,
    ) {
        self.violations_open
            .get_or_create(&RuleSeverity {
                rule: rule.name.clone(),
                severity: rule.severity.to_string(),
            })
            .set(snap.open);
        oldest.insert(
            rule.name.clone(),
            (rule.severity.to_string(), snap.oldest_first_seen_us),
        );
    }

    /// Accounts for one recorded run; `snap` is the rule's state after it.
    pub fn observe(
        &self,
        rule: &Rule,
        run: &RuleRun,
        opened: u64,
        resolved: u64,
        snap: &RuleSnapshot,
    ) {
        let r = RuleLabel {
            rule: rule.name.clone(),
        };
        self.rule_runs
            .get_or_create(&RuleOutcome {
                rule: rule.name.clone(),
                outcome: run.outcome.as_str().into(),
            })
            .inc();
        self.run_duration
            .get_or_create(&r)
            .observe(run.duration.as_secs_f64());
        self.violations_detected.get_or_create(&r).inc_by(opened);
        self.violations_resolved.get_or_create(&r).inc_by(resolved);
        if let Some(kind) = run.error_kind() {
            self.run_errors
                .get_or_create(&RuleKind {
                    rule: rule.name.clone(),
                    kind: kind.as_str().into(),
                })
                .inc();
        }
        for (d, rows) in rule.datasets.iter().zip(&run.rows_scanned) {
            self.rows_scanned
                .get_or_create(&RuleDataset {
                    rule: rule.name.clone(),
                    dataset: d.name.clone(),
                })
                .inc_by(*rows);
        }
        if run.finished {
            let end = run.started_at.timestamp_micros() + run.duration.as_micros() as i64;
            self.last_success.get_or_create(&r).set(end as f64 / 1e6);
            let counts = [run.keys_judged, run.keys_in_grace, run.key_errors_total];
            for (status, n) in KEY_STATUSES.iter().zip(counts) {
                self.rule_keys
                    .get_or_create(&RuleStatus {
                        rule: rule.name.clone(),
                        status: (*status).into(),
                    })
                    .set(n as i64);
            }
        }
        for d in &rule.datasets {
            let up = if run.sources_down.contains(&d.source) {
                0
            } else if run.sources_reached.contains(&d.source) {
                1
            } else {
                continue;
            };
            self.source_up
                .get_or_create(&SourceLabel {
                    source: d.source.clone(),
                })
                .set(up);
        }
        let mut oldest = self.oldest.lock().expect("metrics lock");
        self.set_open(rule, snap, &mut oldest);
    }

    /// Removes every series of these rules (before a reload restores the new set's).
    pub fn forget(&self, rules: &[Rule]) {
        let mut oldest = self.oldest.lock().expect("metrics lock");
        for rule in rules {
            let name = rule.name.clone();
            let r = RuleLabel { rule: name.clone() };
            self.violations_open.remove(&RuleSeverity {
                rule: name.clone(),
                severity: rule.severity.to_string(),
            });
            self.violations_detected.remove(&r);
            self.violations_resolved.remove(&r);
            self.oldest_open_age.remove(&r);
            self.rule_runs_skipped.remove(&r);
            self.run_duration.remove(&r);
            self.last_success.remove(&r);
            for outcome in Outcome::ALL {
                self.rule_runs.remove(&RuleOutcome {
                    rule: name.clone(),
                    outcome: outcome.as_str().into(),
                });
            }
            for status in KEY_STATUSES {
                self.rule_keys.remove(&RuleStatus {
                    rule: name.clone(),
                    status: status.into(),
                });
            }
            for kind in ErrorKind::ALL {
                self.run_errors.remove(&RuleKind {
                    rule: name.clone(),
                    kind: kind.as_str().into(),
                });
            }
            for d in &rule.datasets {
                self.rows_scanned.remove(&RuleDataset {
                    rule: name.clone(),
                    dataset: d.name.clone(),
                });
            }
            oldest.remove(&rule.name);
        }
    }

    pub fn skipped(&self, rule: &str) {
        self.rule_runs_skipped
            .get_or_create(&RuleLabel {
                rule: rule.to_string(),
            })
            .inc();
    }

    /// The classic Prometheus text format (what `promtool check metrics` and every Prometheus
    /// version read), with ages computed at `now_us`.
    pub fn render(&self, now_us: i64) -> String {
        for (rule, (_, first_seen)) in self.oldest.lock().expect("metrics lock").iter() {
            let age = first_seen.map_or(0.0, |t| ((now_us - t).max(0)) as f64 / 1e6);
            self.oldest_open_age
                .get_or_create(&RuleLabel { rule: rule.clone() })
                .set(age);
        }
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
