//! What is open per rule (count, oldest first sighting, impact summed), remembered between
//! reads while this process is the state store's only writer (`StateStore::set_sole_writer`:
//! the daemon says so while it is alone). Then only a write of this process changes what is
//! open, and each one marks its rule as changed when it is done (`changing`): a read asks the
//! store again for the rules changed since they were last read, not for every open
//! violation — with 100,000 open the page, the rule's view and the alert evaluator each read
//! them in a pass that grows with what is open, where a rule that did not change costs nothing.
//!
//! A read races the writes made while it is under way: what it read is kept only for the
//! rules none of them changed meanwhile (a version per rule, taken before the read and
//! compared after); the others stay to be read again. Off (several replicas, or a process
//! that is not the daemon), nothing is kept and every read goes to the store.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rust_decimal::Decimal;

/// One rule's open violations, as the store summed them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Open {
    pub open: i64,
    pub oldest_first_seen_us: Option<i64>,
    pub impact: Option<Decimal>,
}

#[derive(Default)]
pub(crate) struct OpenCache {
    on: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Bumped by each write of the rule, once done.
    versions: HashMap<String, u64>,
    /// Every rule's entry is here (a rule missing has nothing open) once a read of every rule
    /// was kept.
    complete: bool,
    known: HashMap<String, Open>,
    /// Rules written since their entry was read.
    changed: HashSet<String>,
}

/// What a read must ask the store for, and the versions to compare after.
pub(crate) enum Plan {
    /// Nothing: every rule asked for is known.
    Known(HashMap<String, Open>),
    /// Every rule (`None`) or these, with the versions as the read began.
    Read(Option<Vec<String>>, HashMap<String, u64>),
}

/// Marks its rule changed when dropped: after the write's transactions, however it ended.
pub(crate) struct Changing<'a> {
    cache: &'a OpenCache,
    rule: String,
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        let mut inner = self.cache.inner.lock().expect("open cache lock");
        *inner.versions.entry(self.rule.clone()).or_default() += 1;
        inner.changed.insert(self.rule.clone());
    }
}

impl OpenCache {
    pub fn set_on(&self, on: bool) {
        if self.on.swap(on, Ordering::Relaxed) != on {
            // Whatever was kept may be another writer's past: start again.
            *self.inner.lock().expect("open cache lock") = Inner::default();
        }
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Held across a write that changes `rule`'s open violations.
    pub fn changing(&self, rule: &str) -> Changing<'_> {
        Changing {
            cache: self,
            rule: rule.to_string(),
        }
    }

    /// What to read for `rules` (every rule: `None`).
    pub fn plan(&self, rules: Option<&[&str]>) -> Plan {
        let inner = self.inner.lock().expect("open cache lock");
        // The versions of what is read, to compare after (every rule's for a read of all).
        let versions_of = |rules: &[String]| -> HashMap<String, u64> {
            rules
                .iter()
                .filter_map(|r| inner.versions.get(r).map(|v| (r.clone(), *v)))
                .collect()
        };
        if !inner.complete {
            return match rules {
                None => Plan::Read(None, inner.versions.clone()),
                Some(rules) => {
                    let rules: Vec<String> = rules.iter().map(|s| s.to_string()).collect();
                    let versions = versions_of(&rules);
                    Plan::Read(Some(rules), versions)
                }
            };
        }
        let stale: Vec<String> = match rules {
            None => inner.changed.iter().cloned().collect(),
            Some(rules) => rules
                .iter()
                .filter(|r| inner.changed.contains(**r))
                .map(|r| r.to_string())
                .collect(),
        };
        if stale.is_empty() {
            let known = match rules {
                None => inner.known.clone(),
                Some(rules) => rules
                    .iter()
                    .filter_map(|r| inner.known.get(*r).map(|o| (r.to_string(), *o)))
                    .collect(),
            };
            return Plan::Known(known);
        }
        let versions = versions_of(&stale);
        Plan::Read(Some(stale), versions)
    }

    /// Keeps what a read planned as `asked` (every rule: `None`) found, for the rules no write
    /// changed since `versions` were taken; the answer to the caller for `rules`: what was
    /// read, and the rest as known.
    pub fn keep(
        &self,
        asked: Option<&[String]>,
        versions: &HashMap<String, u64>,
        read: HashMap<String, Open>,
        rules: Option<&[&str]>,
    ) -> HashMap<String, Open> {
        let mut inner = self.inner.lock().expect("open cache lock");
        let unchanged = |inner: &Inner, rule: &str| inner.versions.get(rule) == versions.get(rule);
        match asked {
            None => {
                // Every rule was read: the rules written meanwhile stay changed, the others
                // are known now, nothing open where the read found nothing.
                let written: HashSet<String> = inner
                    .versions
                    .iter()
                    .filter(|(r, v)| versions.get(*r) != Some(*v))
                    .map(|(r, _)| r.clone())
                    .collect();
                inner.known = read
                    .iter()
                    .filter(|(r, _)| !written.contains(*r))
                    .map(|(r, o)| (r.clone(), *o))
                    .collect();
                inner.changed = written;
                inner.complete = true;
            }
            Some(asked) if inner.complete => {
                for rule in asked {
                    if unchanged(&inner, rule) {
                        match read.get(rule) {
                            Some(o) => inner.known.insert(rule.clone(), *o),
                            None => inner.known.remove(rule),
                        };
                        inner.changed.remove(rule);
                    }
                }
            }
            // Some rules read before every rule was: nothing to keep them in yet.
            Some(_) => {}
        }
        // The answer: what this read found for what it read, kept or not, and what is known
        // for the rest.
        let mut out: HashMap<String, Open> = match asked {
            None => read,
            Some(asked) => {
                let mut out: HashMap<String, Open> = inner
                    .known
                    .iter()
                    .filter(|(r, _)| !asked.contains(r))
                    .map(|(r, o)| (r.clone(), *o))
                    .collect();
                out.extend(read.into_iter().filter(|(r, _)| asked.contains(r)));
                out
            }
        };
        if let Some(rules) = rules {
            out.retain(|r, _| rules.contains(&r.as_str()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(n: i64) -> Open {
        Open {
            open: n,
            oldest_first_seen_us: Some(1),
            impact: None,
        }
    }

    fn read(plan: Plan) -> (Option<Vec<String>>, HashMap<String, u64>) {
        match plan {
            Plan::Read(asked, versions) => (asked, versions),
            Plan::Known(k) => panic!("nothing to read: {k:?}"),
        }
    }

    #[test]
    fn only_what_changed_is_read_again_and_a_write_during_a_read_is_not_lost() {
        let cache = OpenCache::default();
        cache.set_on(true);
        // First: every rule.
        let (asked, versions) = read(cache.plan(None));
        assert_eq!(asked, None);
        let found: HashMap<String, Open> =
            [("a".to_string(), open(3)), ("b".into(), open(1))].into();
        assert_eq!(cache.keep(None, &versions, found.clone(), None), found);
        assert!(matches!(cache.plan(None), Plan::Known(k) if k == found));
        // `b` written: only `b` is read again; it now has nothing open.
        drop(cache.changing("b"));
        let (asked, versions) = read(cache.plan(None));
        assert_eq!(asked, Some(vec!["b".to_string()]));
        // `b` written again while it is read: the read answers, but `b` stays to be read.
        drop(cache.changing("b"));
        let answer = cache.keep(asked.as_deref(), &versions, HashMap::new(), None);
        assert_eq!(answer, [("a".to_string(), open(3))].into());
        let (asked, versions) = read(cache.plan(Some(&["b"])));
        assert_eq!(asked, Some(vec!["b".to_string()]));
        let answer = cache.keep(
            asked.as_deref(),
            &versions,
            [("b".to_string(), open(7))].into(),
            Some(&["b"]),
        );
        assert_eq!(answer, [("b".to_string(), open(7))].into());
        assert!(
            matches!(cache.plan(Some(&["b", "c"])), Plan::Known(k) if k == [("b".to_string(), open(7))].into())
        );
        // Off: nothing is kept.
        cache.set_on(false);
        cache.set_on(true);
        assert!(matches!(cache.plan(None), Plan::Read(None, _)));
    }

    /// One of the actors of an interleaving: a write of a rule (begun, committed, done) or a
    /// read of some rules or all (planned, fetched from the store, kept).
    #[derive(Debug, Clone)]
    enum Actor {
        Write { rule: usize, value: Option<i64> },
        Read { rules: Option<Vec<usize>> },
    }

    const RULES: [&str; 3] = ["a", "b", "c"];

    /// A read's plan: what it asked for and the versions it compares after.
    type Planned = (Option<Vec<String>>, HashMap<String, u64>);

    fn actor() -> impl proptest::strategy::Strategy<Value = Actor> {
        use proptest::prelude::*;
        prop_oneof![
            (0..3usize, proptest::option::of(1..5i64))
                .prop_map(|(rule, value)| Actor::Write { rule, value }),
            proptest::option::of(proptest::collection::vec(0..3usize, 1..3))
                .prop_map(|rules| Actor::Read { rules }),
        ]
    }

    /// The store's answer for `asked` (every rule: `None`): the rules with something open.
    fn fetch(store: &HashMap<String, Open>, asked: Option<&[String]>) -> HashMap<String, Open> {
        store
            .iter()
            .filter(|(r, _)| asked.is_none_or(|a| a.contains(r)))
            .map(|(r, o)| (r.clone(), *o))
            .collect()
    }

    proptest::proptest! {
        /// Whatever the interleaving of writes and reads: a read answers what the store holds
        /// for every rule that no write touched while the read was under way, and once the
        /// writes are done, every read answers exactly what the store holds.
        #[test]
        fn answers_agree_with_the_store_whatever_the_interleaving(
            initial in proptest::collection::vec(proptest::option::of(1..5i64), 3),
            actors in proptest::collection::vec(actor(), 1..8),
            schedule in proptest::collection::vec(0..8usize, 0..40),
        ) {
            let cache = OpenCache::default();
            cache.set_on(true);
            let mut store: HashMap<String, Open> = RULES
                .iter()
                .zip(&initial)
                .filter_map(|(r, v)| v.map(|n| (r.to_string(), open(n))))
                .collect();
            let mut step = vec![0usize; actors.len()];
            let mut guards: Vec<Option<Changing<'_>>> = actors.iter().map(|_| None).collect();
            let mut in_flight = [0usize; 3];
            // Per reader: its plan's read (asked, versions), what it fetched, the rules a
            // write touched during it.
            let mut planned: Vec<Option<Planned>> = actors.iter().map(|_| None).collect();
            let mut fetched: Vec<HashMap<String, Open>> = actors.iter().map(|_| HashMap::new()).collect();
            let mut tainted: Vec<HashSet<usize>> = actors.iter().map(|_| HashSet::new()).collect();
            let order = schedule
                .iter()
                .map(|i| i % actors.len())
                .chain((0..actors.len()).flat_map(|i| [i, i, i]));
            for i in order {
                if step[i] == 3 {
                    continue;
                }
                match &actors[i] {
                    Actor::Write { rule, value } => {
                        match step[i] {
                            0 => {
                                guards[i] = Some(cache.changing(RULES[*rule]));
                                in_flight[*rule] += 1;
                            }
                            1 => match value {
                                Some(n) => {
                                    store.insert(RULES[*rule].to_string(), open(*n));
                                }
                                None => {
                                    store.remove(RULES[*rule]);
                                }
                            },
                            _ => {
                                guards[i] = None;
                                in_flight[*rule] -= 1;
                            }
                        }
                        for (j, a) in actors.iter().enumerate() {
                            if matches!(a, Actor::Read { .. }) && (1..3).contains(&step[j]) {
                                tainted[j].insert(*rule);
                            }
                        }
                        step[i] += 1;
                    }
                    Actor::Read { rules } => {
                        let names: Option<Vec<&str>> =
                            rules.as_ref().map(|rs| rs.iter().map(|r| RULES[*r]).collect());
                        let answer = match step[i] {
                            0 => {
                                tainted[i] = (0..3).filter(|r| in_flight[*r] > 0).collect();
                                match cache.plan(names.as_deref()) {
                                    Plan::Known(known) => {
                                        step[i] = 3;
                                        Some(known)
                                    }
                                    Plan::Read(asked, versions) => {
                                        planned[i] = Some((asked, versions));
                                        step[i] = 1;
                                        None
                                    }
                                }
                            }
                            1 => {
                                let asked = planned[i].as_ref().and_then(|p| p.0.clone());
                                fetched[i] = fetch(&store, asked.as_deref());
                                step[i] = 2;
                                None
                            }
                            _ => {
                                let (asked, versions) = planned[i].take().expect("planned");
                                step[i] = 3;
                                Some(cache.keep(
                                    asked.as_deref(),
                                    &versions,
                                    std::mem::take(&mut fetched[i]),
                                    names.as_deref(),
                                ))
                            }
                        };
                        if let Some(answer) = answer {
                            for (r, name) in RULES.iter().enumerate() {
                                let asked = rules.as_ref().is_none_or(|rs| rs.contains(&r));
                                if tainted[i].contains(&r) {
                                    continue;
                                }
                                let truth = if asked { store.get(*name) } else { None };
                                proptest::prop_assert_eq!(
                                    answer.get(*name),
                                    truth,
                                    "rule {} read by {:?}",
                                    name,
                                    actors[i]
                                );
                            }
                        }
                    }
                }
            }
            // Every write done: each read answers the store exactly.
            let settled = |rules: Option<&[&str]>| match cache.plan(rules) {
                Plan::Known(known) => known,
                Plan::Read(asked, versions) => {
                    let found = fetch(&store, asked.as_deref());
                    cache.keep(asked.as_deref(), &versions, found, rules)
                }
            };
            for _ in 0..2 {
                proptest::prop_assert_eq!(&settled(None), &store);
                for r in RULES {
                    let only: HashMap<String, Open> =
                        store.get(r).map(|o| (r.to_string(), *o)).into_iter().collect();
                    proptest::prop_assert_eq!(settled(Some(&[r])), only);
                }
            }
        }
    }

    #[test]
    fn a_rule_written_during_the_first_read_stays_to_be_read() {
        let cache = OpenCache::default();
        cache.set_on(true);
        let (_, versions) = read(cache.plan(None));
        drop(cache.changing("a"));
        let found: HashMap<String, Open> =
            [("a".to_string(), open(3)), ("b".into(), open(1))].into();
        cache.keep(None, &versions, found, None);
        let (asked, _) = read(cache.plan(None));
        assert_eq!(asked, Some(vec!["a".to_string()]));
    }
}
