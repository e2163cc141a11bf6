//! The `repairs` section: how the daemon applies repairs (workers, leases, retries) and what
//! an approval needs (`four_eyes`).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diag::Diagnostics;
use crate::yaml;
use crate::yaml::{Bound, duration_field};

#[derive(Debug, Deserialize)]
pub(super) struct RawRepairs {
    workers: Option<Spanned<u32>>,
    lease: Option<Spanned<String>>,
    max_attempts: Option<Spanned<u32>>,
    #[serde(default)]
    four_eyes: bool,
    #[serde(default)]
    dry_run: bool,
    timeout: Option<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairsConfig {
    /// Repairs applied at the same time.
    pub workers: u32,
    /// How long a claimed repair is a worker's before another may take it over.
    pub lease: Duration,
    /// Attempts before a repair that keeps failing in a retryable way is `failed`.
    pub max_attempts: u32,
    /// Two different people must approve a repair.
    pub four_eyes: bool,
    /// Plan and show repairs, apply none (also `run --dry-run`).
    pub dry_run: bool,
    /// Dry run was asked for on the command line: it outlives reloads.
    pub dry_run_forced: bool,
    /// The longest an HTTP or NATS action may take before its outcome is ambiguous.
    pub timeout: Duration,
}

impl Default for RepairsConfig {
    fn default() -> Self {
        RepairsConfig {
            workers: 2,
            lease: Duration::from_secs(60),
            max_attempts: 5,
            four_eyes: false,
            dry_run: false,
            dry_run_forced: false,
            timeout: Duration::from_secs(30),
        }
    }
}

const MAX_LEASE: Bound = (Duration::from_secs(24 * 3600), "24h");

pub(super) fn check_repairs(
    raw: Option<RawRepairs>,
    path: &Path,
    diags: &mut Diagnostics,
) -> RepairsConfig {
    let d = RepairsConfig::default();
    let Some(raw) = raw else { return d };
    let at_least_one =
        |v: Option<Spanned<u32>>, what: &str, default: u32, diags: &mut Diagnostics| match v {
            Some(n) if n.value == 0 => {
                diags.push(
                    path,
                    yaml::pos(&n, 0),
                    format!("repairs.{what} must be at least 1"),
                );
                default
            }
            Some(n) => n.value,
            None => default,
        };
    RepairsConfig {
        workers: at_least_one(raw.workers, "workers", d.workers, diags),
        max_attempts: at_least_one(raw.max_attempts, "max_attempts", d.max_attempts, diags),
        lease: duration_field(
            raw.lease.as_ref(),
            d.lease,
            MAX_LEASE,
            "repairs.lease",
            path,
            diags,
        ),
        timeout: duration_field(
            raw.timeout.as_ref(),
            d.timeout,
            MAX_LEASE,
            "repairs.timeout",
            path,
            diags,
        ),
        four_eyes: raw.four_eyes,
        dry_run: raw.dry_run,
        dry_run_forced: false,
    }
}
