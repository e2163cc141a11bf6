//! Pruning: resolved violations and runs older than `state.retention` are deleted hourly.
//! Open violations are never pruned.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::context::Handle;

/// How often old resolved violations and runs are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The pruning service: prunes now and then every hour, until `stop`. A failed prune is
/// logged and tried again at the next hour; it never stops the daemon.
pub async fn service(handle: Arc<Handle>, stop: CancellationToken) -> Result<(), String> {
    loop {
        let ctx = handle.current();
        let retention = chrono::Duration::from_std(ctx.config.state.retention)
            .unwrap_or(chrono::Duration::days(30));
        match ctx
            .store
            .prune((Utc::now() - retention).timestamp_micros())
            .await
        {
            Ok(n) if n > 0 => info!(rows = n, "Pruned old runs and resolved violations."),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "Could not prune the state store."),
        }
        drop(ctx);
        tokio::select! {
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
            _ = stop.cancelled() => return Ok(()),
        }
    }
}
