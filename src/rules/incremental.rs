//! How much of its data a rule reads per run: `incremental` (only the keys whose rows changed
//! since the last run, with a full sweep on its own schedule) and `consistent_cut` (judge the
//! data as of `now - lag`). Both need to know when rows changed: every dataset must declare
//! `updated_at`. And `partition`: full sweeps split into key ranges of about `keys` keys,
//! which the replicas sharing a state store read in parallel.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Dataset, Schedule};
use crate::diag::Diagnostics;
use crate::yaml::{self, Document};

#[derive(Debug, Deserialize)]
pub(super) struct RawIncremental {
    overlap: Option<Spanned<String>>,
    full_sweep: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawPartition {
    keys: Spanned<u64>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawCut {
    lag: Spanned<String>,
}

/// The overlap when the rule names none: a minute covers clock skew between hosts and
/// transactions that commit a little after they stamped `updated_at`.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(60);
/// The full sweep's period when the rule names none: daily.
pub const DEFAULT_FULL_SWEEP: Duration = Duration::from_secs(24 * 3600);
/// The longest overlap or lag: a week. Longer ones are not what anyone means by "recent".
const MAX_MARGIN: Duration = Duration::from_secs(7 * 24 * 3600);

/// Incremental runs: each run judges the keys whose rows changed since the previous finished
/// run (minus `overlap`, and minus the rule's `grace` so keys held back are seen again), plus
/// the keys of open violations; a full sweep runs whenever `full_sweep` says one is due.
#[derive(Debug, Clone)]
pub struct Incremental {
    pub overlap: Duration,
    pub full_sweep: Schedule,
}

impl Incremental {
    /// Whether a full sweep is due at `now`, the last one having started at `last` (in
    /// microseconds; `None` when there was none).
    pub fn full_sweep_due(&self, last: Option<i64>, now: chrono::DateTime<chrono::Utc>) -> bool {
        let Some(last) = last.and_then(chrono::DateTime::from_timestamp_micros) else {
            return true;
        };
        match &self.full_sweep {
            Schedule::Every(d) => {
                now.signed_duration_since(last).to_std().unwrap_or_default() >= *d
            }
            Schedule::Cron { cron, .. } => cron
                .find_next_occurrence(&last, false)
                .is_ok_and(|next| next <= now),
        }
    }
}

/// The most keys a range may be given: beyond a billion, one range is the whole of most tables.
const MAX_PARTITION_KEYS: u64 = 1_000_000_000;

/// A full sweep split into key ranges of about `keys` keys each (every `keys`-th key the last
/// full sweep met is a boundary), read by whichever replicas are free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub keys: u64,
}

/// Where a rule reads from and what it needs to check both options.
pub(super) struct Checker<'a> {
    pub file: &'a Path,
    pub doc: &'a Document<'a>,
    pub ctx: &'a str,
    pub datasets: &'a [Dataset],
}

impl Checker<'_> {
    fn margin(&self, field: &str, s: &Spanned<String>, diags: &mut Diagnostics) -> Duration {
        let at = yaml::pos(s, self.doc.line_offset);
        match humantime::parse_duration(&s.value) {
            Ok(d) if d > MAX_MARGIN => {
                diags.push(
                    self.file,
                    at,
                    format!(
                        "{}: {field}: `{}` is longer than the maximum of 7d",
                        self.ctx, s.value
                    ),
                );
                Duration::ZERO
            }
            Ok(d) => d,
            Err(_) => {
                diags.push(
                    self.file,
                    at,
                    format!(
                        "{}: {field}: invalid duration `{}`; write it like 1m or 30s",
                        self.ctx, s.value
                    ),
                );
                Duration::ZERO
            }
        }
    }

    /// Every dataset declares `updated_at`, or the option is an error naming those that do not.
    fn needs_updated_at(&self, option: &str, at: crate::diag::Pos, diags: &mut Diagnostics) {
        let missing: Vec<&str> = self
            .datasets
            .iter()
            .filter(|d| d.updated_at.is_none())
            .map(|d| d.name.as_str())
            .collect();
        if !missing.is_empty() {
            diags.push(
                self.file,
                at,
                format!(
                    "{}: {option} needs `updated_at` on every dataset, to know which rows changed; dataset{} {} {} none",
                    self.ctx,
                    if missing.len() == 1 { "" } else { "s" },
                    missing
                        .iter()
                        .map(|m| format!("`{m}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if missing.len() == 1 { "has" } else { "have" }
                ),
            );
        }
    }

    pub fn incremental(
        &self,
        raw: Spanned<RawIncremental>,
        diags: &mut Diagnostics,
    ) -> Option<Incremental> {
        let before = diags.len();
        self.needs_updated_at("incremental", yaml::pos(&raw, self.doc.line_offset), diags);
        let raw = raw.value;
        let overlap = raw.overlap.as_ref().map_or(DEFAULT_OVERLAP, |o| {
            self.margin("incremental.overlap", o, diags)
        });
        let full_sweep = match &raw.full_sweep {
            None => Schedule::Every(DEFAULT_FULL_SWEEP),
            Some(s) => {
                // A duration (time since the last full sweep) or a cron line (a sweep at the
                // first run after each time it fires).
                let parsed = if humantime::parse_duration(&s.value).is_ok() {
                    Schedule::every(&s.value)
                } else {
                    Schedule::cron(&s.value)
                };
                parsed.unwrap_or_else(|e| {
                    diags.push(
                        self.file,
                        yaml::pos(s, self.doc.line_offset),
                        format!("{}: incremental.full_sweep: {e}", self.ctx),
                    );
                    Schedule::Every(DEFAULT_FULL_SWEEP)
                })
            }
        };
        (diags.len() == before).then_some(Incremental {
            overlap,
            full_sweep,
        })
    }

    pub fn partition(
        &self,
        raw: Spanned<RawPartition>,
        diags: &mut Diagnostics,
    ) -> Option<Partition> {
        let keys = raw.value.keys;
        if (1..=MAX_PARTITION_KEYS).contains(&keys.value) {
            return Some(Partition { keys: keys.value });
        }
        diags.push(
            self.file,
            yaml::pos(&keys, self.doc.line_offset),
            format!(
                "{}: partition.keys: {} is not between 1 and {MAX_PARTITION_KEYS}",
                self.ctx, keys.value
            ),
        );
        None
    }

    pub fn consistent_cut(
        &self,
        raw: Spanned<RawCut>,
        diags: &mut Diagnostics,
    ) -> Option<Duration> {
        let before = diags.len();
        self.needs_updated_at(
            "consistent_cut",
            yaml::pos(&raw, self.doc.line_offset),
            diags,
        );
        let lag = self.margin("consistent_cut.lag", &raw.value.lag, diags);
        (diags.len() == before).then_some(lag)
    }
}
