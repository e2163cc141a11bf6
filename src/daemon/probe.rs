//! Keeping `source_up` current for every configured source: a source that no rule run has
//! touched for `IDLE` (its rules run rarely, or none uses it) is probed with one connection
//! and `SELECT 1`. Every source is probed at start-up, so each has a series from the start.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

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
    loop {
        let ctx = handle.current();
        for source in ctx.sources.all() {
            let idle = ctx
                .metrics
                .source_seen(source.name())
                .is_none_or(|seen| seen.elapsed() >= IDLE);
            if !idle {
                continue;
            }
            let result = tokio::select! {
                r = source.probe() => r,
                () = stop.cancelled() => return Ok(()),
            };
            ctx.metrics.source(source.name(), result.is_ok());
            log.transitions.source(
                source.name(),
                result.as_ref().err().map(|e| e.message.as_str()),
            );
        }
        drop(ctx);
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}
