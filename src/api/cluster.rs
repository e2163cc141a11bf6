//! What `GET /api/v1/cluster` answers and `invariantd cluster` prints: the replicas sharing
//! the state store (from their heartbeats), what each holds (the rules it runs, `alerting`,
//! `leader`, the key ranges of partitioned sweeps it reads), and every lease with its holder,
//! token and times. Built from the `leases` table
//! alone, so that the command can read it from the store with no daemon running.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::state::{LeaseRow, parse_part_lease};
use crate::value::format_timestamp;

/// Mirrors `context::cluster`'s names (this layer is below it).
const REPLICA_PREFIX: &str = "replica/";
const RULE_PREFIX: &str = "rule/";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterView {
    /// The replica that answered (none when read from the store by the command).
    pub replica: Option<String>,
    /// Live replicas first, then those whose heartbeat ran out in the last hour.
    pub replicas: Vec<ReplicaView>,
    /// Configured rules no live replica holds now (they run once one takes them).
    pub unheld_rules: Vec<String>,
    pub leases: Vec<LeaseView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaView {
    pub replica: String,
    /// Whether its heartbeat is current.
    pub live: bool,
    /// Its last heartbeat.
    pub heartbeat: String,
    pub leader: bool,
    pub alerting: bool,
    /// The rules it runs.
    pub rules: Vec<String>,
    /// The key ranges of partitioned sweeps it reads now, as `RULE#PART`.
    pub ranges: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseView {
    pub name: String,
    pub holder: String,
    pub token: i64,
    pub acquired: String,
    pub renewed: String,
    pub expires: String,
    pub expired: bool,
}

impl From<&LeaseRow> for LeaseView {
    fn from(r: &LeaseRow) -> LeaseView {
        LeaseView {
            name: r.name.clone(),
            holder: r.holder.clone(),
            token: r.token,
            acquired: format_timestamp(r.acquired_us),
            renewed: format_timestamp(r.renewed_us),
            expires: format_timestamp(r.expires_us),
            expired: r.expired,
        }
    }
}

/// The cluster as the `leases` rows show it, for the `rules` configured.
pub fn cluster_view(rows: &[LeaseRow], me: Option<&str>, rules: &[String]) -> ClusterView {
    let mut replicas: BTreeMap<&str, ReplicaView> = BTreeMap::new();
    for r in rows {
        if let Some(id) = r.name.strip_prefix(REPLICA_PREFIX) {
            replicas.insert(
                id,
                ReplicaView {
                    replica: id.to_string(),
                    live: !r.expired,
                    heartbeat: format_timestamp(r.renewed_us),
                    leader: false,
                    alerting: false,
                    rules: Vec::new(),
                    ranges: Vec::new(),
                },
            );
        }
    }
    let mut held = std::collections::BTreeSet::new();
    for r in rows.iter().filter(|r| !r.expired) {
        let Some(replica) = replicas.get_mut(r.holder.as_str()) else {
            continue;
        };
        match r.name.as_str() {
            "leader" => replica.leader = true,
            "alerting" => replica.alerting = true,
            name => {
                if let Some(rule) = name.strip_prefix(RULE_PREFIX) {
                    replica.rules.push(rule.to_string());
                    held.insert(rule);
                } else if let Some((rule, _, part)) = parse_part_lease(name) {
                    replica.ranges.push(format!("{rule}#{part}"));
                }
            }
        }
    }
    let mut replicas: Vec<ReplicaView> = replicas.into_values().collect();
    replicas.sort_by_key(|r| !r.live);
    ClusterView {
        replica: me.map(str::to_string),
        replicas,
        unheld_rules: rules
            .iter()
            .filter(|r| !held.contains(r.as_str()))
            .cloned()
            .collect(),
        leases: rows.iter().map(LeaseView::from).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, holder: &str, expired: bool) -> LeaseRow {
        LeaseRow {
            name: name.into(),
            holder: holder.into(),
            token: 1,
            acquired_us: 0,
            renewed_us: 0,
            expires_us: 0,
            expired,
        }
    }

    #[test]
    fn replicas_are_listed_with_what_they_hold_and_rules_nobody_holds_are_named() {
        let rows = [
            row("alerting", "b", false),
            row("leader", "a", false),
            row("replica/a", "a", false),
            row("replica/b", "b", false),
            row("replica/c", "c", true),
            row("rule/one", "a", false),
            row("rule/two", "c", true),
            row("part/one/1700000000000000/3", "b", false),
        ];
        let rules = ["one".to_string(), "two".to_string()];
        let view = cluster_view(&rows, Some("b"), &rules);
        assert_eq!(view.replica.as_deref(), Some("b"));
        let ids: Vec<_> = view.replicas.iter().map(|r| r.replica.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(view.replicas[0].leader && view.replicas[0].rules == ["one"]);
        assert!(view.replicas[1].alerting && view.replicas[1].rules.is_empty());
        assert_eq!(view.replicas[1].ranges, ["one#3"]);
        assert!(!view.replicas[2].live && view.replicas[2].rules.is_empty());
        assert_eq!(view.unheld_rules, ["two"]);
        assert_eq!(view.leases.len(), 8);
    }
}
