//! This replica among the daemons that share one state store: its identity (random per
//! process, never the host name: two processes on one host are two replicas) and the leases it
//! holds now, as the lease keeper (`daemon::cluster`) last took or renewed them.
//!
//! The parts that work under a lease read it here: the scheduler runs the rules whose
//! `rule/NAME` lease this replica holds, the alert services run while it holds `alerting`, and
//! the cluster-wide metrics are exported while it holds `leader`. Each guarded write carries
//! the lease it was made under, and the store refuses it when the lease is no longer this
//! replica's. A lease counts as held here only until its local deadline (when it was asked for,
//! plus its length, by this process's monotonic clock): a replica that was paused past its
//! lease stops acting on it before its keeper even wakes.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::state::Lease;

/// Held by the replica that exports the cluster-wide metrics.
pub const LEADER: &str = "leader";
/// Held by the replica that evaluates and delivers alerts.
pub const ALERTING: &str = "alerting";
/// The prefix of the per-rule leases (`rule/NAME`): the holder runs the rule.
pub const RULE_PREFIX: &str = "rule/";
/// The prefix of the replicas' heartbeats (`replica/ID`): a live replica renews its own.
pub const REPLICA_PREFIX: &str = "replica/";

/// The lease that lets a replica run `rule`.
pub fn rule_lease(rule: &str) -> String {
    format!("{RULE_PREFIX}{rule}")
}

/// A replica's heartbeat lease.
pub fn replica_lease(replica: &str) -> String {
    format!("{REPLICA_PREFIX}{replica}")
}

/// The leases a replica holds, each with its local deadline.
#[derive(Debug, Clone, Default)]
pub struct Held {
    leases: BTreeMap<String, (Lease, Instant)>,
}

impl Held {
    /// Holds `lease` until `deadline` (by this process's clock).
    pub fn insert(&mut self, lease: Lease, deadline: Instant) {
        self.leases.insert(lease.name.clone(), (lease, deadline));
    }

    pub fn remove(&mut self, name: &str) -> Option<Lease> {
        self.leases.remove(name).map(|(l, _)| l)
    }

    /// The lease named `name`, while it is held and its local deadline has not passed.
    pub fn lease(&self, name: &str) -> Option<&Lease> {
        self.leases
            .get(name)
            .filter(|(_, deadline)| *deadline > Instant::now())
            .map(|(l, _)| l)
    }

    /// Every lease held, with its local deadline (expired ones too: the keeper drops them).
    pub fn all(&self) -> impl Iterator<Item = (&Lease, Instant)> {
        self.leases.values().map(|(l, d)| (l, *d))
    }

    /// The rules this replica may run now.
    pub fn rules(&self) -> BTreeSet<String> {
        self.leases
            .keys()
            .filter(|name| self.lease(name).is_some())
            .filter_map(|name| name.strip_prefix(RULE_PREFIX))
            .map(str::to_string)
            .collect()
    }
}

/// This replica: who it is, and what it holds.
pub struct Membership {
    /// Random per process: 16 hex digits.
    pub replica: String,
    held: watch::Sender<Held>,
    /// Whether the keeper's last round found no other live replica and every rule held here:
    /// then nothing changes the state store but this process, and its services need not look
    /// for others' changes (`daemon::Wake`).
    alone: std::sync::atomic::AtomicBool,
}

impl Default for Membership {
    fn default() -> Self {
        Self::new()
    }
}

impl Membership {
    pub fn new() -> Membership {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Membership {
            replica: id[..16].to_string(),
            held: watch::Sender::new(Held::default()),
            alone: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether this replica is, as far as the keeper last saw, the only one: what the store
    /// holds changes only by this process's hand.
    pub fn alone(&self) -> bool {
        self.alone.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The keeper's finding; whether it changed.
    pub fn set_alone(&self, alone: bool) -> bool {
        self.alone.swap(alone, std::sync::atomic::Ordering::Relaxed) != alone
    }

    /// What it holds now.
    pub fn held(&self) -> Held {
        self.held.borrow().clone()
    }

    /// The lease named `name`, if held now.
    pub fn lease(&self, name: &str) -> Option<Lease> {
        self.held.borrow().lease(name).cloned()
    }

    /// Whether this replica exports the cluster-wide metrics now.
    pub fn is_leader(&self) -> bool {
        self.lease(LEADER).is_some()
    }

    /// Told each time the keeper has renewed, taken or lost leases.
    pub fn subscribe(&self) -> watch::Receiver<Held> {
        self.held.subscribe()
    }

    /// The keeper's latest: what is held now.
    pub fn publish(&self, held: Held) {
        self.held.send_replace(held);
    }
}

/// What a replica does with the rule leases in one round of its keeper.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shares {
    /// Rules it gives up: no longer configured, or more than its fair share.
    pub release: Vec<String>,
    /// Free rules it tries to take, best first (another replica may take one first).
    pub take: Vec<String>,
}

/// The fair share of rules: each of `live` replicas runs at most `ceil(rules / live)`, so
/// that together they run every rule. `mine` are the rules this replica holds, `others` those
/// held (unexpired) by other replicas. Which rules a replica keeps or takes follows a stable
/// per-replica preference (rendezvous hashing), so that replicas reaching for free rules at
/// once mostly reach for different ones.
pub fn share(
    rules: &[String],
    mine: &BTreeSet<String>,
    others: &BTreeSet<String>,
    live: usize,
    replica: &str,
) -> Shares {
    let fair = rules.len().div_ceil(live.max(1));
    let configured: BTreeSet<&String> = rules.iter().collect();
    let mut release: Vec<String> = mine
        .iter()
        .filter(|r| !configured.contains(r))
        .cloned()
        .collect();
    let mut kept: Vec<&String> = mine.iter().filter(|r| configured.contains(r)).collect();
    kept.sort_by_key(|r| std::cmp::Reverse(preference(r, replica)));
    if kept.len() > fair {
        release.extend(kept.drain(fair..).cloned());
    }
    let mut free: Vec<&String> = rules
        .iter()
        .filter(|r| !mine.contains(*r) && !others.contains(*r))
        .collect();
    free.sort_by_key(|r| std::cmp::Reverse(preference(r, replica)));
    free.dedup();
    let take = free
        .into_iter()
        .take(fair.saturating_sub(kept.len()))
        .cloned()
        .collect();
    Shares { release, take }
}

/// How much `replica` prefers `rule`: stable for the pair, unrelated between replicas.
fn preference(rule: &str, replica: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // Zero keys: the same value in every process.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (rule, replica).hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(name: &str) -> Lease {
        Lease {
            name: name.into(),
            holder: "r".into(),
            token: 1,
            expires_us: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_past_its_local_deadline_is_not_held_any_more() {
        let mut held = Held::default();
        let now = Instant::now();
        held.insert(lease("rule/a"), now + std::time::Duration::from_secs(30));
        held.insert(lease("rule/b"), now + std::time::Duration::from_secs(5));
        held.insert(lease(LEADER), now + std::time::Duration::from_secs(30));
        assert_eq!(held.rules(), BTreeSet::from(["a".into(), "b".into()]));
        tokio::time::advance(std::time::Duration::from_secs(6)).await;
        assert_eq!(held.rules(), BTreeSet::from(["a".into()]));
        assert!(held.lease("rule/b").is_none());
        assert!(held.lease(LEADER).is_some());
    }

    #[test]
    fn two_replicas_in_one_host_have_two_identities() {
        let (a, b) = (Membership::new(), Membership::new());
        assert_ne!(a.replica, b.replica);
        assert_eq!(a.replica.len(), 16);
    }

    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// Replicas taking turns at random, joining and leaving: no rule is ever taken from a
        /// holder, nobody holds more than its fair share after its turn, and once everyone
        /// has had a turn in a stable cluster every rule has exactly one holder.
        #[test]
        fn replicas_taking_turns_share_every_rule_once(
            rules in 0usize..40,
            replicas in 1usize..6,
            turns in proptest::collection::vec((0usize..6, any::<bool>()), 0..60),
        ) {
            let names: Vec<String> = (0..rules).map(|i| format!("r{i}")).collect();
            let ids: Vec<String> = (0..6).map(|i| format!("replica{i}")).collect();
            let mut alive: BTreeSet<usize> = (0..replicas).collect();
            let mut holder: BTreeMap<String, usize> = BTreeMap::new();
            let turn = |who: usize, alive: &BTreeSet<usize>, holder: &mut BTreeMap<String, usize>| {
                let mine: BTreeSet<String> = holder.iter().filter(|(_, h)| **h == who).map(|(r, _)| r.clone()).collect();
                let others: BTreeSet<String> = holder.iter().filter(|(_, h)| **h != who).map(|(r, _)| r.clone()).collect();
                let plan = share(&names, &mine, &others, alive.len(), &ids[who]);
                for r in &plan.release {
                    prop_assert_eq!(holder.remove(r), Some(who));
                }
                for r in &plan.take {
                    prop_assert!(!holder.contains_key(r), "took {} from its holder", r);
                    holder.insert(r.clone(), who);
                }
                let held = holder.values().filter(|h| **h == who).count();
                prop_assert!(held <= names.len().div_ceil(alive.len()));
                Ok(())
            };
            for (who, leave) in turns {
                if leave && alive.len() > 1 && alive.contains(&who) {
                    // Dies: its leases expire.
                    alive.remove(&who);
                    holder.retain(|_, h| *h != who);
                } else {
                    alive.insert(who);
                    turn(who, &alive, &mut holder)?;
                }
            }
            // Two full rounds of the replicas alive: stable.
            for _ in 0..2 {
                for who in alive.clone() {
                    turn(who, &alive, &mut holder)?;
                }
            }
            prop_assert_eq!(holder.len(), names.len());
            prop_assert!(holder.values().all(|h| alive.contains(h)));
        }
    }
}
