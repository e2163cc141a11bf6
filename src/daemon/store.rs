//! The state store's watch: pings the store every second (a protocol round trip that runs no
//! statement, bounded by two seconds), so that readiness turns 503 within a few seconds of the
//! store going away and the API answers 503 at once while it is away, instead of each request
//! waiting for a connection.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::ServiceResult;
use crate::context::Handle;

const EVERY: Duration = Duration::from_secs(1);
const PING_LIMIT: Duration = Duration::from_secs(2);

pub async fn service(handle: Arc<Handle>, stop: CancellationToken) -> ServiceResult {
    loop {
        let store = handle.current().store.clone();
        let answer = tokio::select! {
            r = tokio::time::timeout(PING_LIMIT, store.ping()) => r,
            () = stop.cancelled() => return Ok(()),
        };
        let problem = match answer {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!(
                "no answer within {}",
                humantime::format_duration(PING_LIMIT)
            )),
        };
        if handle.health.set_store_away(problem.clone()) {
            match problem {
                Some(p) => {
                    warn!(problem = %p, "The state store does not answer: not ready, and the API answers 503 until it does.")
                }
                None => info!("The state store answers again."),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}
