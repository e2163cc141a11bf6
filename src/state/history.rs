//! What a rule's history charts read: for each step of a window, how many of its violations
//! began to count (first seen) and stopped (resolved) then, with their impacts. Each span
//! open in the window is streamed from the store and counted as it comes (`step_changes`),
//! so a chart costs one pass over what was open, not a pass per step, and several charts of
//! one rule share that pass. (Counting per step in
//! SQL was tried on PostgreSQL: with 100,000 open it took longer than streaming them.)

use rust_decimal::Decimal;
use sqlx::{AssertSqlSafe, Row as _};

use super::{Bind, Pool, StateError, StateStore, Stmt, bound, on_pool};

/// What changes at one step: violations that count from it on, and violations that no longer
/// count from it on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepChange {
    pub opened: i64,
    pub opened_impact: Decimal,
    pub closed: i64,
    pub closed_impact: Decimal,
}

/// The first step (of the instants `from_us + i * step_us`) at or after `at_us`; 0 for any
/// instant at or before `from_us`.
pub fn step_of(at_us: i64, from_us: i64, step_us: i64) -> i64 {
    if at_us <= from_us {
        0
    } else {
        (at_us - from_us + step_us - 1) / step_us
    }
}

/// The changes at steps `0..=steps` of spans (first seen, resolved or `None`, impact): a span
/// counts at an instant when it was first seen at or before it and not resolved by it, so it
/// opens at the step of its first sighting and closes at the step of its resolution. A span
/// resolved when (or before) it was first seen never counts. Changes after the last step are
/// left out.
pub fn step_changes(
    spans: impl IntoIterator<Item = (i64, Option<i64>, Option<Decimal>)>,
    from_us: i64,
    step_us: i64,
    steps: i64,
) -> Vec<StepChange> {
    let mut changes = vec![StepChange::default(); steps as usize + 1];
    for span in spans {
        add_span(&mut changes, span, from_us, step_us);
    }
    changes
}

fn add_span(
    changes: &mut [StepChange],
    (first, resolved, impact): (i64, Option<i64>, Option<Decimal>),
    from_us: i64,
    step_us: i64,
) {
    if resolved.is_some_and(|r| r <= first) {
        return;
    }
    let impact = impact.unwrap_or_default();
    if let Some(c) = changes.get_mut(step_of(first, from_us, step_us) as usize) {
        c.opened += 1;
        c.opened_impact = c.opened_impact.saturating_add(impact);
    }
    if let Some(c) = resolved.and_then(|r| changes.get_mut(step_of(r, from_us, step_us) as usize)) {
        c.closed += 1;
        c.closed_impact = c.closed_impact.saturating_add(impact);
    }
}

/// The instants a chart counts at: `steps + 1` of them, `from_us + i * step_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    pub from_us: i64,
    pub step_us: i64,
    pub steps: i64,
}

impl StateStore {
    /// For each grid, the changes at its instants to the rule's violations that count (see
    /// `step_changes`), from one pass over the spans open since the earliest of them: the
    /// page's day and week charts read them once. Violations resolved before the retention
    /// pruned them are not there.
    pub async fn open_steps_of(
        &self,
        rule: &str,
        grids: &[Steps],
    ) -> Result<Vec<Vec<StepChange>>, StateError> {
        let from_us = grids.iter().map(|g| g.from_us).min().unwrap_or(i64::MAX);
        let stmt = Stmt {
            // Two parts, each found by its own index (the open ones, and only those resolved
            // in the window: a month of history is not read for a day's chart).
            sql: "SELECT first_seen_us, resolved_us, impact FROM violations WHERE rule = $1 \
                  AND state = 'open' UNION ALL SELECT first_seen_us, resolved_us, impact \
                  FROM violations WHERE rule = $1 AND state = 'resolved' AND resolved_us > $2"
                .into(),
            binds: vec![Bind::Text(rule.into()), Bind::I64(from_us)],
        };
        // Streamed and counted as they come: a row per span, nothing kept of it. A span that
        // ended before a later grid's start opens and closes at its step 0: it never counts.
        let mut changes: Vec<Vec<StepChange>> = grids
            .iter()
            .map(|g| step_changes([], g.from_us, g.step_us, g.steps))
            .collect();
        on_pool!(self, pool => {
            let mut rows = bound!(stmt).fetch(pool);
            while let Some(r) = futures_util::TryStreamExt::try_next(&mut rows).await? {
                let impact: Option<String> = r.try_get(2)?;
                let span = (r.try_get(0)?, r.try_get(1)?, impact.and_then(|i| i.parse().ok()));
                for (grid, changes) in grids.iter().zip(&mut changes) {
                    add_span(changes, span, grid.from_us, grid.step_us);
                }
            }
        });
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_span_opens_at_the_first_step_at_or_after_it() {
        assert_eq!(step_of(5, 10, 10), 0);
        assert_eq!(step_of(10, 10, 10), 0);
        assert_eq!(step_of(11, 10, 10), 1);
        assert_eq!(step_of(20, 10, 10), 1);
        assert_eq!(step_of(21, 10, 10), 2);
    }

    proptest! {
        /// Summing the changes up to a step counts what was open at its instant.
        #[test]
        fn changes_summed_count_what_was_open(
            spans in proptest::collection::vec((0i64..100, proptest::option::of(0i64..100), proptest::option::of(-50i64..1000)), 0..40)
        ) {
            let spans: Vec<(i64, Option<i64>, Option<Decimal>)> = spans
                .into_iter()
                .map(|(f, u, x)| (f, u, x.map(|c| Decimal::new(c, 2))))
                .collect();
            let (from, step, steps) = (20, 7, 10);
            let changes = step_changes(spans.clone(), from, step, steps);
            let (mut open, mut impact) = (0, Decimal::ZERO);
            for (i, c) in changes.iter().enumerate() {
                open += c.opened - c.closed;
                impact += c.opened_impact - c.closed_impact;
                let t = from + i as i64 * step;
                let counting = spans.iter().filter(|(f, u, _)| *f <= t && u.is_none_or(|u| u > t));
                prop_assert_eq!(open, counting.clone().count() as i64);
                prop_assert_eq!(impact, counting.map(|s| s.2.unwrap_or_default()).sum::<Decimal>());
            }
        }
    }
}
