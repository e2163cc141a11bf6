//! The lease keeper: every `cluster.renew` it renews what this replica holds and reads every
//! lease (in one transaction), by the state store's clock, and gives up at once (publishes
//! without it) any lease whose renewal failed or found another holder; beats its heartbeat
//! (`replica/ID`); counts the live replicas from their heartbeats and takes or releases
//! `rule/NAME` leases to run its fair share (`context::cluster::share`); and takes `alerting`
//! and `leader` when they are free. The leader forgets, every ten minutes, the heartbeats of
//! replicas gone for an hour. When the state store cannot be reached, the leases it could
//! not renew are dropped at their local deadline. On shutdown it releases everything, so that
//! the others take over at once.
//!
//! It also says whether this replica is alone (no other live replica, every rule held here),
//! and wakes every service when that changes: alone, they wait for this process's own
//! changes instead of looking for others'.
//!
//! The rest of the daemon follows what it publishes (`Membership`): the scheduler runs the
//! rules held, the alert services run under `alerting`, the metrics export the cluster-wide
//! series under `leader` (which reads them from the store again each round, for the rules
//! other replicas run, unless it is alone and runs them all).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::ServiceResult;
use crate::context::Handle;
use crate::context::cluster::{
    ALERTING, Held, LEADER, REPLICA_PREFIX, RULE_PREFIX, replica_lease, rule_lease, share,
};
use crate::state::{LeaseRow, StateError, StateStore};

/// How long a replica's heartbeat stays listed after it stopped beating.
const FORGET_REPLICAS_AFTER: Duration = Duration::from_secs(3600);
/// How often the leader forgets them: a heartbeat listed a few minutes beyond the hour is
/// harmless, and a statement every round is work an idle daemon need not do.
const FORGET_EVERY: Duration = Duration::from_secs(600);

/// Keeps this replica's leases until `stop`, then releases them.
pub async fn keeper(handle: Arc<Handle>, stop: CancellationToken) -> ServiceResult {
    let me = handle.cluster.clone();
    let mut held = Held::default();
    let mut forgot: Option<Instant> = None;
    let mut failing = false;
    // Live replicas as the last round counted them.
    let mut live = 1;
    loop {
        let ctx = handle.current();
        let rules: Vec<String> = ctx.rules.iter().map(|r| r.name.clone()).collect();
        let config = ctx.config.cluster;
        let store = ctx.store.clone();
        drop(ctx);
        let forget = forgot.is_none_or(|at| at.elapsed() >= FORGET_EVERY);
        let publish = |h: &Held| me.publish(h.clone());
        match round(
            &store,
            &me.replica,
            &rules,
            config.lease,
            &mut held,
            &publish,
        )
        .await
        {
            Ok(counted) => {
                live = counted;
                if forget && held.lease(LEADER).is_some() {
                    match store.forget_replicas(FORGET_REPLICAS_AFTER).await {
                        Ok(_) => forgot = Some(Instant::now()),
                        Err(e) => warn!(error = %e, "Cannot forget replicas long gone."),
                    }
                }
                if std::mem::take(&mut failing) {
                    info!("The leases can be renewed again.");
                }
            }
            Err(e) => {
                if !failing {
                    warn!(error = %e, "Cannot renew this replica's leases; each is given up when it runs out.");
                }
                failing = true;
            }
        }
        // What could not be renewed is given up when it runs out here.
        let now = Instant::now();
        let lapsed: Vec<String> = held
            .all()
            .filter(|(_, deadline)| *deadline <= now)
            .map(|(l, _)| l.name.clone())
            .collect();
        for name in lapsed {
            held.remove(&name);
            warn!(lease = %name, "Lease ran out before it could be renewed: its work stops here.");
        }
        me.publish(held.clone());
        let ctx = handle.current();
        let leader = me.is_leader();
        // Alone and running every rule, its own runs and repairs keep the series current;
        // otherwise other replicas change what it exports.
        let alone = live == 1 && held.rules().len() >= ctx.rules.len();
        // Alone, this process is the store's only writer: what is open per rule is read
        // again only where it wrote.
        ctx.store.set_sole_writer(alone);
        if me.set_alone(alone) {
            // Services that wait for this process's own changes only look for others' again
            // (or stop looking) at once.
            handle.wake.changed_hands();
        }
        if leader
            && !alone
            && let Err(e) = ctx.refresh_metrics().await
        {
            warn!(error = %e, "Cannot read the cluster-wide metrics from the state store.");
        }
        ctx.metrics.set_replica(
            &me.replica,
            held.rules().len(),
            leader,
            held.lease(ALERTING).is_some(),
        );
        drop(ctx);
        tokio::select! {
            () = tokio::time::sleep(config.renew) => {}
            () = stop.cancelled() => break,
        }
    }
    // Given up here first, so that nothing acts on them while they are released.
    let all: Vec<_> = held.all().map(|(l, _)| l.clone()).collect();
    me.publish(Held::default());
    let store = handle.current().store.clone();
    for lease in all {
        if let Err(e) = store.release_lease(&lease).await {
            warn!(lease = %lease.name, error = %e, "Cannot release a lease; it runs out by itself.");
        }
    }
    Ok(())
}

/// One round: renew, beat, share the rules, take `alerting` and `leader` if free; the live
/// replicas it counted. `publish` is told at once of every lease given up, before it is
/// released in the store.
async fn round(
    store: &StateStore,
    replica: &str,
    rules: &[String],
    ttl: Duration,
    held: &mut Held,
    publish: &(dyn Fn(&Held) + Sync),
) -> Result<usize, StateError> {
    let asked = Instant::now();
    let deadline = asked + ttl;
    let current: Vec<_> = held.all().map(|(l, _)| l.clone()).collect();
    // One transaction a round: a replica that is alone with nothing due does this only.
    let (renewed, mut rows) = store.renew_and_list_leases(&current, ttl).await?;
    for lease in &current {
        match renewed
            .iter()
            .find(|r| r.name == lease.name && r.token == lease.token)
        {
            Some(r) => held.insert(r.clone(), deadline),
            None => {
                held.remove(&lease.name);
                warn!(lease = %lease.name, "Lease lost (it expired, or another replica holds it now): its work stops here.");
            }
        }
    }
    if renewed.len() < current.len() {
        publish(held);
    }
    let heartbeat = replica_lease(replica);
    if held.lease(&heartbeat).is_none()
        && let Some(lease) = store.acquire_lease(&heartbeat, replica, ttl).await?
    {
        held.insert(lease, deadline);
        // Listed again with its heartbeat: this replica counts itself.
        rows = store.leases().await?;
    }
    let live = rows
        .iter()
        .filter(|r| r.name.starts_with(REPLICA_PREFIX) && !r.expired)
        .count()
        .max(1);
    let mine = held.rules();
    let others: BTreeSet<String> = rows
        .iter()
        .filter(|r| !r.expired && r.holder != replica)
        .filter_map(|r| r.name.strip_prefix(RULE_PREFIX).map(str::to_string))
        .collect();
    let plan = share(rules, &mine, &others, live, replica);
    let mut released = Vec::new();
    for rule in &plan.release {
        if let Some(lease) = held.remove(&rule_lease(rule)) {
            released.push(lease);
        }
    }
    if !released.is_empty() {
        publish(held);
        for lease in &released {
            store.release_lease(lease).await?;
        }
        info!(rules = %plan.release.join(", "), live, "Gave rules up to the other replicas.");
    }
    let mut taken = Vec::new();
    for rule in &plan.take {
        if let Some(lease) = store.acquire_lease(&rule_lease(rule), replica, ttl).await? {
            held.insert(lease, deadline);
            taken.push(rule.as_str());
        }
    }
    if !taken.is_empty() {
        info!(rules = %taken.join(", "), live, "Took rules to run.");
    }
    for name in [ALERTING, LEADER] {
        if held.lease(name).is_none()
            && !held_by_another(&rows, name, replica)
            && let Some(lease) = store.acquire_lease(name, replica, ttl).await?
        {
            info!(lease = name, "Took the lease.");
            held.insert(lease, deadline);
        }
    }
    Ok(live)
}

fn held_by_another(rows: &[LeaseRow], name: &str, replica: &str) -> bool {
    rows.iter()
        .any(|r| r.name == name && !r.expired && r.holder != replica)
}

/// Runs the service `start` makes while this replica holds the lease `name`: started when it
/// is taken, stopped (its token cancelled, and waited for) the moment it is lost, started
/// again if it is taken again; until `stop`. A service that fails fails this one.
pub async fn under_lease<F, Fut>(
    handle: Arc<Handle>,
    name: &'static str,
    stop: CancellationToken,
    start: F,
) -> ServiceResult
where
    F: Fn(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ServiceResult>,
{
    let mut held = handle.cluster.subscribe();
    loop {
        // Wait until it is held.
        loop {
            if held.borrow_and_update().lease(name).is_some() {
                break;
            }
            tokio::select! {
                changed = held.changed() => if changed.is_err() { return Ok(()) },
                () = stop.cancelled() => return Ok(()),
            }
        }
        let token = stop.child_token();
        let service = start(token.clone());
        tokio::pin!(service);
        // Until it is lost, or the service ends.
        let lost = async {
            loop {
                if held.changed().await.is_err() || held.borrow().lease(name).is_none() {
                    return;
                }
            }
        };
        tokio::select! {
            result = &mut service => {
                if stop.is_cancelled() {
                    return result;
                }
                result?;
                if handle.cluster.lease(name).is_some() {
                    return Err(format!("it ended while holding the {name} lease"));
                }
                // It found the lease gone before this did: taken up again when held again.
            }
            () = lost => {
                info!(lease = name, "Lease gone: its work stops here.");
                token.cancel();
                service.await?;
            }
        }
    }
}
