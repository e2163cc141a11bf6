//! Running a rule inside the daemon: read its open keys, run the engine (abandoned on
//! shutdown, then recorded as `cancelled`), record the run in the state store, account for it
//! in the metrics, and log it — with a span per run. Runs in flight are registered, so that a
//! shutdown that runs out of time can say which were still going.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::context::Context;
use crate::engine::run_rule_with_open;
use crate::rules::Rule;
use crate::state::{Recorded, StateError};
use crate::verdict::{ErrorKind, Outcome, RuleRun, RunError};

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

/// Runs a rule once and records it. On cancellation the run is abandoned and recorded as
/// unknown (`cancelled`).
pub async fn run_and_record(
    ctx: &Context,
    rule: &Rule,
    token: &CancellationToken,
    in_flight: &InFlight,
) -> Result<(RuleRun, Recorded), StateError> {
    let _guard = in_flight.enter(&rule.name);
    let span = tracing::info_span!(
        "rule_run",
        rule = %rule.name,
        outcome = tracing::field::Empty,
        rows = tracing::field::Empty,
        violations = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    let result = record(ctx, rule, token).instrument(span.clone()).await;
    if let Ok((run, _)) = &result {
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
) -> Result<(RuleRun, Recorded), StateError> {
    let open = ctx.store.open_keys(&rule.name).await?;
    let started = Utc::now();
    let clock = Instant::now();
    let run = tokio::select! {
        run = run_rule_with_open(rule, &ctx.sources, started, &open) => run,
        _ = token.cancelled() => RuleRun::unknown(
            &rule.name,
            started,
            clock.elapsed(),
            RunError::new(ErrorKind::Cancelled, "cancelled: invariantd is shutting down"),
        ),
    };
    let recorded = ctx.store.record(&run).await?;
    let snapshot = ctx.store.rule_snapshot(&rule.name).await?;
    ctx.metrics
        .observe(rule, &run, recorded.opened, recorded.resolved, &snapshot);
    match (&run.outcome, &run.error) {
        (Outcome::Unknown, Some(e)) => warn!(
            rule = %rule.name,
            kind = e.kind.as_str(),
            error = %e,
            "Rule run is unknown."
        ),
        _ => info!(
            rule = %rule.name,
            outcome = run.outcome.as_str(),
            rows = run.total_rows_scanned(),
            violations = run.violations.len(),
            opened = recorded.opened,
            resolved = recorded.resolved,
            duration_ms = run.duration.as_millis() as u64,
            "Rule run finished."
        ),
    }
    Ok((run, recorded))
}

/// `run --once`: every rule once, in order of the files, with full bookkeeping.
pub async fn run_once(
    ctx: &Context,
    concurrency: usize,
) -> Result<Vec<(RuleRun, Recorded)>, StateError> {
    use futures_util::StreamExt;
    let token = CancellationToken::new();
    let in_flight = InFlight::default();
    let results: Vec<Result<(RuleRun, Recorded), StateError>> =
        futures_util::stream::iter(&ctx.rules)
            .map(|rule| run_and_record(ctx, rule, &token, &in_flight))
            .buffered(concurrency.max(1))
            .collect()
            .await;
    results.into_iter().collect()
}
