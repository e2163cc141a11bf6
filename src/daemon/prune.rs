//! Pruning: resolved violations and runs older than `state.retention` are deleted hourly, or
//! every quarter of the retention when that is shorter (so a short retention bounds the
//! store), in batches of bounded size (`StateStore::prune`). Open violations are never pruned.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::context::Handle;

/// How often old resolved violations and runs are pruned, at most.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How often, at least.
const PRUNE_AT_MOST_EVERY: Duration = Duration::from_secs(10);

/// How long to wait between prunes with `retention`: a quarter of it, within the bounds.
pub fn prune_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(PRUNE_AT_MOST_EVERY, PRUNE_EVERY)
}

/// The pruning service: prunes now and then every `prune_interval`, until `stop`. A failed
/// prune is logged and tried again at the next; it never stops the daemon.
pub async fn service(handle: Arc<Handle>, stop: CancellationToken) -> Result<(), String> {
    loop {
        let ctx = handle.current();
        let every = prune_interval(ctx.config.state.retention);
        let retention = chrono::Duration::from_std(ctx.config.state.retention)
            .unwrap_or(chrono::Duration::days(30));
        match ctx
            .store
            .prune((Utc::now() - retention).timestamp_micros())
            .await
        {
            Ok(p) if p.rows > 0 => info!(
                rows = p.rows,
                batches = p.batches,
                longest_batch_ms = p.longest_batch.as_millis() as u64,
                "Pruned old runs and resolved violations."
            ),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "Could not prune the state store."),
        }
        drop(ctx);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::prune_interval;

    #[test]
    fn a_short_retention_is_pruned_more_often() {
        let h = Duration::from_secs(3600);
        assert_eq!(prune_interval(h * 24 * 30), h);
        assert_eq!(
            prune_interval(Duration::from_secs(120)),
            Duration::from_secs(30)
        );
        assert_eq!(
            prune_interval(Duration::from_secs(1)),
            Duration::from_secs(10)
        );
    }
}
