//! Keeping what `health` knows of every configured source current: a source that no rule run has
//! touched for `IDLE` (its rules run rarely, or none uses it) is probed with one connection
//! and one query. Every source is probed at start-up, so each has a series from the start —
//! and the probe says when a source's role could do more than read (logged once, and shown
//! by `/readyz`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use tracing::warn;

use super::ServiceResult;
use super::runner::RunLog;
use crate::context::Handle;

/// A source not seen by a run for this long is probed.
const IDLE: Duration = Duration::from_secs(30);
/// How often the sources are looked at.
const TICK: Duration = Duration::from_secs(10);

/// The probing service, until `stop`.
pub async fn service(
    handle: Arc<Handle>,
    stop: CancellationToken,
    log: Arc<RunLog>,
) -> ServiceResult {
    // Every source is probed once at least, for its privileges, however busy its rules are.
    let mut checked: std::collections::HashSet<String> = Default::default();
    loop {
        let ctx = handle.current();
        for source in ctx.sources.all() {
            let idle = ctx
                .health
                .source_health(source.name())
                .is_none_or(|h| h.seen.elapsed() >= IDLE);
            if !idle && checked.contains(source.name()) {
                continue;
            }
            let result = tokio::select! {
                r = source.probe() => r,
                () = stop.cancelled() => return Ok(()),
            };
            if ctx.health.source(source.name(), result.is_ok()) {
                // A source's alert follows at once, not at the next evaluation due.
                handle.wake.alerts.notify_one();
            }
            log.transitions.source(
                source.name(),
                result.as_ref().err().map(|e| e.message.as_str()),
            );
            if let Ok(power) = &result {
                checked.insert(source.name().to_string());
                if handle.health.set_privileged(source.name(), power.clone())
                    && let Some(power) = power
                {
                    warn!(
                        source = %source.name(),
                        power = %power,
                        "Source connects with more than read rights: a check could change the database or write files on its server. Give invariantd a read-only role (README: Least privilege)."
                    );
                }
            }
        }
        drop(ctx);
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}
