//! One generation of the daemon's configuration — config, rules and source pools, on the state
//! store and metrics that every generation shares — and the `Handle` through which the HTTP
//! API, signal handling and the supervisor see the generation in force, ask for a reload or
//! a shutdown (`Control`), and record who changed what in the audit log. Loading config and
//! rules together also lives here, so that both the commands and a reload load them the same
//! way. The replica's identity and the leases it holds are here too (`cluster`).

pub mod cluster;
mod diff;

pub use diff::{Changes, ReloadDiff};

use std::path::Path;
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot};

use crate::auth::{AuthErrors, Tokens};
use crate::config::Config;
use crate::diag::Diagnostics;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::rules::Rule;
use crate::sources::Sources;
use crate::state::{StateError, StateStore};

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Loads the config and its rules, reporting every problem in both.
pub fn load(config_path: &Path) -> Result<(Config, Vec<Rule>), Diagnostics> {
    let (config, mut diags) = crate::config::load_partial(config_path, &env_lookup);
    let Some(config) = config else {
        return Err(diags);
    };
    match crate::rules::load(&config, &env_lookup) {
        Ok(rules) if diags.is_empty() => Ok((config, rules)),
        Ok(_) => Err(diags),
        Err(more) => {
            diags.extend(more);
            Err(diags)
        }
    }
}

/// Loads the config file alone (for commands that need no rules).
pub fn load_config(config_path: &Path) -> Result<Config, Diagnostics> {
    crate::config::load(config_path, &env_lookup)
}

/// Why a generation could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Auth(#[from] AuthErrors),
}

/// The tokens of `auth.tokens_file`, or none.
pub fn tokens(config: &Config) -> Result<Tokens, AuthErrors> {
    match &config.auth.tokens_file {
        Some(path) => Tokens::load(path),
        None => Ok(Tokens::none()),
    }
}

/// Every secret of a generation: the config's passwords and the API tokens.
fn secrets(config: &Config, tokens: &Tokens) -> crate::value::Secrets {
    let mut secrets = config.secrets.clone();
    tokens.add_to(&mut secrets);
    secrets
}

/// Everything a rule run needs: one generation of config and rules, with the store and metrics
/// shared by every generation.
pub struct Context {
    pub config: Config,
    pub rules: Vec<Rule>,
    pub sources: Sources,
    /// Who may use the API: read from `auth.tokens_file` with each generation, so a reload
    /// rotates tokens.
    pub tokens: Tokens,
    pub store: Arc<StateStore>,
    pub metrics: Arc<Metrics>,
    /// What is known of the sources, the store and readiness, shared by every generation.
    pub health: Arc<Health>,
}

/// A reload worked out against the generation in force (`Context::reload`), to be applied.
pub struct Reload {
    config: Config,
    rules: Vec<Rule>,
    tokens: Tokens,
    /// What it adds, changes and removes.
    pub diff: ReloadDiff,
}

impl Context {
    /// Reads the tokens file, opens the state store (migrating it) and restores the metrics.
    pub async fn start(config: Config, rules: Vec<Rule>) -> Result<Context, StartError> {
        let tokens = tokens(&config)?;
        if let Some(w) = config
            .auth
            .tokens_file
            .as_deref()
            .and_then(|p| tokens.warning(p))
        {
            tracing::warn!("{w}");
        }
        let secrets = secrets(&config, &tokens);
        let store = Arc::new(StateStore::open(&config.state).await?);
        // A key that cannot be used stops the start, not the first approval.
        store.audit_key()?;
        let health = Arc::new(Health::default());
        let metrics = Arc::new(Metrics::new(
            config.metric_rule_labels.clone(),
            health.clone(),
        ));
        restore(&metrics, &rules, &store).await?;
        set_receivers(&metrics, &config);
        Ok(Context {
            sources: Sources::new(&config.sources, secrets),
            tokens,
            config,
            rules,
            store,
            metrics,
            health,
        })
    }

    /// The next generation and what changes, worked out once, before anything stops: a
    /// tokens file that cannot be read refuses the reload here.
    pub fn reload(&self, mut config: Config, rules: Vec<Rule>) -> Result<Reload, StartError> {
        if self.config.repairs.dry_run_forced {
            config.repairs.dry_run = true;
            config.repairs.dry_run_forced = true;
        }
        let tokens = tokens(&config)?;
        let diff = ReloadDiff::between(
            (&self.config, &self.rules, &self.tokens),
            (&config, &rules, &tokens),
        );
        Ok(Reload {
            config,
            rules,
            tokens,
            diff,
        })
    }

    /// `reload` and `apply` in one step; and what changed.
    pub async fn reloaded(
        &self,
        config: Config,
        rules: Vec<Rule>,
    ) -> Result<(Context, ReloadDiff), StartError> {
        let reload = self.reload(config, rules)?;
        let diff = reload.diff.clone();
        Ok((self.apply(reload).await?, diff))
    }

    /// The next generation: new config and rules on the same store, metrics and health, the
    /// unchanged sources' pools kept.
    pub async fn apply(&self, reload: Reload) -> Result<Context, StartError> {
        let Reload {
            config,
            rules,
            tokens,
            diff,
        } = reload;
        let secrets = secrets(&config, &tokens);
        if config.http_listen != self.config.http_listen {
            tracing::warn!("A new http.listen takes effect at the next restart.");
        }
        let sources: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
        self.health.keep_sources(&sources);
        // The series of rules removed or changed go; those of the new and changed rules come
        // back from the store, whose counters are cumulative. Unchanged rules, whose loops go
        // on running, keep theirs untouched.
        let gone: Vec<Rule> = self
            .rules
            .iter()
            .filter(|r| !diff.rules.unchanged(&r.name))
            .cloned()
            .collect();
        self.metrics.forget(&gone);
        self.metrics
            .set_rule_labels(config.metric_rule_labels.clone());
        let fresh: Vec<Rule> = rules
            .iter()
            .filter(|r| !diff.rules.unchanged(&r.name))
            .cloned()
            .collect();
        restore(&self.metrics, &fresh, &self.store).await?;
        set_receivers(&self.metrics, &config);
        let context = Context {
            sources: self
                .sources
                .reloaded(&config.sources, secrets, |s| diff.sources.kept(s)),
            tokens,
            config,
            rules,
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            health: self.health.clone(),
        };
        Ok(context)
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// The receivers in force, as the metrics name them.
fn set_receivers(metrics: &Metrics, config: &Config) {
    let receivers: Vec<(String, &'static str)> = config
        .alerting
        .receivers
        .iter()
        .map(|r| (r.name.clone(), r.kind.kind()))
        .collect();
    metrics.set_receivers(&receivers);
}

impl Context {
    /// Sets the cluster-wide series of every rule from the state store again: the leader does
    /// it each round, for the rules that other replicas run.
    pub async fn refresh_metrics(&self) -> Result<(), StateError> {
        restore(&self.metrics, &self.rules, &self.store).await
    }
}

async fn restore(metrics: &Metrics, rules: &[Rule], store: &StateStore) -> Result<(), StateError> {
    let totals = store.totals().await?;
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    let snapshots = store.rule_snapshots(&names).await?;
    metrics.restore(rules, &totals, &snapshots);
    if rules.iter().any(|r| r.repair.is_some()) {
        metrics.repairs(rules, &totals, &store.repair_summaries().await?);
    }
    let versions: Vec<(&str, &str)> = rules
        .iter()
        .map(|r| (r.name.as_str(), r.fingerprint.as_str()))
        .collect();
    let full = store.last_full_sweeps(&versions).await?;
    for rule in rules {
        metrics.set_last_full_sweep(rule, full.get(&rule.name).copied().flatten());
    }
    Ok(())
}

/// A reload that went through: the rules now in force, and what changed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    pub rules: usize,
    pub changes: ReloadDiff,
}

/// Why a reload did not take effect.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    #[error("the new configuration is invalid; the previous one keeps running")]
    Invalid(Diagnostics),
    #[error("the reload failed ({0}); the previous configuration keeps running")]
    Failed(String),
    #[error("invariantd is shutting down")]
    ShuttingDown,
}

/// What the supervisor is asked to do, from signals and the API alike.
#[derive(Debug)]
pub enum Control {
    /// Load config and rules again (SIGHUP, `POST /api/v1/reload`); the answer goes to the
    /// sender, when there is one.
    Reload {
        /// Who asked (a token's name, or the signal), for the audit log.
        by: String,
        reply: Option<oneshot::Sender<Result<Reloaded, ReloadError>>>,
    },
    /// Stop scheduling, abandon the runs in flight and exit cleanly (SIGTERM, SIGINT).
    Shutdown,
    /// Exit now, without waiting for anything (a second SIGTERM or SIGINT).
    Quit,
}

/// Wake-ups between the parts of the daemon: a change one part makes that another acts on at
/// once rather than at its next tick.
#[derive(Default)]
pub struct Wake {
    /// The alert evaluator looks at once: a run was recorded, a silence added or expired, a
    /// repair decided.
    pub alerts: tokio::sync::Notify,
    /// The repair service looks at once: repairs planned or approved, or their violation
    /// resolved.
    pub repairs: tokio::sync::Notify,
    /// The range reader looks at once: this replica started a partitioned sweep.
    pub parts: tokio::sync::Notify,
    /// The rules' holders waiting for their sweeps look at once: a range was read here.
    pub parts_done: tokio::sync::Notify,
}

impl Wake {
    /// Everything that might have changed: a new generation, or another replica that came or
    /// went (`cluster::Membership::alone`).
    pub fn changed_hands(&self) {
        self.alerts.notify_one();
        self.repairs.notify_one();
        self.parts.notify_one();
    }
}

/// What the HTTP server and signal handling share with the supervisor.
pub struct Handle {
    current: RwLock<Arc<Context>>,
    /// Wake-ups for the services that act on what another part changed.
    pub wake: Arc<Wake>,
    control: mpsc::Sender<Control>,
    /// Sources, the store and readiness (`health`): the same for every generation.
    pub health: Arc<Health>,
    /// This replica, and the leases it holds.
    pub cluster: Arc<cluster::Membership>,
}

impl Handle {
    /// A handle on `context`, and the receiving end of its control channel (the supervisor's).
    pub fn new(context: Arc<Context>) -> (Arc<Handle>, mpsc::Receiver<Control>) {
        let (tx, rx) = mpsc::channel(8);
        let handle = Handle {
            health: context.health.clone(),
            current: RwLock::new(context),
            wake: Arc::default(),
            control: tx,
            cluster: Arc::default(),
        };
        (Arc::new(handle), rx)
    }

    /// The generation in force now.
    pub fn current(&self) -> Arc<Context> {
        self.current.read().expect("context lock").clone()
    }

    /// Records a change someone made (`actor`: a token's name, or `signal`) in the audit log.
    /// A failure to record is logged: the change itself has been made.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        details: serde_json::Value,
    ) {
        let entry = crate::state::AuditEntry {
            actor: actor.into(),
            action: action.into(),
            subject: subject.into(),
            details,
        };
        let now_us = chrono::Utc::now().timestamp_micros();
        if let Err(e) = self.current().store.audit(&entry, now_us).await {
            tracing::error!(error = %e, action, subject, "Could not record the change in the audit log.");
        }
    }

    /// Puts a new generation in force.
    pub fn replace(&self, context: Arc<Context>) {
        *self.current.write().expect("context lock") = context;
        // Rules, routes and sources may have come or gone: every service looks again.
        self.wake.changed_hands();
    }

    /// Sends a control message; false when nobody listens any more.
    pub async fn send(&self, control: Control) -> bool {
        self.control.send(control).await.is_ok()
    }

    /// Asks for a reload and waits for the answer: the number of rules now in force.
    pub async fn reload(&self, by: &str) -> Result<Reloaded, ReloadError> {
        let (tx, rx) = oneshot::channel();
        let control = Control::Reload {
            by: by.to_string(),
            reply: Some(tx),
        };
        if !self.send(control).await {
            return Err(ReloadError::ShuttingDown);
        }
        rx.await.unwrap_or(Err(ReloadError::ShuttingDown))
    }
}
