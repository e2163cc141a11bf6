//! When a rule runs: a cron line (5 fields, or 6 with seconds first) or a fixed interval.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

#[derive(Clone)]
pub enum Schedule {
    Cron {
        pattern: String,
        cron: Box<croner::Cron>,
    },
    Every(Duration),
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cron { pattern, .. } => write!(f, "Cron({pattern:?})"),
            Schedule::Every(d) => write!(f, "Every({d:?})"),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cron { pattern, .. } => f.write_str(pattern),
            Schedule::Every(d) => write!(f, "every {}", humantime::format_duration(*d)),
        }
    }
}

/// The default when a rule names neither `schedule` nor `every`.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(60);

/// The longest interval: a year, leap or not. Longer ones overflow the clock's arithmetic and
/// are not what anyone means.
pub const MAX_EVERY: Duration = Duration::from_secs(366 * 24 * 3600);

impl Schedule {
    pub fn cron(pattern: &str) -> Result<Schedule, String> {
        let fields = pattern.split_whitespace().count();
        if !pattern.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "invalid cron `{pattern}`: expected 5 fields (minute hour day month weekday) or 6 with seconds first, found {fields}"
            ));
        }
        let cron = croner::Cron::from_str(pattern)
            .map_err(|e| format!("invalid cron `{pattern}`: {e}"))?;
        // A line such as `0 0 31 2 *` (February 31st) parses but never fires: the rule would
        // never run.
        if cron
            .find_next_occurrence(&chrono::Utc::now(), false)
            .is_err()
        {
            return Err(format!(
                "cron `{pattern}` never fires (no such date); the rule would never run"
            ));
        }
        Ok(Schedule::Cron {
            pattern: pattern.to_string(),
            cron: Box::new(cron),
        })
    }

    pub fn every(text: &str) -> Result<Schedule, String> {
        match humantime::parse_duration(text) {
            Ok(d) if d > MAX_EVERY => Err(format!(
                "every: `{text}` is longer than the maximum of 366d"
            )),
            Ok(d) if d >= Duration::from_secs(1) => Ok(Schedule::Every(d)),
            Ok(_) => Err(format!("every: `{text}` is shorter than the minimum of 1s")),
            Err(_) => Err(format!(
                "every: invalid duration `{text}`; write it like 30s or 5m"
            )),
        }
    }

    /// The longest wait between two runs around `at` (the next two gaps of a cron line), so
    /// that a rule is not called stale between runs it was never meant to make.
    pub fn gap(&self, at: chrono::DateTime<chrono::Utc>) -> Duration {
        match self {
            Schedule::Every(d) => *d,
            Schedule::Cron { cron, .. } => {
                let mut gap = Duration::ZERO;
                let mut from = at;
                for _ in 0..2 {
                    let Ok(next) = cron.find_next_occurrence(&from, false) else {
                        break;
                    };
                    gap = gap.max((next - from).to_std().unwrap_or_default());
                    from = next;
                }
                gap
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_field_lines_parse() {
        assert!(Schedule::cron("*/5 * * * *").is_ok());
        assert!(Schedule::cron("0 * * * * *").is_ok());
        assert!(Schedule::cron("@hourly").is_ok());
        assert!(Schedule::cron("61 * * * *").is_err());
        assert!(Schedule::cron("* * *").unwrap_err().contains("found 3"));
        assert!(Schedule::every("30s").is_ok());
        assert!(Schedule::every("0s").is_err());
        assert_eq!(
            Schedule::every("400000000000y").unwrap_err(),
            "every: `400000000000y` is longer than the maximum of 366d"
        );
        assert_eq!(
            Schedule::cron("0 0 31 2 *").unwrap_err(),
            "cron `0 0 31 2 *` never fires (no such date); the rule would never run"
        );
    }
}
