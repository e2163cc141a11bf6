//! invariantd's own health, with one owner: whether each source answers and when a run or a
//! probe last said so, which sources connect with more than read rights, the state store's
//! problems, and readiness. Runs, probes and the store watch write here; `/readyz`, the alert
//! evaluator (sources down) and the metrics (`invariantd_source_up`, exported from here at each
//! scrape) read here. Shared by every generation of the config: a reload keeps what is known
//! of the sources it keeps.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use tokio::time::Instant;

/// What is known of one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceHealth {
    pub up: bool,
    /// When a run or a probe last told.
    pub seen: Instant,
}

#[derive(Debug, Default)]
pub struct Health {
    sources: Mutex<BTreeMap<String, SourceHealth>>,
    /// Sources whose role could do more than read, and why.
    privileged: RwLock<BTreeMap<String, String>>,
    /// Why the last run could not be recorded, until one is: not ready then.
    store_problem: RwLock<Option<String>>,
    /// Why the state store does not answer, while the store watch finds it away.
    store_away: RwLock<Option<String>>,
    ready: AtomicBool,
}

impl Health {
    /// Whether a source could be reached, as a run or a probe found now; whether that is news
    /// (first told, or up where it was down or the other way).
    pub fn source(&self, source: &str, up: bool) -> bool {
        let before = self.sources.lock().expect("health lock").insert(
            source.to_string(),
            SourceHealth {
                up,
                seen: Instant::now(),
            },
        );
        before.is_none_or(|b| b.up != up)
    }

    /// What a run found of the sources it read.
    pub fn observe_run(&self, down: &[String], reached: &[String]) {
        for source in down {
            let _ = self.source(source, false);
        }
        for source in reached {
            let _ = self.source(source, true);
        }
    }

    /// What is known of a source; `None` before a run or a probe has told.
    pub fn source_health(&self, source: &str) -> Option<SourceHealth> {
        self.sources
            .lock()
            .expect("health lock")
            .get(source)
            .copied()
    }

    /// Every source told of, by name.
    pub fn sources(&self) -> BTreeMap<String, SourceHealth> {
        self.sources.lock().expect("health lock").clone()
    }

    /// Of `configured`, the sources last found down.
    pub fn sources_down<'a>(&self, configured: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let sources = self.sources.lock().expect("health lock");
        configured
            .into_iter()
            .filter(|s| sources.get(*s).is_some_and(|h| !h.up))
            .map(str::to_string)
            .collect()
    }

    /// Forgets the sources not in `keep` (a reload removed them).
    pub fn keep_sources(&self, keep: &[String]) {
        self.sources
            .lock()
            .expect("health lock")
            .retain(|s, _| keep.contains(s));
        self.privileged
            .write()
            .expect("health lock")
            .retain(|s, _| keep.contains(s));
    }

    /// Records whether a source's role could do more than read; true when that changed.
    pub fn set_privileged(&self, source: &str, power: Option<String>) -> bool {
        let mut map = self.privileged.write().expect("health lock");
        let before = map.get(source).cloned();
        match &power {
            Some(p) => map.insert(source.to_string(), p.clone()),
            None => map.remove(source),
        };
        before != power
    }

    /// The sources whose role could do more than read, and why.
    pub fn privileged(&self) -> Vec<(String, String)> {
        self.privileged
            .read()
            .expect("health lock")
            .iter()
            .map(|(s, p)| (s.clone(), p.clone()))
            .collect()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Why the last run could not be recorded, if it could not.
    pub fn store_problem(&self) -> Option<String> {
        self.store_problem.read().expect("health lock").clone()
    }

    /// Why the state store does not answer, while it does not.
    pub fn store_away(&self) -> Option<String> {
        self.store_away.read().expect("health lock").clone()
    }

    /// Records whether the store answers; true when that changed.
    pub fn set_store_away(&self, problem: Option<String>) -> bool {
        let mut current = self.store_away.write().expect("health lock");
        let changed = current.is_some() != problem.is_some();
        *current = problem;
        changed
    }

    /// Records whether the last run could be recorded; true when that changed.
    pub fn set_store_problem(&self, problem: Option<String>) -> bool {
        let mut current = self.store_problem.write().expect("health lock");
        let changed = current.is_some() != problem.is_some();
        *current = problem;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_down_only_once_something_said_so_and_a_reload_forgets_removed_ones() {
        let health = Health::default();
        assert_eq!(
            health.sources_down(["orders", "payments"]),
            Vec::<String>::new()
        );
        health.observe_run(&["payments".into()], &["orders".into()]);
        assert_eq!(health.sources_down(["orders", "payments"]), ["payments"]);
        assert!(health.source("payments", true), "down, now up");
        assert!(!health.source("payments", true), "up, still up");
        assert!(health.sources_down(["orders", "payments"]).is_empty());
        assert!(health.set_privileged("orders", Some("superuser".into())));
        assert!(!health.set_privileged("orders", Some("superuser".into())));
        health.keep_sources(&["payments".into()]);
        assert_eq!(health.source_health("orders"), None);
        assert!(health.privileged().is_empty());
    }
}
