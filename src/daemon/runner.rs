//! Running a rule inside the daemon: read its open keys, run the engine (abandoned on
//! shutdown, then recorded as `cancelled`) — or, for a full sweep of a rule with `partition`,
//! have the replicas read its key ranges (`sweeps`) — record the run in the state store,
//! account for it in the metrics, and log it — with a span per run. Runs in flight are
//! registered, so that a shutdown that runs out of time can say which were still going.
//!
//! Logs say what changed, not what every run did: a rule turning unknown or recovering, a
//! source going down or coming back (`Transitions`). Each run is logged at debug level.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use super::sweeps;
use crate::context::{Context, Wake};
use crate::engine::{key_ranges, run_rule_incremental, run_rule_with_open};
use crate::rules::Rule;
use crate::state::{Lease, Recorded, StateError, SweepMarks};
use crate::verdict::{ErrorKind, Outcome, RuleRun, RunError, RunMode};

/// The runs going on now, by rule, with when each started.
#[derive(Default)]
pub struct InFlight {
    next: AtomicU64,
    runs: Mutex<BTreeMap<u64, (String, Instant)>>,
}

/// Removes its run from `InFlight` when dropped, however the run ends.
struct InFlightGuard<'a> {
    registry: &'a InFlight,
    id: u64,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.registry
            .runs
            .lock()
            .expect("in-flight lock")
            .remove(&self.id);
    }
}

impl InFlight {
    fn enter(&self, rule: &str) -> InFlightGuard<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.runs
            .lock()
            .expect("in-flight lock")
            .insert(id, (rule.to_string(), Instant::now()));
        InFlightGuard { registry: self, id }
    }

    /// The runs still going, as `rule (12s)`, oldest first.
    pub fn describe(&self) -> Vec<String> {
        self.runs
            .lock()
            .expect("in-flight lock")
            .values()
            .map(|(rule, started)| format!("{rule} ({}s)", started.elapsed().as_secs()))
            .collect()
    }
}

/// The last state of each rule (unknown or not) and source (up or not), to log changes once.
#[derive(Default)]
pub struct Transitions {
    rules: Mutex<HashMap<String, bool>>,
    sources: Mutex<HashMap<String, bool>>,
}

impl Transitions {
    /// Logs a source going down or coming back (from a run or a probe).
    pub fn source(&self, source: &str, error: Option<&str>) {
        let mut sources = self.sources.lock().expect("transitions lock");
        let up = error.is_none();
        let before = sources.insert(source.to_string(), up);
        match (before, error) {
            (None | Some(true), Some(error)) => warn!(
                source = %source,
                error,
                "Source is down: its rules are unknown until it is back."
            ),
            (Some(false), None) => info!(source = %source, "Source is back."),
            _ => {}
        }
    }

    fn observe(&self, run: &RuleRun) {
        let error = run.error.as_ref().map(|e| e.message.as_str());
        for source in &run.sources_down {
            self.source(source, Some(error.unwrap_or("cannot connect")));
        }
        for source in &run.sources_reached {
            self.source(source, None);
        }
        let unknown = run.outcome == Outcome::Unknown;
        let before = self
            .rules
            .lock()
            .expect("transitions lock")
            .insert(run.rule.clone(), unknown);
        match (before, unknown, &run.error) {
            (None | Some(false), true, Some(e)) => warn!(
                rule = %run.rule,
                kind = e.kind.as_str(),
                error = %e,
                "Rule is unknown: it could not be judged."
            ),
            (Some(true), false, _) => info!(
                rule = %run.rule,
                outcome = run.outcome.as_str(),
                "Rule recovered: it is judged again."
            ),
            _ => {}
        }
    }
}

/// What the daemon's runs share: the runs in flight and the last states, for the logs, and
/// the wake-ups of the services that act on what a run found.
#[derive(Default)]
pub struct RunLog {
    pub in_flight: InFlight,
    pub transitions: Transitions,
    /// The daemon's wake-ups (`context::Wake`): alerts after every recorded run, repairs when
    /// some may be due (planned) or moot (their violation resolved).
    pub wake: Arc<Wake>,
    /// Rows each dataset of a rule returned in its last finished run, to notice a dataset
    /// that suddenly returns nothing.
    rows: Mutex<HashMap<String, Vec<u64>>>,
    /// The rule versions (name, fingerprint) whose open violations all have their repair
    /// planned by this process: their next runs plan only what they open.
    planned: Mutex<std::collections::HashSet<(String, String)>>,
    /// Where each rule's incremental runs stand, by rule: the version (fingerprint) the marks
    /// are of, read from the store on the version's first run in this process.
    marks: Mutex<HashMap<String, (String, SweepMarks)>>,
}

impl RunLog {
    /// A log whose runs wake the services through `wake`.
    pub fn new(wake: Arc<Wake>) -> RunLog {
        RunLog {
            wake,
            ..RunLog::default()
        }
    }

    /// The instant an incremental run of `rule` at `now` reads changes from, or `None` when
    /// this run must be a full sweep: the rule is not incremental, or no run of this version
    /// judged its keys yet, or its `full_sweep` is due. The window reaches back from the last
    /// run's start by the overlap, and by `grace` (or the consistent cut's lag) so that keys
    /// held back then are looked at again.
    async fn changed_since(
        &self,
        ctx: &Context,
        rule: &Rule,
        now: chrono::DateTime<Utc>,
    ) -> Result<Option<chrono::DateTime<Utc>>, StateError> {
        let Some(incremental) = &rule.incremental else {
            return Ok(None);
        };
        let known = self
            .marks
            .lock()
            .expect("marks lock")
            .get(&rule.name)
            .filter(|(fingerprint, _)| *fingerprint == rule.fingerprint)
            .map(|(_, marks)| *marks);
        let marks = match known {
            Some(marks) => marks,
            None => {
                let marks = ctx.store.sweep_marks(&rule.name, &rule.fingerprint).await?;
                self.marks
                    .lock()
                    .expect("marks lock")
                    .insert(rule.name.clone(), (rule.fingerprint.clone(), marks));
                marks
            }
        };
        let (Some(last), false) = (
            marks.last_run_us,
            incremental.full_sweep_due(marks.last_full_us, now),
        ) else {
            return Ok(None);
        };
        let back = incremental.overlap + rule.grace.max(rule.consistent_cut.unwrap_or_default());
        Ok(chrono::DateTime::from_timestamp_micros(
            last - back.as_micros() as i64,
        ))
    }

    /// Moves the marks on after a run that judged its keys.
    fn mark(&self, rule: &Rule, run: &RuleRun) {
        if rule.incremental.is_none() || !matches!(run.outcome, Outcome::Pass | Outcome::Fail) {
            return;
        }
        let started = run.started_at.timestamp_micros();
        let mut marks = self.marks.lock().expect("marks lock");
        let entry = marks
            .entry(rule.name.clone())
            .or_insert_with(|| (rule.fingerprint.clone(), SweepMarks::default()));
        if entry.0 != rule.fingerprint {
            *entry = (rule.fingerprint.clone(), SweepMarks::default());
        }
        entry.1.last_run_us = entry.1.last_run_us.max(Some(started));
        if run.mode == RunMode::Full {
            entry.1.last_full_us = entry.1.last_full_us.max(Some(started));
        }
    }
}

/// What a scheduled run in a daemon sharing its state store works under: the rule's lease,
/// and the token cancelled the moment this replica gives the rule up.
#[derive(Clone, Copy)]
pub struct Under<'a> {
    pub lease: &'a Lease,
    pub given_up: &'a CancellationToken,
}

/// Runs a rule once and records it. On cancellation the run is abandoned and recorded as
/// unknown (`cancelled`). `slot`, the run's share of `max_concurrent_runs`, is given back
/// once the sources are read: recording takes no slot, so a big write never holds up other
/// rules' runs. `under` a lease (a daemon's scheduled run), the result is recorded only while
/// the lease is still this replica's; a run of a rule this replica gives up meanwhile is
/// abandoned and not recorded at all (another replica runs the rule now): both end in
/// `StateError::LeaseLost`.
pub async fn run_and_record(
    ctx: &Context,
    rule: &Rule,
    token: &CancellationToken,
    log: &RunLog,
    slot: Option<OwnedSemaphorePermit>,
    under: Option<Under<'_>>,
) -> Result<(RuleRun, Recorded), StateError> {
    let _guard = log.in_flight.enter(&rule.name);
    let span = tracing::info_span!(
        "rule_run",
        rule = %rule.name,
        outcome = tracing::field::Empty,
        rows = tracing::field::Empty,
        violations = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    let result = record(ctx, rule, token, slot, log, under)
        .instrument(span.clone())
        .await;
    if let Ok((run, _)) = &result {
        log.transitions.observe(run);
        log.wake.alerts.notify_one();
        span.record("outcome", run.outcome.as_str());
        span.record("rows", run.total_rows_scanned() as i64);
        span.record("violations", run.violations.len() as i64);
        span.record("duration_ms", run.duration.as_millis() as i64);
    }
    result
}

async fn record(
    ctx: &Context,
    rule: &Rule,
    token: &CancellationToken,
    slot: Option<OwnedSemaphorePermit>,
    log: &RunLog,
    under: Option<Under<'_>>,
) -> Result<(RuleRun, Recorded), StateError> {
    let began = Instant::now();
    let open = ctx.store.open_violations(&rule.name).await?;
    let open_keys = crate::state::keys_of(&open);
    let started = Utc::now();
    let clock = Instant::now();
    let since = log.changed_since(ctx, rule, started).await?;
    // A rule that measures (a `row_count` check with `max_drop`) compares with its last
    // measure under this version.
    let previous = match rule.measure {
        Some(_) => {
            ctx.store
                .last_measure(&rule.name, &rule.fingerprint)
                .await?
        }
        None => None,
    };
    // A daemon's full sweep of a partitioned rule is split where its last one sampled, once
    // there are samples; its ranges are read by every replica, this one waiting meanwhile
    // without holding a run slot (its own range reader takes them too).
    let ranges = match (under, since, rule.partition) {
        (Some(_), None, Some(_)) => ctx
            .store
            .sweep_boundaries(&rule.name, &rule.fingerprint)
            .await?
            .and_then(|keys| key_ranges(&keys)),
        _ => None,
    };
    let slot = if ranges.is_some() {
        drop(slot);
        None
    } else {
        slot
    };
    let engine = async {
        match (&ranges, under, since) {
            (Some(ranges), Some(u), _) => {
                sweeps::coordinate(ctx, &log.wake, rule, started, ranges, u.lease).await
            }
            (_, _, Some(since)) => {
                Ok(run_rule_incremental(rule, &ctx.sources, started, since, &open_keys).await)
            }
            _ => Ok(run_rule_with_open(rule, &ctx.sources, started, &open_keys, previous).await),
        }
    };
    let given_up = async {
        match under {
            Some(u) => u.given_up.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let run = tokio::select! {
        run = engine => run?,
        _ = token.cancelled() => RuleRun::unknown(
            &rule.name,
            started,
            clock.elapsed(),
            RunError::new(ErrorKind::Cancelled, "cancelled: invariantd is shutting down"),
        ),
        () = given_up => {
            let name = under.map_or_else(String::new, |u| u.lease.name.clone());
            return Err(StateError::LeaseLost(name));
        }
    };
    drop(slot);
    let recorded = ctx
        .store
        .record(&run, &open, under.map(|u| u.lease))
        .await?;
    log.mark(rule, &run);
    if rule.partition.is_some() {
        let sweep = ranges.is_some().then(|| started.timestamp_micros());
        if let Err(e) = keep_boundaries(ctx, rule, &run, sweep, under.map(|u| u.lease)).await {
            warn!(rule = %rule.name, error = %e, "Cannot keep where the rule's next full sweep splits.");
        }
    }
    if recorded.resolved > 0 && rule.repair.is_some() {
        // Repairs waiting for a person may be for violations that just healed.
        log.wake.repairs.notify_one();
    }
    plan_repairs(ctx, rule, &run, &open, log).await?;
    let snapshot = ctx.store.rule_snapshot(&rule.name).await?;
    // The run's status as the daemon sees the rule after it: its open violations (an
    // incremental run judged only what changed), kept on the recorded run.
    if run.outcome != crate::verdict::Outcome::Unknown {
        let judged = match run.mode {
            crate::verdict::RunMode::Full => Some(run.keys_judged as i64),
            crate::verdict::RunMode::Incremental => {
                crate::alert::status::judged(&ctx.store, rule).await?
            }
        };
        let now = crate::alert::status::state_of(rule, &snapshot, judged).status;
        if now != run.status {
            ctx.store.set_run_status(recorded.run_id, now).await?;
        }
    }
    ctx.health
        .observe_run(&run.sources_down, &run.sources_reached);
    ctx.metrics.observe(
        rule,
        &run,
        recorded.opened,
        &recorded.healed_after,
        &snapshot,
    );
    debug!(
        rule = %rule.name,
        outcome = run.outcome.as_str(),
        mode = run.mode.as_str(),
        keys_changed = run.keys_changed,
        rows = run.total_rows_scanned(),
        violations = run.violations.len(),
        opened = recorded.opened,
        resolved = recorded.resolved,
        duration_ms = run.duration.as_millis() as u64,
        bookkeeping_ms = began.elapsed().saturating_sub(run.duration).as_millis() as u64,
        error = run.error.as_ref().map(|e| e.message.as_str()),
        "Rule run finished."
    );
    Ok((run, recorded))
}

/// After a full sweep of a rule with `partition`: its sampled keys are where the next one
/// splits, and the parts of a partitioned one are cleared. A partitioned sweep whose ranges no
/// longer fit the key (its type changed: `schema_mismatch`) forgets them, so that the next
/// sweep reads every key at once and samples them again. `sweep` names the partitioned one.
async fn keep_boundaries(
    ctx: &Context,
    rule: &Rule,
    run: &RuleRun,
    sweep: Option<i64>,
    lease: Option<&Lease>,
) -> Result<(), StateError> {
    if run.mode != RunMode::Full {
        return Ok(());
    }
    if let Some(sweep) = sweep {
        ctx.store.end_sweep(&rule.name, sweep).await?;
    }
    if run.finished {
        let now = Utc::now().timestamp_micros();
        ctx.store
            .save_sweep_boundaries(&rule.name, &rule.fingerprint, &run.samples, now, lease)
            .await?;
    } else if sweep.is_some() && run.error_kind() == Some(ErrorKind::SchemaMismatch) {
        ctx.store.forget_sweep_boundaries(&rule.name).await?;
    }
    Ok(())
}

/// Plans the repairs of a finished run (see `repair::plan`), and remembers its row counts.
async fn plan_repairs(
    ctx: &Context,
    rule: &Rule,
    run: &RuleRun,
    open: &[crate::state::OpenViolation],
    log: &RunLog,
) -> Result<(), StateError> {
    if !run.finished {
        return Ok(());
    }
    // Only full sweeps count a dataset's rows.
    let previous = if run.mode == RunMode::Full {
        log.rows
            .lock()
            .expect("rows lock")
            .insert(rule.name.clone(), run.rows_scanned.clone())
    } else {
        None
    };
    let Some(repair) = &rule.repair else {
        return Ok(());
    };
    if run.violations.is_empty() {
        return Ok(());
    }
    let enabled = match repair.mode {
        crate::rules::RepairMode::Auto => {
            ctx.store.enabled_fingerprint(&rule.name).await?.as_deref()
                == Some(rule.fingerprint.as_str())
        }
        crate::rules::RepairMode::Approve => false,
    };
    // The first run of a rule version in this process plans every violation (those opened
    // before a restart or a new repair section included); later runs, only what they open.
    let version = (rule.name.clone(), rule.fingerprint.clone());
    let only_new = log.planned.lock().expect("planned lock").contains(&version);
    let guard = crate::repair::Guardrails {
        dry_run: ctx.config.repairs.dry_run,
        enabled,
        suspicious: previous.and_then(|p| crate::repair::suspicious(rule, &p, run)),
        only_new,
    };
    let planned = crate::repair::plan(rule, run, open, &guard);
    let now = Utc::now().timestamp_micros();
    let ids = match ctx
        .store
        .plan_repairs(&rule.name, &planned.repairs, now)
        .await
    {
        Ok(ids) => {
            log.planned.lock().expect("planned lock").insert(version);
            ids
        }
        Err(e) => {
            // What this run opened is planned in full by the next run.
            log.planned.lock().expect("planned lock").remove(&version);
            return Err(e);
        }
    };
    if let Some((reason, why)) = &planned.held
        && !ids.is_empty()
    {
        ctx.metrics.repairs_held(rule, reason.as_str());
        warn!(rule = %rule.name, reason = reason.as_str(), planned = ids.len(), "Automatic repairs held for a person: {why}");
    }
    if !ids.is_empty() {
        info!(rule = %rule.name, planned = ids.len(), "Repairs planned.");
        log.wake.repairs.notify_one();
    }
    Ok(())
}

/// `run --once`: every rule once, in order of the files, with full bookkeeping.
pub async fn run_once(
    ctx: &Context,
    concurrency: usize,
) -> Result<Vec<(RuleRun, Recorded)>, StateError> {
    use futures_util::StreamExt;
    let token = CancellationToken::new();
    let log = RunLog::default();
    let results: Vec<Result<(RuleRun, Recorded), StateError>> =
        futures_util::stream::iter(&ctx.rules)
            .map(|rule| run_and_record(ctx, rule, &token, &log, None, None))
            .buffered(concurrency.max(1))
            .collect()
            .await;
    results.into_iter().collect()
}
