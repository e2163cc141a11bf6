//! `invariantd run`: start-up order, the scheduler, and the one shutdown path.
//!
//! Start-up: load and validate config and rules, open and migrate the state store, then start
//! one scheduling loop per rule and a pruning loop. Each rule runs on its own `schedule` or
//! `every`, never overlapping itself (a run still going when the next is due makes that tick
//! skipped and counted), with at most `max_concurrent_runs` runs at a time across rules, and
//! with a small per-rule jitter so a hundred rules do not hit a database in the same second.
//!
//! Shutdown: SIGTERM or SIGINT cancels one token. Loops stop scheduling; runs in flight are
//! abandoned (their read transactions roll back) and recorded as `unknown`, in one transaction
//! like any run, so nothing is half-written. A second signal exits at once.

use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, warn};

use crate::config::Config;
use crate::engine::{Outcome, RuleRun, run_rule_with_open};
use crate::metrics::Metrics;
use crate::rules::{Rule, Schedule};
use crate::sources::Sources;
use crate::state::{Recorded, StateError, StateStore};

/// How long shutdown waits for runs to be recorded before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How often old resolved violations and runs are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The longest start-time jitter: a tenth of the rule's period, at most ten seconds.
pub fn jitter(rule: &str, schedule: &Schedule) -> Duration {
    let period = match schedule {
        Schedule::Every(d) => *d,
        Schedule::Cron { .. } => Duration::from_secs(60),
    };
    let max = (period / 10).min(Duration::from_secs(10));
    if max.is_zero() {
        return Duration::ZERO;
    }
    // Stable per rule name: a rule keeps its slot across restarts.
    let mut h = DefaultHasher::new();
    rule.hash(&mut h);
    Duration::from_millis(h.finish() % (max.as_millis() as u64).max(1))
}

/// The next time a cron schedule fires strictly after `after`.
pub fn next_cron(cron: &croner::Cron, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after, false).ok()
}

/// One rule's scheduling loop. `run` performs one run; it is spawned so that the loop sees a
/// due time arrive while the previous run is still going, and skips it.
pub async fn rule_loop<F, Fut>(
    name: String,
    schedule: Schedule,
    limit: Arc<Semaphore>,
    token: CancellationToken,
    on_skip: impl Fn(),
    run: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let jitter = jitter(&name, &schedule);
    let running = Arc::new(AtomicBool::new(false));
    let in_flight = TaskTracker::new();
    let mut due = match &schedule {
        Schedule::Every(_) => Instant::now() + jitter,
        Schedule::Cron { cron, .. } => cron_instant(cron, jitter),
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = token.cancelled() => break,
        }
        if running.swap(true, Ordering::SeqCst) {
            on_skip();
            warn!(rule = %name, "Previous run still going; this run is skipped.");
        } else {
            let fut = run();
            let limit = limit.clone();
            let running = running.clone();
            let token = token.clone();
            in_flight.spawn(async move {
                // Waiting for a slot ends with shutdown too.
                let permit = tokio::select! {
                    p = limit.acquire_owned() => p.ok(),
                    _ = token.cancelled() => None,
                };
                if permit.is_some() {
                    fut.await;
                }
                running.store(false, Ordering::SeqCst);
            });
        }
        due = match &schedule {
            // From the previous due time, not from now: no drift.
            Schedule::Every(period) => (due + *period).max(Instant::now()),
            Schedule::Cron { cron, .. } => cron_instant(cron, jitter),
        };
    }
    in_flight.close();
    in_flight.wait().await;
}

fn cron_instant(cron: &croner::Cron, jitter: Duration) -> Instant {
    let now = Utc::now();
    let wait = next_cron(cron, now)
        .and_then(|next| (next - now).to_std().ok())
        // A pattern that never fires again (a past year): check back in a day.
        .unwrap_or(Duration::from_secs(86_400));
    Instant::now() + wait + jitter
}

/// Everything a run needs.
pub struct Runtime {
    pub config: Config,
    pub rules: Vec<Rule>,
    pub sources: Sources,
    /// Shared by every generation of rules (see `serve`): reloads keep them.
    pub store: Arc<StateStore>,
    pub metrics: Arc<Metrics>,
}

impl Runtime {
    /// Opens the state store (migrating it) and restores the metrics from it.
    pub async fn start(config: Config, rules: Vec<Rule>) -> Result<Runtime, StateError> {
        let store = Arc::new(StateStore::open(&config.state).await?);
        let metrics = Arc::new(Metrics::new());
        metrics.restore(&rules, &store).await?;
        let sources = Sources::new(&config.sources);
        Ok(Runtime {
            config,
            rules,
            sources,
            store,
            metrics,
        })
    }

    /// The next generation: new config and rules on the same store and metrics.
    pub async fn reloaded(&self, config: Config, rules: Vec<Rule>) -> Result<Runtime, StateError> {
        if config.http_listen != self.config.http_listen {
            warn!("A new http.listen takes effect at the next restart.");
        }
        // Every series of the old set goes; the new set's come back from the store, whose
        // counters are cumulative: deleted rules lose their series, kept rules keep their values.
        self.metrics.forget(&self.rules);
        self.metrics.restore(&rules, &self.store).await?;
        Ok(Runtime {
            sources: Sources::new(&config.sources),
            config,
            rules,
            store: self.store.clone(),
            metrics: self.metrics.clone(),
        })
    }
}

/// What the HTTP server and signal handling share with the scheduler.
pub struct Shared {
    current: std::sync::RwLock<Arc<Runtime>>,
    reload: tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<Result<usize, String>>>,
}

impl Shared {
    /// The rules, sources and store in force now.
    pub fn current(&self) -> Arc<Runtime> {
        self.current.read().expect("runtime lock").clone()
    }

    /// Asks the scheduler to reload config and rules; answers with the number of rules, or
    /// every error of the refused new set.
    pub async fn reload(&self) -> Result<usize, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let gone = || "invariantd is shutting down".to_string();
        self.reload.send(tx).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// A handle on a runtime with no scheduler behind it, for tests and embedding: reload
    /// requests are refused.
    pub fn fixed(rt: Arc<Runtime>) -> Arc<Shared> {
        let (tx, _) = tokio::sync::mpsc::channel(1);
        Arc::new(Shared {
            current: std::sync::RwLock::new(rt),
            reload: tx,
        })
    }
}

/// Runs a rule once and records it. On cancellation the run is abandoned and recorded as
/// unknown.
pub async fn run_and_record(
    rt: &Runtime,
    rule: &Rule,
    token: &CancellationToken,
) -> Result<(RuleRun, Recorded), StateError> {
    let span = tracing::info_span!(
        "rule_run",
        rule = %rule.name,
        outcome = tracing::field::Empty,
        rows = tracing::field::Empty,
        violations = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    let result = run_and_record_inner(rt, rule, token)
        .instrument(span.clone())
        .await;
    if let Ok((run, _)) = &result {
        span.record("outcome", run.outcome.as_str());
        span.record("rows", run.total_rows_scanned() as i64);
        span.record("violations", run.violations.len() as i64);
        span.record("duration_ms", run.duration.as_millis() as i64);
    }
    result
}

async fn run_and_record_inner(
    rt: &Runtime,
    rule: &Rule,
    token: &CancellationToken,
) -> Result<(RuleRun, Recorded), StateError> {
    let open = rt.store.open_keys(&rule.name).await?;
    let started = Utc::now();
    let clock = Instant::now();
    let run = tokio::select! {
        run = run_rule_with_open(rule, &rt.sources, started, &open) => run,
        _ = token.cancelled() => RuleRun::unknown(
            &rule.name,
            started,
            clock.elapsed(),
            "cancelled: invariantd is shutting down".into(),
        ),
    };
    let recorded = rt.store.record(&run).await?;
    let snapshot = rt.store.rule_snapshot(&rule.name).await?;
    rt.metrics
        .observe(rule, &run, recorded.opened, recorded.resolved, &snapshot);
    let log = |msg: &str| {
        info!(
            rule = %rule.name,
            outcome = run.outcome.as_str(),
            rows = run.total_rows_scanned(),
            violations = run.violations.len(),
            opened = recorded.opened,
            resolved = recorded.resolved,
            duration_ms = run.duration.as_millis() as u64,
            "{msg}"
        )
    };
    match (&run.outcome, &run.error) {
        (Outcome::Unknown, Some(e)) => warn!(rule = %rule.name, error = %e, "Rule run is unknown."),
        _ => log("Rule run finished."),
    }
    Ok((run, recorded))
}

/// `run --once`: every rule once, in order of the files, with full bookkeeping.
pub async fn run_once(
    rt: &Runtime,
    concurrency: usize,
) -> Result<Vec<(RuleRun, Recorded)>, StateError> {
    use futures_util::StreamExt;
    let token = CancellationToken::new();
    let results: Vec<Result<(RuleRun, Recorded), StateError>> =
        futures_util::stream::iter(&rt.rules)
            .map(|rule| run_and_record(rt, rule, &token))
            .buffered(concurrency.max(1))
            .collect()
            .await;
    results.into_iter().collect()
}

/// Starts one generation's scheduling loops: one per rule, stopped by `stop`. Runs in flight
/// are abandoned only by `abort` (shutdown), not by `stop` (a reload lets them finish).
fn start_generation(
    rt: &Arc<Runtime>,
    stop: &CancellationToken,
    abort: &CancellationToken,
) -> TaskTracker {
    let tasks = TaskTracker::new();
    let limit = Arc::new(Semaphore::new(rt.config.max_concurrent_runs.max(1)));
    for (i, rule) in rt.rules.iter().enumerate() {
        let (rt_run, rt_skip) = (rt.clone(), rt.clone());
        let abort = abort.clone();
        let name = rule.name.clone();
        tasks.spawn(rule_loop(
            rule.name.clone(),
            rule.schedule.clone(),
            limit.clone(),
            stop.clone(),
            move || rt_skip.metrics.skipped(&name),
            move || {
                let rt = rt_run.clone();
                let abort = abort.clone();
                async move {
                    let rule = &rt.rules[i];
                    if let Err(e) = run_and_record(&rt, rule, &abort).await {
                        error!(rule = %rule.name, error = %e, "Could not record the rule run.");
                    }
                }
            },
        ));
    }
    tasks.close();
    tasks
}

/// `run`: serves HTTP and schedules every rule until SIGTERM or SIGINT; reloads config and
/// rules on SIGHUP or `POST /api/v1/reload`.
pub async fn serve(rt: Arc<Runtime>) -> anyhow::Result<()> {
    serve_until(rt, shutdown_signal(), |_| {}).await
}

/// `serve`, stopping when `stop` completes instead of on a signal. `on_ready` gets the address
/// the HTTP server listens on (for a `:0` port, the one the system chose).
pub async fn serve_until(
    rt: Arc<Runtime>,
    stop_when: impl Future<Output = ()>,
    on_ready: impl FnOnce(std::net::SocketAddr),
) -> anyhow::Result<()> {
    tokio::pin!(stop_when);
    let abort = CancellationToken::new();
    let services = TaskTracker::new();
    let ready = Arc::new(AtomicBool::new(false));
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel(4);
    let shared = Arc::new(Shared {
        current: std::sync::RwLock::new(rt.clone()),
        reload: reload_tx,
    });

    let listen = rt.config.http_listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let address = listener.local_addr()?;
    info!(address = %address, "Serving /metrics, /healthz, /readyz and /api/v1.");
    {
        let app = crate::http::router(crate::http::AppState {
            shared: shared.clone(),
            ready: ready.clone(),
        });
        let abort = abort.clone();
        services.spawn(async move {
            let stop = async move { abort.cancelled().await };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                error!(error = %e, "The HTTP server stopped.");
            }
        });
    }
    {
        let shared = shared.clone();
        let abort = abort.clone();
        services.spawn(async move {
            loop {
                let rt = shared.current();
                let retention = chrono::Duration::from_std(rt.config.state.retention)
                    .unwrap_or(chrono::Duration::days(30));
                match rt
                    .store
                    .prune((Utc::now() - retention).timestamp_micros())
                    .await
                {
                    Ok(n) if n > 0 => info!(rows = n, "Pruned old runs and resolved violations."),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "Could not prune the state store."),
                }
                tokio::select! {
                    _ = tokio::time::sleep(PRUNE_EVERY) => {}
                    _ = abort.cancelled() => break,
                }
            }
        });
    }
    services.close();

    let mut stop = CancellationToken::new();
    let mut generation = start_generation(&rt, &stop, &abort);
    // The store is migrated and the rules are loaded (both before `serve`).
    ready.store(true, Ordering::SeqCst);
    info!(rules = rt.rules.len(), "invariantd is running.");
    on_ready(address);

    let mut hangup = hangup_signal();
    loop {
        let answer = tokio::select! {
            _ = &mut stop_when => break,
            Some(()) = hangup.recv() => None,
            Some(answer) = reload_rx.recv() => Some(answer),
        };
        let result = match load_again(&shared) {
            Err(e) => Err(e),
            Ok((config, rules)) => {
                // Runs of the old set finish first: no rule overlaps itself, and metrics are
                // rebuilt from a store no run is still writing to.
                stop.cancel();
                generation.wait().await;
                let current = shared.current();
                let next = match current.reloaded(config, rules).await {
                    Ok(next) => Ok(Arc::new(next)),
                    Err(e) => {
                        error!(error = %e, "Reload failed; the previous rules keep running.");
                        Err(e.to_string())
                    }
                };
                let running = next.as_ref().map_or(current, Arc::clone);
                *shared.current.write().expect("runtime lock") = running.clone();
                stop = CancellationToken::new();
                generation = start_generation(&running, &stop, &abort);
                if next.is_ok() {
                    info!(rules = running.rules.len(), "Reloaded config and rules.");
                }
                next
            }
        };
        if let Some(answer) = answer {
            let _ = answer.send(result.map(|rt| rt.rules.len()));
        }
    }

    info!("Shutting down: abandoning runs in flight and recording them as unknown.");
    stop.cancel();
    abort.cancel();
    let all = async {
        generation.wait().await;
        services.wait().await;
    };
    tokio::select! {
        _ = all => info!("Stopped cleanly."),
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => warn!("Runs did not stop within {SHUTDOWN_GRACE:?}; exiting."),
        _ = shutdown_signal() => warn!("Second signal: exiting now."),
    }
    Ok(())
}

/// Loads the config file and rules again. An invalid new set is refused, with every error
/// logged and returned; the old set keeps running.
fn load_again(shared: &Shared) -> Result<(Config, Vec<Rule>), String> {
    let path = shared.current().config.path.clone();
    crate::app::load(&path).map_err(|diags| {
        for d in &diags.0 {
            error!(error = %d, "Reload refused.");
        }
        diags.to_string()
    })
}

/// SIGHUP notifications (none where there is no SIGHUP).
fn hangup_signal() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            if tx.send(()).await.is_err() {
                break;
            }
        }
    });
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("can listen for SIGTERM");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[tokio::test(start_paused = true)]
    async fn a_run_still_going_when_the_next_is_due_is_skipped_and_counted() {
        let token = CancellationToken::new();
        let skipped = Arc::new(AtomicU64::new(0));
        let skipped2 = skipped.clone();
        let runs = Arc::new(AtomicU64::new(0));
        let runs2 = runs.clone();
        let looping = tokio::spawn(rule_loop(
            "slow".into(),
            Schedule::Every(Duration::from_secs(10)),
            Arc::new(Semaphore::new(4)),
            token.clone(),
            move || {
                skipped2.fetch_add(1, Ordering::SeqCst);
            },
            move || {
                let runs = runs2.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(25)).await; // longer than the period
                }
            },
        ));
        // Due at ~0 (+jitter < 1 s), 10, 20, 30, 40, 50: runs start at 0 and 30; 10 and 20
        // find the first still going, 40 and 50 the second.
        tokio::time::sleep(Duration::from_secs(55)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(skipped.load(Ordering::SeqCst), 4);
        token.cancel();
        looping.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn runs_beyond_the_concurrency_limit_wait_for_a_slot() {
        let token = CancellationToken::new();
        let limit = Arc::new(Semaphore::new(1));
        let active = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let mut loops = Vec::new();
        for name in ["a", "b", "c"] {
            let (active, most) = (active.clone(), most.clone());
            loops.push(tokio::spawn(rule_loop(
                name.into(),
                Schedule::Every(Duration::from_secs(60)),
                limit.clone(),
                token.clone(),
                || {},
                move || {
                    let (active, most) = (active.clone(), most.clone());
                    async move {
                        let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        active.fetch_sub(1, Ordering::SeqCst);
                    }
                },
            )));
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(most.load(Ordering::SeqCst), 1);
        token.cancel();
        for l in loops {
            l.await.unwrap();
        }
    }

    #[test]
    fn jitter_is_stable_per_rule_and_small() {
        let every = Schedule::Every(Duration::from_secs(60));
        assert_eq!(jitter("a", &every), jitter("a", &every));
        assert!(jitter("a", &every) < Duration::from_secs(6));
        assert!(jitter("b", &Schedule::Every(Duration::from_secs(3600))) < Duration::from_secs(10));
        let names: std::collections::HashSet<Duration> = (0..100)
            .map(|i| jitter(&format!("rule_{i}"), &every))
            .collect();
        assert!(names.len() > 50, "jitter spreads rules out");
    }

    #[test]
    fn cron_lines_fire_at_their_next_match() {
        let Schedule::Cron { cron, .. } = Schedule::cron("*/15 * * * *").unwrap() else {
            panic!()
        };
        let at = "2026-11-26T10:07:30Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            next_cron(&cron, at).unwrap().to_rfc3339(),
            "2026-11-26T10:15:00+00:00"
        );
        let Schedule::Cron { cron, .. } = Schedule::cron("30 * * * * *").unwrap() else {
            panic!()
        };
        assert_eq!(
            next_cron(&cron, at).unwrap().to_rfc3339(),
            "2026-11-26T10:08:30+00:00"
        );
    }
}
