//! `invariantd run`: supervision — start-up order, the long-running services, and the one
//! shutdown path.
//!
//! Start-up: the caller has loaded config and rules and opened the state store (`Context`).
//! `start` binds the HTTP listener, then registers every long-running service with the
//! supervisor: the scheduler (one loop per rule of the generation in force that this replica
//! holds the lease of, and the swap to a new generation on reload), the lease keeper
//! (`cluster`), the reader of partitioned sweeps' key ranges (`sweeps`), the HTTP server, the
//! pruner, the source probe, the alert evaluator and delivery (`alerting`, while this replica
//! holds the `alerting` lease), the repair workers (`repairs`), and any service the caller
//! adds. A SQLite state store's sole writer first ends the leases a dead process left.
//! Only then is the daemon ready.
//!
//! Idle is idle: on a replica that is alone (`cluster::Membership::alone`), every change to
//! the state store is this process's own, so the services that would otherwise look for
//! others' changes wait for the wake-ups of this process's parts (`context::Wake`) and for
//! what they know to be due, and look on their own at most every `ALONE_LONGEST`. What is
//! left with nothing due is the lease keeper's renewal.
//!
//! Control arrives one way: `Control` messages on the handle's channel, sent by the signal
//! forwarder (`signals`) and the API alike. A reload is loaded and validated here; an invalid
//! set is refused and the old one keeps running.
//!
//! A service that stops while the daemon runs — returns, fails or panics — is never left as a
//! silent half-daemon: the daemon turns not ready, shuts down, and exits with an error naming
//! the service and why.
//!
//! Shutdown: the abort token is cancelled. Loops stop scheduling; runs in flight are abandoned
//! (their queries are stopped on the servers, their read transactions roll back) and recorded
//! as unknown (`cancelled`), so nothing is half-written; then the keeper releases the leases,
//! so that other replicas take the work at once. If services have not stopped within
//! `shutdown_grace`, the log names the runs still going and the process exits anyway (a thread
//! outside the runtime makes sure of it); a second signal quits at once.

pub mod alerting;
pub mod cluster;
pub mod probe;
pub mod prune;
pub mod repairs;
pub mod runner;
pub mod signals;
pub mod store;
pub mod sweeps;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::context::cluster::{ALERTING, rule_lease};
use crate::context::{Context, Control, Handle, ReloadError, Reloaded};
use crate::state::StateError;

pub use runner::{RunLog, run_and_record, run_once};

/// What a long-running service returns when it stops: `Ok` when asked to, else why it failed.
pub type ServiceResult = Result<(), String>;

/// The longest a service of a replica that is alone waits, woken by nothing and with nothing
/// due, before it looks anyway: a safety net against a wake-up missed or a wall clock that
/// jumped, not how changes are found.
pub const ALONE_LONGEST: std::time::Duration = std::time::Duration::from_secs(900);

/// A long-running part of the daemon, registered with the supervisor by name.
pub struct Service {
    pub name: &'static str,
    pub task: Pin<Box<dyn Future<Output = ServiceResult> + Send>>,
}

impl Service {
    pub fn new(
        name: &'static str,
        task: impl Future<Output = ServiceResult> + Send + 'static,
    ) -> Service {
        Service {
            name,
            task: Box::pin(task),
        }
    }
}

/// Why the daemon stopped other than by being asked to.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    SecondWriter(#[from] crate::state::WriterError),
    #[error("the {service} service stopped: {reason}")]
    ServiceDied {
        service: &'static str,
        reason: String,
    },
}

/// A started daemon.
pub struct Running {
    pub handle: Arc<Handle>,
    /// Where the HTTP server listens (for a `:0` port, the one the system chose).
    pub address: SocketAddr,
    supervisor: tokio::task::JoinHandle<Result<(), DaemonError>>,
}

impl Running {
    /// Waits until the daemon has stopped: `Ok` after a requested shutdown.
    pub async fn wait(self) -> Result<(), DaemonError> {
        match self.supervisor.await {
            Ok(result) => result,
            Err(e) => Err(DaemonError::ServiceDied {
                service: "supervisor",
                reason: e.to_string(),
            }),
        }
    }
}

/// `run`: the daemon until SIGTERM or SIGINT, reloading on SIGHUP.
pub async fn serve(ctx: Context) -> Result<(), DaemonError> {
    let running = start(ctx, Vec::new()).await?;
    let handle = running.handle.clone();
    tokio::select! {
        result = running.wait() => result,
        // Forwards signals for as long as the daemon runs; never ends on its own.
        never = signals::forward(handle) => never,
    }
}

/// Starts the daemon on `ctx` with the standard services and `extra` ones, and returns once it
/// listens and is ready. Stop it with `Control::Shutdown` through `handle`.
pub async fn start(ctx: Context, extra: Vec<Service>) -> Result<Running, DaemonError> {
    // A SQLite state store has one writer: a second daemon on it is refused before it binds
    // or runs anything. The lock is held until the supervisor ends.
    let sole_writer = ctx.store.sole_writer()?;
    if sole_writer.is_some() {
        // The only process on this store: leases left can only be a dead one's.
        if let Err(e) = ctx.store.expire_all_leases().await {
            warn!(error = %e, "Cannot clear the leases of an earlier process; they run out by themselves.");
        }
    }
    let listen = ctx.config.http_listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| DaemonError::Listen {
            address: listen,
            source,
        })?;
    let address = listener
        .local_addr()
        .map_err(|source| DaemonError::Listen {
            address: listen,
            source,
        })?;
    let probes_listener = match ctx.config.probes_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| DaemonError::Listen { address, source })?,
        ),
        None => None,
    };
    let rules = ctx.rules.len();
    let sources = ctx.config.sources.len();
    let config_path = ctx.config.path.display().to_string();
    let grace = ctx.config.shutdown_grace;
    let (handle, control) = Handle::new(Arc::new(ctx));
    let abort = CancellationToken::new();
    let log = Arc::new(RunLog::new(handle.wake.clone()));
    let (swaps_tx, swaps_rx) = mpsc::channel(1);
    let delivery_wake = Arc::new(tokio::sync::Notify::new());

    // The keeper releases the leases once the scheduler has stopped (its abandoned runs are
    // recorded under their leases first).
    let keeper_stop = CancellationToken::new();
    let mut services = vec![
        Service::new(
            "scheduler",
            scheduler(
                handle.clone(),
                swaps_rx,
                abort.clone(),
                log.clone(),
                keeper_stop.clone(),
            ),
        ),
        Service::new("lease-keeper", cluster::keeper(handle.clone(), keeper_stop)),
        Service::new(
            "range-reader",
            sweeps::worker(handle.clone(), abort.clone()),
        ),
        Service::new("http", {
            let app = crate::http::router(handle.clone());
            let stop = abort.clone();
            async move {
                let stopped = stop.clone();
                crate::http::serve::serve(listener, app, stopped)
                    .await
                    .map_err(|e| e.to_string())?;
                if stop.is_cancelled() {
                    Ok(())
                } else {
                    Err("the server stopped accepting connections".into())
                }
            }
        }),
        Service::new("pruner", prune::service(handle.clone(), abort.clone())),
        Service::new("store-watch", store::service(handle.clone(), abort.clone())),
        Service::new(
            "source-probe",
            probe::service(handle.clone(), abort.clone(), log.clone()),
        ),
        Service::new("alert-evaluator", {
            let (h, log, wake) = (handle.clone(), log.clone(), delivery_wake.clone());
            cluster::under_lease(handle.clone(), ALERTING, abort.clone(), move |stop| {
                alerting::evaluator(h.clone(), stop, log.clone(), wake.clone())
            })
        }),
        Service::new("alert-delivery", {
            let h = handle.clone();
            cluster::under_lease(handle.clone(), ALERTING, abort.clone(), move |stop| {
                alerting::delivery(h.clone(), stop, delivery_wake.clone())
            })
        }),
        Service::new(
            "repairs",
            repairs::service(handle.clone(), abort.clone(), log.clone()),
        ),
    ];
    if let Some(listener) = probes_listener {
        let app = crate::http::probes_router(handle.clone());
        let stop = abort.clone();
        services.push(Service::new("probes-http", async move {
            crate::http::serve::serve(listener, app, stop.clone())
                .await
                .map_err(|e| e.to_string())?;
            if stop.is_cancelled() {
                Ok(())
            } else {
                Err("the probes' server stopped accepting connections".into())
            }
        }));
    }
    services.extend(extra);
    let mut tasks = JoinSet::new();
    for service in services {
        let name = service.name;
        tasks.spawn(async move { (name, service.task.await) });
    }
    log_warnings(&handle.current());
    // The store is migrated and the rules are loaded (both before `start`).
    handle.health.set_ready(true);
    info!(
        version = %env!("CARGO_PKG_VERSION"),
        config = %config_path,
        rules,
        sources,
        address = %address,
        "invariantd is running: /metrics, /healthz, /readyz and /api/v1 on the address."
    );
    let supervised = supervise(handle.clone(), control, tasks, swaps_tx, abort, log, grace);
    let supervisor = tokio::spawn(async move {
        let result = supervised.await;
        drop(sole_writer);
        result
    });
    Ok(Running {
        handle,
        address,
        supervisor,
    })
}

/// Logs what is valid in the rules but probably not meant.
fn log_warnings(ctx: &Context) {
    let config_warnings = ctx.config.alerting.warnings.iter();
    for w in config_warnings.chain(ctx.rules.iter().flat_map(|r| &r.warnings)) {
        warn!(warning = %w, "Rule warning.");
    }
}

/// A reload for the scheduler to carry out: who asked, and where the answer goes.
struct Swap {
    by: String,
    reply: Option<oneshot::Sender<Result<Reloaded, ReloadError>>>,
}

/// How long after `shutdown_grace` a stopping daemon that has not exited is made to exit.
const FORCED_EXIT_AFTER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Sets its flag when dropped: the supervisor has returned.
struct Disarm(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Disarm {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn supervise(
    handle: Arc<Handle>,
    mut control: mpsc::Receiver<Control>,
    mut tasks: JoinSet<(&'static str, ServiceResult)>,
    swaps: mpsc::Sender<Swap>,
    abort: CancellationToken,
    log: Arc<RunLog>,
    grace: std::time::Duration,
) -> Result<(), DaemonError> {
    let mut failure = None;
    loop {
        tokio::select! {
            message = control.recv() => match message {
                Some(Control::Reload { by, reply }) => {
                    if let Err(mpsc::error::SendError(swap)) = swaps.send(Swap { by, reply }).await
                        && let Some(reply) = swap.reply
                    {
                        let _ = reply.send(Err(ReloadError::ShuttingDown));
                    }
                }
                Some(Control::Shutdown) | None => {
                    info!("Shutting down: abandoning runs in flight and recording them as unknown.");
                    break;
                }
                Some(Control::Quit) => {
                    warn!("Quitting at once.");
                    abort.cancel();
                    return Ok(());
                }
            },
            Some(joined) = tasks.join_next() => {
                let (service, reason) = match joined {
                    Ok((name, Ok(()))) => (name, "it ended while the daemon was running".to_string()),
                    Ok((name, Err(e))) => (name, e),
                    Err(e) => ("unknown", format!("it panicked: {e}")),
                };
                handle.health.set_ready(false);
                error!(service, reason = %reason, "A service stopped; shutting the daemon down.");
                failure = Some(DaemonError::ServiceDied { service, reason });
                break;
            }
        }
    }
    handle.health.set_ready(false);
    abort.cancel();
    // The last resort, on a thread of its own so that it needs nothing from the runtime: if
    // the supervisor has not returned well after the grace (the runtime's timers or threads
    // held by a task that does not yield), the process exits anyway. Returning disarms it (the
    // demo runs the daemon inside a longer-lived process).
    let returned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _disarm = Disarm(returned.clone());
    std::thread::spawn(move || {
        std::thread::sleep(grace + FORCED_EXIT_AFTER_GRACE);
        if !returned.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!(
                "invariantd: still running {} after the shutdown grace; exiting now.",
                humantime::format_duration(FORCED_EXIT_AFTER_GRACE)
            );
            std::process::exit(1);
        }
    });
    let drain = async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(e))) => {
                    warn!(service = name, error = %e, "A service failed while stopping.")
                }
                Err(e) => warn!(error = %e, "A service panicked while stopping."),
            }
        }
    };
    let second_signal = async {
        loop {
            match control.recv().await {
                Some(Control::Quit | Control::Shutdown) | None => return,
                Some(Control::Reload { reply, .. }) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(ReloadError::ShuttingDown));
                    }
                }
            }
        }
    };
    tokio::select! {
        () = drain => info!("Stopped cleanly."),
        () = tokio::time::sleep(grace) => {
            let runs = log.in_flight.describe();
            warn!(
                runs = %runs.join(", "),
                "Services did not stop within the shutdown grace of {}; exiting with these runs still going.",
                humantime::format_duration(grace)
            );
        }
        () = second_signal => warn!("Second signal: exiting now."),
    }
    failure.map_or(Ok(()), Err)
}

/// The scheduler service: one loop per rule of the generation in force whose lease this
/// replica holds (started as the lease keeper takes a rule, stopped with its run abandoned the
/// moment the lease is lost or given up), and reloads — loaded
/// and checked, then the loops of rules removed or changed stop (their runs finish first, so
/// no rule overlaps itself and their metrics are rebuilt from a store none of their runs still
/// writes to), the new generation is put in force, and loops start for the rules added or
/// changed; unchanged rules' loops go on. Each reload is audited here, once. A rule loop that
/// dies fails the service.
async fn scheduler(
    handle: Arc<Handle>,
    mut swaps: mpsc::Receiver<Swap>,
    abort: CancellationToken,
    log: Arc<RunLog>,
    keeper: CancellationToken,
) -> ServiceResult {
    // However the scheduler ends, the keeper then releases the leases.
    let _release = keeper.drop_guard();
    let mut loops = Loops::new(&handle.current());
    let mut held = handle.cluster.subscribe();
    // What the keeper may have published before this subscribed.
    let now_held = held.borrow_and_update().rules();
    loops.follow(&handle, &now_held, &abort, &log).await?;
    loop {
        tokio::select! {
            () = abort.cancelled() => break,
            changed = held.changed() => {
                if changed.is_err() {
                    break;
                }
                let rules = held.borrow_and_update().rules();
                loops.follow(&handle, &rules, &abort, &log).await?;
            }
            swap = swaps.recv() => {
                let Some(swap) = swap else { break };
                // Loaded and checked before anything stops: an invalid set is refused and the
                // old one keeps running untouched.
                let result = reload(&handle, &mut loops, &abort, &log).await?;
                // One audit entry per reload, with who asked and what came of it.
                let outcome = match &result {
                    Ok(r) => serde_json::json!({ "reloaded": true, "rules": r.rules, "changes": r.changes }),
                    Err(e) => serde_json::json!({ "reloaded": false, "error": e.to_string() }),
                };
                handle.audit(&swap.by, "config.reload", "config", outcome).await;
                if let Some(reply) = swap.reply {
                    let _ = reply.send(result);
                }
            }
            Some(joined) = loops.set.join_next() => {
                let reason = match joined {
                    Ok(rule) => format!("the scheduling loop of rule `{rule}` ended"),
                    Err(e) => format!("a rule's scheduling loop panicked: {e}"),
                };
                return Err(reason);
            }
        }
    }
    loops.stop_all().await;
    // The abandoned runs' readers stop their queries on the servers: wait for that, so that
    // no query of ours outlives the daemon.
    if !handle.current().sources.settle(STOP_QUERIES).await {
        warn!(
            "Some abandoned queries could not be stopped within {}; they end by their statement timeout.",
            humantime::format_duration(STOP_QUERIES)
        );
    }
    Ok(())
}

/// Loads and checks the config and rules on disk, works out what changes (once), stops the
/// loops of rules removed or changed, puts the new generation in force and starts the loops of
/// rules added or changed. An invalid set, or one that cannot be put in force, leaves the old
/// one running. The outer error ends the scheduler (a loop that could not be stopped).
async fn reload(
    handle: &Arc<Handle>,
    loops: &mut Loops,
    abort: &CancellationToken,
    log: &Arc<RunLog>,
) -> Result<Result<Reloaded, ReloadError>, String> {
    let current = handle.current();
    let (config, rules) = match crate::context::load(&current.config.path) {
        Ok(loaded) => loaded,
        Err(diags) => {
            for d in &diags.0 {
                error!(error = %d, "Reload refused.");
            }
            return Ok(Err(ReloadError::Invalid(diags)));
        }
    };
    let reload = match current.reload(config, rules) {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "Reload refused.");
            return Ok(Err(ReloadError::Failed(e.to_string())));
        }
    };
    let changes = reload.diff.clone();
    let ending = touched(&current.rules, &changes.rules);
    loops.stop(&ending).await?;
    Ok(match current.apply(reload).await {
        Ok(next) => {
            log_warnings(&next);
            let rules = next.rules.len();
            let starting = touched(&next.rules, &changes.rules);
            handle.replace(Arc::new(next));
            loops.start(handle, &starting, abort, log, false);
            info!(rules, changes = %serde_json::json!(changes), "Reloaded config and rules.");
            Ok(Reloaded { rules, changes })
        }
        Err(e) => {
            error!(error = %e, "Reload failed; the previous rules keep running.");
            loops.start(handle, &ending, abort, log, true);
            Err(ReloadError::Failed(e.to_string()))
        }
    })
}

/// The names of these rules that a reload with these changes does not leave running as they
/// are: the loops it stops (of the old rules) or starts (of the new ones).
fn touched(rules: &[crate::rules::Rule], changes: &crate::context::Changes) -> Vec<String> {
    rules
        .iter()
        .filter(|r| !changes.unchanged(&r.name))
        .map(|r| r.name.clone())
        .collect()
}

/// How long a shutdown waits for abandoned queries to be stopped on their servers.
const STOP_QUERIES: std::time::Duration = std::time::Duration::from_secs(10);

/// The scheduling loops in force, one per rule this replica holds, each with its own stop. A
/// loop reads the generation in force at each run, so a reload that leaves a rule unchanged
/// leaves its loop (and its schedule) running. Runs in flight are abandoned by `abort`
/// (shutdown) or by the rule's lease going (`follow`), not by a loop's stop (a reload lets
/// them finish).
struct Loops {
    set: JoinSet<String>,
    /// Per rule: the loop's stop, and the token cancelled when this replica gives the rule
    /// up (its run in flight is then abandoned, unrecorded).
    stops: HashMap<String, (CancellationToken, CancellationToken)>,
    /// `max_concurrent_runs`, shared by every loop.
    limit: Arc<Semaphore>,
}

impl Loops {
    fn new(ctx: &Context) -> Loops {
        Loops {
            set: JoinSet::new(),
            stops: HashMap::new(),
            limit: Arc::new(Semaphore::new(ctx.config.max_concurrent_runs.max(1))),
        }
    }

    /// Runs the rules in `held` and no other: the loops of rules no longer held stop with their
    /// runs abandoned (another replica runs them now, and this one's result would be refused);
    /// loops start for rules newly held.
    async fn follow(
        &mut self,
        handle: &Arc<Handle>,
        held: &std::collections::BTreeSet<String>,
        abort: &CancellationToken,
        log: &Arc<RunLog>,
    ) -> ServiceResult {
        let lost: Vec<String> = self
            .stops
            .keys()
            .filter(|r| !held.contains(*r))
            .cloned()
            .collect();
        for name in &lost {
            if let Some((_, given_up)) = self.stops.get(name) {
                given_up.cancel();
            }
        }
        self.stop(&lost).await?;
        let gained: Vec<String> = held
            .iter()
            .filter(|r| !self.stops.contains_key(*r))
            .cloned()
            .collect();
        self.start(handle, &gained, abort, log, true);
        Ok(())
    }

    /// Starts the loops of these rules of the generation in force, those this replica holds.
    /// With `resume` (a rule taken over, or kept), an `every` rule keeps the pace of its last
    /// recorded run; without (a rule a reload added or changed), it runs at its jitter.
    fn start(
        &mut self,
        handle: &Arc<Handle>,
        names: &[String],
        abort: &CancellationToken,
        log: &Arc<RunLog>,
        resume: bool,
    ) {
        let ctx = handle.current();
        if self.set.is_empty() {
            // No loop holds the old limit: take the generation's.
            self.limit = Arc::new(Semaphore::new(ctx.config.max_concurrent_runs.max(1)));
        }
        let held = handle.cluster.held().rules();
        for rule in ctx
            .rules
            .iter()
            .filter(|r| names.contains(&r.name) && held.contains(&r.name))
        {
            let stop = CancellationToken::new();
            let given_up = CancellationToken::new();
            self.stops
                .insert(rule.name.clone(), (stop.clone(), given_up.clone()));
            let abort = abort.clone();
            let (skip_handle, run_handle) = (handle.clone(), handle.clone());
            let (skip_name, run_name) = (rule.name.clone(), rule.name.clone());
            let log = log.clone();
            let limit = self.limit.clone();
            let (name, schedule, store) =
                (rule.name.clone(), rule.schedule.clone(), ctx.store.clone());
            self.set.spawn(async move {
                // Where the rule's last run left its pace (this replica's or another's).
                let last = if resume {
                    let runs = store.runs(Some(&name), None, 1).await.unwrap_or_default();
                    runs.first()
                        .and_then(|r| chrono::DateTime::from_timestamp_micros(r.started_us))
                } else {
                    None
                };
                crate::scheduler::rule_loop(
                    name.clone(),
                    schedule,
                    last,
                    limit,
                    stop,
                    move || {
                        let ctx = skip_handle.current();
                        if let Some(rule) = ctx.rule(&skip_name) {
                            ctx.metrics.skipped(rule);
                        }
                    },
                    move |slot| {
                        let (abort, given_up) = (abort.clone(), given_up.clone());
                        let log = log.clone();
                        let handle = run_handle.clone();
                        let name = run_name.clone();
                        async move {
                            scheduled_run(&handle, &name, (&abort, &given_up), &log, slot).await
                        }
                    },
                )
                .await;
                name
            });
        }
    }

    /// Stops the loops of `names` and waits until they have ended (their runs in flight
    /// finish first). A loop that ends meanwhile without being asked fails the scheduler.
    async fn stop(&mut self, names: &[String]) -> ServiceResult {
        let mut waiting: Vec<&String> = Vec::new();
        for name in names {
            if let Some((stop, _)) = self.stops.remove(name) {
                stop.cancel();
                waiting.push(name);
            }
        }
        while !waiting.is_empty() {
            match self.set.join_next().await {
                Some(Ok(ended)) => match waiting.iter().position(|n| **n == ended) {
                    Some(i) => {
                        waiting.swap_remove(i);
                    }
                    None => return Err(format!("the scheduling loop of rule `{ended}` ended")),
                },
                Some(Err(e)) => return Err(format!("a rule's scheduling loop panicked: {e}")),
                None => break,
            }
        }
        Ok(())
    }

    /// Stops every loop and waits for them.
    async fn stop_all(&mut self) {
        for (stop, _) in self.stops.values() {
            stop.cancel();
        }
        self.stops.clear();
        while self.set.join_next().await.is_some() {}
    }
}

/// One scheduled run of `name`, under its lease: none when the lease is no longer held (the
/// loop is about to stop), and a result the store refuses when the lease is lost meanwhile.
async fn scheduled_run(
    handle: &Arc<Handle>,
    name: &str,
    (abort, given_up): (&CancellationToken, &CancellationToken),
    log: &Arc<RunLog>,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let Some(lease) = handle.cluster.lease(&rule_lease(name)) else {
        return;
    };
    let ctx = handle.current();
    let Some(rule) = ctx.rule(name) else { return };
    let under = runner::Under {
        lease: &lease,
        given_up,
    };
    match run_and_record(&ctx, rule, abort, log, Some(slot), Some(under)).await {
        Ok(_) => {
            if handle.health.set_store_problem(None) {
                info!("The state store can be written again: ready.");
            }
        }
        Err(StateError::LeaseLost(_)) => {
            warn!(rule = %rule.name, "The rule's lease was lost or given up during its run: its result is not recorded (another replica runs the rule now).");
        }
        Err(e) => {
            error!(rule = %rule.name, error = %e, "Could not record the rule run; its result is lost and no metric counts it.");
            handle.health.set_store_problem(Some(e.to_string()));
        }
    }
}
