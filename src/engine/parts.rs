//! The parts of a full sweep split into key ranges, made one run: what a single sweep over
//! every key would have recorded. The parts cover the keys between them, each once, in key
//! order; a part that could not finish makes the whole run unknown (no data is not good data),
//! as one dataset that fails makes a single sweep unknown. `key_ranges` makes the ranges from
//! the keys a previous sweep sampled.

use std::time::Duration;

use super::judge::MAX_KEY_ERRORS;
use crate::sources::KeyRange;
use crate::value::Key;
use crate::verdict::{ErrorKind, Outcome, RuleRun, RunError};

/// The key ranges a partitioned sweep reads, from the keys the last full sweep sampled: below
/// the first, from each to the next, from the last on — every key in exactly one. `None` when
/// they cannot split the keys: none, or not all of one kind and strictly increasing (keys
/// sampled in another order than the one they are compared in now).
pub fn key_ranges(boundaries: &[Key]) -> Option<Vec<KeyRange>> {
    let first = boundaries.first()?;
    let same_kind = boundaries.iter().all(|b| {
        matches!(
            (first, b),
            (Key::Int(_), Key::Int(_)) | (Key::Text(_), Key::Text(_))
        )
    });
    if !same_kind || boundaries.windows(2).any(|w| w[0] >= w[1]) {
        return None;
    }
    let mut edges: Vec<Option<Key>> = Vec::with_capacity(boundaries.len() + 2);
    edges.push(None);
    edges.extend(boundaries.iter().cloned().map(Some));
    edges.push(None);
    Some(
        edges
            .windows(2)
            .map(|w| KeyRange {
                from: w[0].clone(),
                until: w[1].clone(),
            })
            .collect(),
    )
}

/// One run from the runs of the key ranges, in key order. `None` for no parts.
pub fn merge_parts(parts: Vec<RuleRun>) -> Option<RuleRun> {
    let first = parts.first()?;
    let started_at = parts.iter().map(|p| p.started_at).min()?;
    let ended = parts
        .iter()
        .map(|p| p.started_at + chrono::Duration::from_std(p.duration).unwrap_or_default())
        .max()?;
    let duration = (ended - started_at).to_std().unwrap_or(Duration::ZERO);
    if let Some(failed) = parts.iter().find(|p| !p.finished) {
        let error = failed.error.clone().unwrap_or_else(|| {
            RunError::new(ErrorKind::Cancelled, "a part of the sweep did not finish")
        });
        let mut run = RuleRun::unknown(&first.rule, started_at, duration, error);
        run.datasets = first.datasets.clone();
        run.rows_scanned = vec![0; first.datasets.len()];
        run.fingerprint = first.fingerprint.clone();
        for p in &parts {
            union(&mut run.sources_down, &p.sources_down);
            union(&mut run.sources_reached, &p.sources_reached);
        }
        return Some(run);
    }
    let mut run = RuleRun {
        started_at,
        duration,
        error: None,
        rows_scanned: vec![0; first.datasets.len()],
        violations: Vec::new(),
        key_errors: Vec::new(),
        unjudged_open: Vec::new(),
        sources_down: Vec::new(),
        sources_reached: Vec::new(),
        keys_judged: 0,
        keys_in_grace: 0,
        key_errors_total: 0,
        keys_changed: 0,
        samples: Vec::new(),
        ..first.clone()
    };
    for p in parts {
        for (total, rows) in run.rows_scanned.iter_mut().zip(&p.rows_scanned) {
            *total += rows;
        }
        run.keys_judged += p.keys_judged;
        run.keys_in_grace += p.keys_in_grace;
        run.key_errors_total += p.key_errors_total;
        let room = MAX_KEY_ERRORS.saturating_sub(run.key_errors.len());
        run.key_errors.extend(p.key_errors.into_iter().take(room));
        run.violations.extend(p.violations);
        run.samples.extend(p.samples);
        run.unjudged_open.extend(p.unjudged_open);
        union(&mut run.sources_down, &p.sources_down);
        union(&mut run.sources_reached, &p.sources_reached);
    }
    settle(&mut run);
    Some(run)
}

/// The outcome of a run that read everything: violations make it fail, and keys that could
/// not be judged (with no violation) unknown, with one error summing them up.
pub(super) fn settle(run: &mut RuleRun) {
    if run.key_errors_total > 0 {
        run.error = Some(key_error_summary(run));
    }
    run.outcome = if !run.violations.is_empty() {
        Outcome::Fail
    } else if run.key_errors_total > 0 {
        Outcome::Unknown
    } else {
        Outcome::Pass
    };
}

fn union(into: &mut Vec<String>, from: &[String]) {
    for s in from {
        if !into.contains(s) {
            into.push(s.clone());
        }
    }
}

/// One error for the keys that could not be judged, of the first such key's kind.
fn key_error_summary(run: &RuleRun) -> RunError {
    let n = run.key_errors_total;
    let shown: Vec<String> = run
        .key_errors
        .iter()
        .take(5)
        .map(|e| format!("key {}: {}", e.key, e.message))
        .collect();
    let more = if n as usize > shown.len() {
        format!("; and {} more", n as usize - shown.len())
    } else {
        String::new()
    };
    let kind = run
        .key_errors
        .first()
        .map_or(ErrorKind::Evaluation, |e| e.kind);
    RunError::new(
        kind,
        format!(
            "{n} key{} could not be judged: {}{more}",
            if n == 1 { "" } else { "s" },
            shown.join("; ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn contains(range: &KeyRange, key: &Key) -> bool {
        range.from.as_ref().is_none_or(|f| key >= f) && range.until.as_ref().is_none_or(|u| key < u)
    }

    proptest! {
        /// Sampled keys (sorted, deduplicated, as a sweep meets them) make ranges that hold
        /// every key exactly once; anything else makes none.
        #[test]
        fn ranges_hold_every_key_exactly_once(
            mut samples in proptest::collection::vec(-50i64..50, 0..8),
            keys in proptest::collection::vec(-60i64..60, 0..40),
            sorted in any::<bool>(),
        ) {
            if sorted {
                samples.sort_unstable();
                samples.dedup();
            }
            let bounds: Vec<Key> = samples.iter().copied().map(Key::Int).collect();
            let increasing = samples.windows(2).all(|w| w[0] < w[1]);
            match key_ranges(&bounds) {
                None => prop_assert!(samples.is_empty() || !increasing),
                Some(ranges) => {
                    prop_assert!(increasing && !samples.is_empty());
                    prop_assert_eq!(ranges.len(), samples.len() + 1);
                    for k in keys.into_iter().map(Key::Int) {
                        prop_assert_eq!(ranges.iter().filter(|r| contains(r, &k)).count(), 1);
                    }
                }
            }
        }
    }

    #[test]
    fn keys_of_two_kinds_split_nothing() {
        assert!(key_ranges(&[Key::Int(1), Key::Text("2".into())]).is_none());
        let text = key_ranges(&[Key::Text("b".into()), Key::Text("c".into())]).unwrap();
        assert_eq!(text.len(), 3);
        assert_eq!(text[1].from, Some(Key::Text("b".into())));
        assert_eq!(text[1].until, Some(Key::Text("c".into())));
    }
}
