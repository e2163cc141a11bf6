//! Judging one key: held back while within `grace`, else the assertion decides between pass
//! and violation; anything that prevents a decision (an evaluation error, an `updated_at` that
//! is not a timestamp) is a key error, reported for that key and never taken for a pass. A
//! violation carries the rule's `impact` value for its key, when the rule has one, and its
//! repair actions filled in for the key.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::expr::{Env, Group, MAX_STEPS_PER_KEY};
use crate::rules::Rule;
use crate::value::{Key, MESSAGE_MAX, Row, Value, parse_timestamp_text, truncated};
use crate::verdict::{ErrorKind, KeyError, OpenKeys, RuleRun, RunError, Violation};

use super::plan::Plan;

/// At most this many per-key errors are kept with their text; all are counted.
pub(super) const MAX_KEY_ERRORS: usize = 100;

/// How many evaluation steps one run may take in all (assertions of every key): about a few
/// minutes of one core. A run over it is `unknown` (`timeout`).
pub const MAX_STEPS_PER_RUN: u64 = 10_000_000_000;

/// After this many steps a run lets other tasks run (about a millisecond of work), so that
/// evaluation never starves the runtime: probes, `/metrics`, other rules and shutdown.
const STEPS_PER_YIELD: u64 = 100_000;

/// Whether a run holds back the keys changed within the rule's `grace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grace {
    /// As a run does: a key changed less than `grace` ago is not judged yet.
    Apply,
    /// Judged whenever they changed: right after a repair acted on a key, which is what
    /// changed it. A `consistent_cut` still holds back what the replicas may not have yet.
    Skip,
}

/// Everything needed to judge the keys of one run.
pub(crate) struct Judge<'a> {
    pub rule: &'a Rule,
    pub plan: &'a Plan,
    /// The run's `now`, microseconds since the epoch.
    pub now: i64,
    /// Keys updated after this instant are within `grace` (or after the consistent cut).
    pub grace_from: Option<i64>,
    /// What the rule measured at its previous run (`previous` in expressions).
    previous: Option<i64>,
    /// Where the rule's measure is, when it measures: a dataset and the column's slot.
    measure: Option<(usize, usize)>,
    /// Evaluation steps the run may still take.
    steps_left: AtomicU64,
    /// Steps taken since the run last let other tasks run.
    since_yield: AtomicU64,
}

impl Judge<'_> {
    pub(crate) fn new<'a>(rule: &'a Rule, plan: &'a Plan, now: i64, grace: Grace) -> Judge<'a> {
        // A consistent cut holds back the keys changed after `now - lag` as grace does.
        let cut = rule.consistent_cut.unwrap_or_default();
        let hold = match grace {
            Grace::Apply => rule.grace.max(cut),
            Grace::Skip => cut,
        };
        Judge {
            rule,
            plan,
            now,
            grace_from: (!hold.is_zero()).then(|| now - hold.as_micros() as i64),
            previous: None,
            measure: rule.measure.as_ref().and_then(|m| {
                let slot = plan
                    .columns
                    .get(m.dataset)?
                    .iter()
                    .position(|c| *c == m.column);
                Some((m.dataset, slot?))
            }),
            steps_left: AtomicU64::new(MAX_STEPS_PER_RUN),
            since_yield: AtomicU64::new(0),
        }
    }

    /// The judge of a run that knows what the rule measured at its previous run.
    pub(crate) fn after(mut self, previous: Option<i64>) -> Self {
        self.previous = previous;
        self
    }

    /// Whether the run has worked long enough since it last let other tasks run; if so, the
    /// caller yields (`tokio::task::yield_now`) before judging the next key.
    pub(crate) fn should_yield(&self) -> bool {
        let due = self.since_yield.load(Relaxed) >= STEPS_PER_YIELD;
        if due {
            self.since_yield.store(0, Relaxed);
        }
        due
    }

    /// Charges the run for `steps`; an error once its budget is spent.
    fn charge(&self, steps: u64, key: &Key) -> Result<(), RunError> {
        // One run judges its keys one after the other: the atomics are never contended,
        // they only let the run's future move between threads.
        self.since_yield.fetch_add(steps, Relaxed);
        match self.steps_left.load(Relaxed).checked_sub(steps) {
            Some(left) => {
                self.steps_left.store(left, Relaxed);
                Ok(())
            }
            None => Err(RunError::new(
                ErrorKind::Timeout,
                format!(
                    "the assertion at {} took more than the run's evaluation budget of \
                     {MAX_STEPS_PER_RUN} steps (at key {key})",
                    self.rule.assertion_origin
                ),
            )),
        }
    }

    /// Judges one key into `run`. An error, which ends the run, only when evaluation went
    /// over its budget: for this key (`MAX_STEPS_PER_KEY`), or for the run.
    pub(crate) fn judge(
        &self,
        groups: &[Group],
        key: Key,
        open: &dyn OpenKeys,
        run: &mut RuleRun,
    ) -> Result<(), RunError> {
        if let Some(grace_from) = self.grace_from {
            match self.newest_update(groups) {
                Ok(Some(t)) if t > grace_from => {
                    run.keys_in_grace += 1;
                    hold_if_open(run, open, &key);
                    return Ok(());
                }
                Ok(_) => {}
                Err(msg) => {
                    add_key_error(run, open, key, ErrorKind::Evaluation, msg);
                    return Ok(());
                }
            }
        }
        if let Some((ds, slot)) = self.measure
            && let Some(Value::Int(n)) = groups
                .get(ds)
                .and_then(|g| g.rows.first())
                .and_then(|r| r.values.get(slot))
        {
            run.measure = Some(*n);
        }
        let env = Env {
            now: self.now,
            key: &key,
            groups,
            missing_is_null: false,
            previous: self.previous,
        };
        run.keys_judged += 1;
        let evaluated = self
            .plan
            .assertion
            .eval_bool_within(&env, MAX_STEPS_PER_KEY);
        if evaluated.exhausted {
            // A key over budget says the rule is: judging the other keys would only spend
            // the budget again, key after key.
            return Err(RunError::new(
                ErrorKind::Timeout,
                format!(
                    "the assertion at {} took more than its evaluation budget of \
                     {MAX_STEPS_PER_KEY} steps for key {key}",
                    self.rule.assertion_origin
                ),
            ));
        }
        self.charge(evaluated.steps, &key)?;
        match evaluated.result {
            Ok(true) => {}
            Ok(false) => {
                let message = self.plan.message.render(&env);
                // Boxed, so without the room the rendering grew into.
                let message = match truncated(&message, MESSAGE_MAX) {
                    std::borrow::Cow::Borrowed(_) => message,
                    std::borrow::Cow::Owned(cut) => cut,
                }
                .into_boxed_str();
                let datasets = crate::verdict::Evidence::new(&self.snapshot(groups));
                let impact = self.impact(&env);
                let repairs = super::render::render(self.rule, &self.plan.repairs, &env);
                run.violations.push(Violation {
                    key,
                    message,
                    datasets,
                    impact,
                    repairs: repairs.into_boxed_slice(),
                });
            }
            Err(e) => {
                let msg = format!("assert: {}", e.message);
                add_key_error(run, open, key, ErrorKind::Evaluation, msg);
            }
        }
        Ok(())
    }

    /// The violation's impact: its `impact` value as a number; none when the rule has none,
    /// or the value is null or not a number for this key (a double that is not finite).
    fn impact(&self, env: &Env<'_>) -> Option<rust_decimal::Decimal> {
        use crate::expr::Val;
        match self.plan.impact.as_ref()?.eval(env).ok()? {
            Val::Int(i) => Some(i.into()),
            Val::Decimal(d) => Some(d),
            // The decimal the double prints as: `id * 0.1` is 0.1, not 0.1000000000000000055….
            Val::Double(f) => crate::value::decimal_from_f64(f),
            _ => None,
        }
    }

    /// The newest `updated_at` among the key's rows, across its datasets.
    pub(crate) fn newest_update(&self, groups: &[Group]) -> Result<Option<i64>, String> {
        let mut newest = None;
        for (i, (group, slot)) in groups.iter().zip(&self.plan.updated_at).enumerate() {
            let Some(slot) = slot else { continue };
            for row in group.rows {
                let t = match &row.values[*slot] {
                    Value::Null => continue,
                    Value::Timestamp(t) => *t,
                    Value::Text(s) => parse_timestamp_text(s).ok_or_else(|| {
                        format!(
                            "updated_at of dataset `{}` is `{s}`, not a timestamp",
                            self.rule.datasets[i].name
                        )
                    })?,
                    other => {
                        return Err(format!(
                            "updated_at of dataset `{}` is a {} (`{other}`), not a timestamp",
                            self.rule.datasets[i].name,
                            other.type_name()
                        ));
                    }
                };
                newest = newest.max(Some(t));
            }
        }
        Ok(newest)
    }

    /// The rows behind a violation, for people and the API: each dataset's row as an object of
    /// its columns, a list of them (`many`), or null.
    fn snapshot(&self, groups: &[Group]) -> serde_json::Map<String, serde_json::Value> {
        self.rule
            .datasets
            .iter()
            .zip(groups)
            .zip(&self.plan.columns)
            .map(|((d, g), columns)| {
                let object = |r: &Row| evidence(columns, r);
                let value = if g.many {
                    serde_json::Value::Array(g.rows.iter().map(object).collect())
                } else {
                    g.rows.first().map_or(serde_json::Value::Null, object)
                };
                (d.name.clone(), value)
            })
            .collect()
    }
}

/// The groups of a key whose rows, one list per dataset in rule order, were gathered whole
/// (`explain`, the naive join of the tests), borrowing them.
pub(crate) fn groups_of<'a>(rule: &Rule, rows: &'a [Vec<Row>]) -> Vec<Group<'a>> {
    (rows.iter().zip(&rule.datasets))
        .map(|(rows, d)| Group { rows, many: d.many })
        .collect()
}

/// A row as people read it: an object of its columns, values as stored evidence.
pub(crate) fn evidence(columns: &[String], row: &Row) -> serde_json::Value {
    serde_json::Value::Object(
        columns
            .iter()
            .zip(row.values.iter())
            .map(|(c, v)| (c.clone(), v.to_evidence()))
            .collect(),
    )
}

pub(crate) fn add_key_error(
    run: &mut RuleRun,
    open: &dyn OpenKeys,
    key: Key,
    kind: ErrorKind,
    message: String,
) {
    hold_if_open(run, open, &key);
    run.key_errors_total += 1;
    if run.key_errors.len() < MAX_KEY_ERRORS {
        run.key_errors.push(KeyError { key, kind, message });
    }
}

/// Remembers that an open key was not judged. Only skipped keys pay for the lookup.
fn hold_if_open(run: &mut RuleRun, open: &dyn OpenKeys, key: &Key) {
    if !open.is_empty() {
        let text = key.to_string();
        if open.contains(text.as_str()) {
            run.unjudged_open.push(text);
        }
    }
}
