//! The one retry policy of everything invariantd sends or does that can fail for a while —
//! alert deliveries and repair attempts: the wait before the next try.

use std::time::Duration;

/// The wait before attempt `attempts + 1`: doubling from 1 s up to 5 min, with jitter (a
/// random 50–100 % of it), so that receivers coming back are not hit by every daemon at once.
pub fn backoff(attempts: i64) -> Duration {
    let base = Duration::from_secs(1u64 << attempts.clamp(0, 20)).min(Duration::from_secs(300));
    let jitter = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_i64(attempts);
        (h.finish() % 1000) as f64 / 1000.0
    };
    base.mul_f64(0.5 + jitter / 2.0)
}

/// When attempt `attempts + 1` may start, from `now_us`: at least a second on.
pub fn next_attempt_us(attempts: i64, now_us: i64) -> i64 {
    now_us + backoff(attempts).max(Duration::from_secs(1)).as_micros() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_five_minutes() {
        for attempts in 0..30 {
            let d = backoff(attempts);
            let base = Duration::from_secs(1u64 << attempts.min(20)).min(Duration::from_secs(300));
            assert!(d >= base / 2 && d <= base, "{attempts}: {d:?}");
        }
    }
}
