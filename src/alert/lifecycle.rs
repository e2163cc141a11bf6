//! An alert group's lifecycle, as a pure function of its stored state and what is observed
//! now: announce when a group starts failing (after `for`), again every `repeat_interval`
//! while it fails or when it has grown (at most once per `group_interval`), and once more when
//! it has passed for `for`. Flapping inside `for` announces nothing. `next_step` says when,
//! with nothing else changing, a step would next do anything: the evaluator sleeps until then.

use std::time::Duration;

use crate::notification::Event;
use crate::state::AlertGroupState;

/// The lifecycle's timing (from `alerting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub for_: Duration,
    pub repeat_interval: Duration,
    pub group_interval: Duration,
}

/// A duration in microseconds, as the store keeps times (saturating).
pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The group's next state, and the announcement to make, if any. `failing` is what is
/// observed now, `count` how many violations (or rules) it concerns.
pub fn step(
    state: &AlertGroupState,
    failing: bool,
    count: i64,
    now_us: i64,
    timing: Timing,
) -> (AlertGroupState, Option<Event>) {
    let mut next = state.clone();
    if failing != state.firing {
        let since = *next.pending_since_us.get_or_insert(now_us);
        if now_us.saturating_sub(since) < micros(timing.for_) {
            return (next, None);
        }
        next.pending_since_us = None;
        next.firing = failing;
        next.last_sent_us = Some(now_us);
        next.sequence += 1;
        if failing {
            next.started_us = Some(now_us);
            next.sent_count = count;
            return (next, Some(Event::Firing));
        }
        next.sent_count = 0;
        return (next, Some(Event::Resolved));
    }
    // What is observed agrees with what was announced: a change that did not last is over.
    next.pending_since_us = None;
    if !failing {
        return (next, None);
    }
    let since_sent = now_us.saturating_sub(state.last_sent_us.unwrap_or(i64::MIN));
    let event = if count > state.sent_count && since_sent >= micros(timing.group_interval) {
        Event::Grown
    } else if since_sent >= micros(timing.repeat_interval) {
        Event::Repeat
    } else {
        return (next, None);
    };
    next.last_sent_us = Some(now_us);
    next.sent_count = count;
    next.sequence += 1;
    (next, Some(event))
}

/// When `step` would next change `state` or announce something while `failing` and `count`
/// stay as they are: `None` when it never would (it agrees with what was announced, and
/// nothing is left to repeat). `state` is what a step returned: a change it started (a
/// pending start or end) is counted from `pending_since_us`.
pub fn next_step(
    state: &AlertGroupState,
    failing: bool,
    count: i64,
    timing: Timing,
) -> Option<i64> {
    if failing != state.firing {
        // A first look starts the wait at once (a change to store).
        let since = state.pending_since_us?;
        return Some(since.saturating_add(micros(timing.for_)));
    }
    if state.pending_since_us.is_some() {
        // The change did not last: the next step forgets it.
        return Some(i64::MIN);
    }
    if !failing {
        return None;
    }
    let sent = state.last_sent_us.unwrap_or(i64::MIN);
    let repeat = sent.saturating_add(micros(timing.repeat_interval));
    if count > state.sent_count {
        return Some(repeat.min(sent.saturating_add(micros(timing.group_interval))));
    }
    Some(repeat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: i64 = 1_000_000;

    fn timing(for_s: u64) -> Timing {
        Timing {
            for_: Duration::from_secs(for_s),
            repeat_interval: Duration::from_secs(3600),
            group_interval: Duration::from_secs(300),
        }
    }

    /// Feeds observations (at second `t`, failing?, count) and collects the announcements.
    fn run(for_s: u64, steps: &[(i64, bool, i64)]) -> Vec<(i64, Event)> {
        let mut state = AlertGroupState::default();
        let mut out = Vec::new();
        for &(t, failing, count) in steps {
            let (next, event) = step(&state, failing, count, t * S, timing(for_s));
            if let Some(e) = event {
                out.push((t, e));
            }
            state = next;
        }
        out
    }

    #[test]
    fn a_failing_rule_is_announced_once_then_repeated_and_resolved() {
        let steps: Vec<(i64, bool, i64)> = (0..=120).map(|m| (m * 60, m < 100, 100)).collect();
        assert_eq!(
            run(0, &steps),
            [
                (0, Event::Firing),
                (3600, Event::Repeat),
                (6000, Event::Resolved)
            ]
        );
    }

    #[test]
    fn flapping_inside_for_announces_nothing() {
        // Failing and passing every 30 s, with `for: 2m`.
        let steps: Vec<(i64, bool, i64)> = (0..100).map(|i| (i * 30, i % 2 == 0, 5)).collect();
        assert_eq!(run(120, &steps), []);
        // Failing for good: announced once `for` has passed.
        assert_eq!(
            run(
                120,
                &[(0, true, 5), (60, true, 5), (120, true, 5), (180, true, 5)]
            ),
            [(120, Event::Firing)]
        );
    }

    #[test]
    fn a_grown_group_is_announced_at_most_once_per_group_interval() {
        let steps = [
            (0, true, 10),
            (60, true, 100),   // grown, but within group_interval of the firing
            (300, true, 100),  // announced now
            (360, true, 1000), // grown again, too soon
            (600, true, 1000),
            (660, true, 900), // shrunk: nothing
        ];
        assert_eq!(
            run(0, &steps),
            [(0, Event::Firing), (300, Event::Grown), (600, Event::Grown)]
        );
    }

    proptest! {
        /// `next_step` is exact: a step before it changes nothing and announces nothing, a
        /// step at it does one or the other.
        #[test]
        fn nothing_happens_before_the_next_step(
            history in proptest::collection::vec((1i64..400, any::<bool>(), 0i64..50), 0..40),
            failing in any::<bool>(),
            count in 0i64..50,
            for_s in 0u64..200,
            before in 0i64..10_000,
        ) {
            // A state as evaluations leave it, then the observation that holds from now on.
            let mut state = AlertGroupState::default();
            let mut t = 0;
            for (dt, f, c) in history {
                t += dt;
                state = step(&state, f, c, t * S, timing(for_s)).0;
            }
            t += 1;
            let (now, _) = step(&state, failing, count, t * S, timing(for_s));
            match next_step(&now, failing, count, timing(for_s)) {
                None => {
                    let later = step(&now, failing, count, (t + before) * S, timing(for_s));
                    prop_assert_eq!(later, (now.clone(), None));
                }
                Some(at) => {
                    prop_assert!(at > t * S, "due after the step that computed it");
                    let early = (t * S + before * S).min(at - 1);
                    prop_assert_eq!(step(&now, failing, count, early, timing(for_s)), (now.clone(), None));
                    let (then, event) = step(&now, failing, count, at, timing(for_s));
                    prop_assert!(event.is_some() || then != now);
                }
            }
        }

        /// Whatever is observed: announcements alternate firing → … → resolved, never two
        /// firings or two resolves in a row, and never two within `group_interval` unless one
        /// is a state change.
        #[test]
        fn announcements_alternate(obs in proptest::collection::vec((1i64..400, any::<bool>(), 0i64..50), 1..200), for_s in 0u64..200) {
            let mut t = 0;
            let steps: Vec<(i64, bool, i64)> = obs.into_iter().map(|(dt, f, c)| { t += dt; (t, f, c) }).collect();
            let events = run(for_s, &steps);
            let mut firing = false;
            let mut last: Option<i64> = None;
            for (at, e) in events {
                match e {
                    Event::Firing => { prop_assert!(!firing); firing = true; }
                    Event::Resolved => { prop_assert!(firing); firing = false; }
                    Event::Repeat | Event::Grown | Event::Escalated => {
                        prop_assert!(firing);
                        prop_assert!(at - last.unwrap() >= 300);
                    }
                }
                last = Some(at);
            }
        }
    }
}
