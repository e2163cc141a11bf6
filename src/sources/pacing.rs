//! Pacing: `max_rows_per_second`, a budget of rows per second shared by every read of one
//! source, so that a sweep stays gentle on a production database.

use std::time::Duration;

use tokio::time::Instant;

/// A rows-per-second budget shared by the readers of one source: each batch books its rows'
/// share of time after the bookings before it, and waits for its turn. A source that was
/// idle may take one second's worth at once.
#[derive(Debug)]
pub(crate) struct Throttle {
    rows_per_second: u64,
    next: std::sync::Mutex<Instant>,
}

impl Throttle {
    pub(super) fn new(rows_per_second: u64) -> Throttle {
        Throttle {
            rows_per_second,
            next: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// When a batch of `rows` may be sent.
    pub(super) fn book(&self, rows: usize) -> Instant {
        let now = Instant::now();
        let mut next = self.next.lock().expect("throttle lock");
        let banked = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        let start = (*next).max(banked);
        *next = start + Duration::from_secs_f64(rows as f64 / self.rows_per_second as f64);
        start.max(now)
    }
}
