//! When each rule runs: one loop per rule on its `schedule` (cron) or `every` (interval), with a
//! stable per-rule start jitter so a hundred rules do not hit a database in the same second. A
//! rule never overlaps itself: a run still going when the next is due makes that tick skipped
//! (and counted by the caller). A shared semaphore caps the runs in flight across rules: a
//! run is started with its slot, and gives it back as soon as it no longer needs it (the
//! daemon's runs, once their sources are read: recording never keeps another rule waiting).
//!
//! An `every` rule's first run in a loop comes one period after its last recorded run (when
//! that is later than its jitter), so that a rule that moves to another replica, or a daemon
//! that restarts, keeps the rule's pace.
//!
//! The loop knows nothing of what a run does: it is handed a function that starts one.

use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::rules::Schedule;

/// The longest start-time jitter: a tenth of the rule's period, at most ten seconds.
pub fn jitter(rule: &str, schedule: &Schedule) -> Duration {
    let period = match schedule {
        Schedule::Every(d) => *d,
        Schedule::Cron { .. } => Duration::from_secs(60),
    };
    let max = (period / 10).min(Duration::from_secs(10));
    if max.is_zero() {
        return Duration::ZERO;
    }
    // Stable per rule name: a rule keeps its slot across restarts.
    let mut h = DefaultHasher::new();
    rule.hash(&mut h);
    Duration::from_millis(h.finish() % (max.as_millis() as u64).max(1))
}

/// The next time a cron schedule fires strictly after `after`.
pub fn next_cron(cron: &croner::Cron, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after, false).ok()
}

/// One rule's scheduling loop. `run` performs one run, given its slot; it is spawned so that
/// the loop sees a due time arrive while the previous run is still going, and skips it.
///
/// `last` is when the rule's last recorded run started (by this replica or another): an
/// `every` rule runs next one period after it, so a rule taken over from another replica, or
/// after a restart, keeps its pace instead of running twice in a row.
pub async fn rule_loop<F, Fut>(
    name: String,
    schedule: Schedule,
    last: Option<DateTime<Utc>>,
    limit: Arc<Semaphore>,
    token: CancellationToken,
    on_skip: impl Fn(),
    run: F,
) where
    F: Fn(OwnedSemaphorePermit) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let jitter = jitter(&name, &schedule);
    let running = Arc::new(AtomicBool::new(false));
    let in_flight = TaskTracker::new();
    let mut due = match &schedule {
        Schedule::Every(period) => Instant::now() + first_wait(jitter, *period, last, Utc::now()),
        Schedule::Cron { cron, .. } => cron_instant(cron, jitter),
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = token.cancelled() => break,
        }
        if running.swap(true, Ordering::SeqCst) {
            on_skip();
            warn!(rule = %name, "Previous run still going; this run is skipped.");
        } else {
            let run = run.clone();
            let limit = limit.clone();
            let running = running.clone();
            let token = token.clone();
            in_flight.spawn(async move {
                // However the run ends (even by panicking), the rule may run again.
                let _running = ClearOnDrop(running);
                // Waiting for a slot ends with shutdown too.
                let slot = tokio::select! {
                    p = limit.acquire_owned() => p.ok(),
                    _ = token.cancelled() => None,
                };
                if let Some(slot) = slot {
                    run(slot).await;
                }
            });
        }
        due = match &schedule {
            // From the previous due time, not from now: no drift.
            Schedule::Every(period) => (due + *period).max(Instant::now()),
            Schedule::Cron { cron, .. } => cron_instant(cron, jitter),
        };
    }
    in_flight.close();
    in_flight.wait().await;
}

/// How long an `every` rule waits for its first run here: its start jitter, or until one
/// period after its last run if that is later.
fn first_wait(
    jitter: Duration,
    period: Duration,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Duration {
    let resume = last
        .and_then(|last| (last + period - now).to_std().ok())
        .unwrap_or(Duration::ZERO);
    jitter.max(resume)
}

/// Clears a rule's "running" flag when its run task ends.
struct ClearOnDrop(Arc<AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn cron_instant(cron: &croner::Cron, jitter: Duration) -> Instant {
    let now = Utc::now();
    let wait = next_cron(cron, now)
        .and_then(|next| (next - now).to_std().ok())
        // A pattern that never fires again (a past year): check back in a day.
        .unwrap_or(Duration::from_secs(86_400));
    Instant::now() + wait + jitter
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[tokio::test(start_paused = true)]
    async fn a_run_still_going_when_the_next_is_due_is_skipped_and_counted() {
        let token = CancellationToken::new();
        let skipped = Arc::new(AtomicU64::new(0));
        let skipped2 = skipped.clone();
        let runs = Arc::new(AtomicU64::new(0));
        let runs2 = runs.clone();
        let looping = tokio::spawn(rule_loop(
            "slow".into(),
            Schedule::Every(Duration::from_secs(10)),
            None,
            Arc::new(Semaphore::new(4)),
            token.clone(),
            move || {
                skipped2.fetch_add(1, Ordering::SeqCst);
            },
            move |_slot| {
                let runs = runs2.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(25)).await; // longer than the period
                }
            },
        ));
        // Due at ~0 (+jitter < 1 s), 10, 20, 30, 40, 50: runs start at 0 and 30; 10 and 20
        // find the first still going, 40 and 50 the second.
        tokio::time::sleep(Duration::from_secs(55)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(skipped.load(Ordering::SeqCst), 4);
        token.cancel();
        looping.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn runs_beyond_the_concurrency_limit_wait_for_a_slot() {
        let token = CancellationToken::new();
        let limit = Arc::new(Semaphore::new(1));
        let active = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let mut loops = Vec::new();
        for name in ["a", "b", "c"] {
            let (active, most) = (active.clone(), most.clone());
            loops.push(tokio::spawn(rule_loop(
                name.into(),
                Schedule::Every(Duration::from_secs(60)),
                None,
                limit.clone(),
                token.clone(),
                || {},
                move |slot| {
                    let (active, most) = (active.clone(), most.clone());
                    async move {
                        let _slot = slot;
                        let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        active.fetch_sub(1, Ordering::SeqCst);
                    }
                },
            )));
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(most.load(Ordering::SeqCst), 1);
        token.cancel();
        for l in loops {
            l.await.unwrap();
        }
    }

    #[test]
    fn a_rule_taken_over_runs_one_period_after_its_last_run_not_at_once() {
        let now = Utc::now();
        let (jitter, period) = (Duration::from_millis(300), Duration::from_secs(10));
        let last = Some(now - chrono::Duration::seconds(4));
        assert_eq!(
            first_wait(jitter, period, last, now),
            Duration::from_secs(6)
        );
        // Long ago, or never: at its jitter.
        let long_ago = Some(now - chrono::Duration::seconds(60));
        assert_eq!(first_wait(jitter, period, long_ago, now), jitter);
        assert_eq!(first_wait(jitter, period, None, now), jitter);
    }

    #[test]
    fn jitter_is_stable_per_rule_and_small() {
        let every = Schedule::Every(Duration::from_secs(60));
        assert_eq!(jitter("a", &every), jitter("a", &every));
        assert!(jitter("a", &every) < Duration::from_secs(6));
        assert!(jitter("b", &Schedule::Every(Duration::from_secs(3600))) < Duration::from_secs(10));
        let names: std::collections::HashSet<Duration> = (0..100)
            .map(|i| jitter(&format!("rule_{i}"), &every))
            .collect();
        assert!(names.len() > 50, "jitter spreads rules out");
    }

    #[test]
    fn cron_lines_fire_at_their_next_match() {
        let Schedule::Cron { cron, .. } = Schedule::cron("*/15 * * * *").unwrap() else {
            panic!()
        };
        let at = "2026-11-26T10:07:30Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            next_cron(&cron, at).unwrap().to_rfc3339(),
            "2026-11-26T10:15:00+00:00"
        );
        let Schedule::Cron { cron, .. } = Schedule::cron("30 * * * * *").unwrap() else {
            panic!()
        };
        assert_eq!(
            next_cron(&cron, at).unwrap().to_rfc3339(),
            "2026-11-26T10:08:30+00:00"
        );
    }
}
