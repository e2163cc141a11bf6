//! The `alertmanager` receiver: posts alerts to Alertmanager's API v2 (`/api/v2/alerts`). The
//! labels are the same in every announcement of a group, so Alertmanager deduplicates them;
//! a firing alert is valid for four `resend_interval`s and sent again while it fires, and a
//! resolved one carries its `endsAt`.

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::message::Notification;
use super::receiver::{Receiver, SendError, http_client, post_json};
use crate::config::{AlertmanagerConfig, Allowed};

pub struct Alertmanager {
    url: String,
    valid_for: Duration,
    client: crate::outbound::Client,
}

impl Alertmanager {
    pub fn new(config: &AlertmanagerConfig, allow: &[Allowed]) -> Result<Alertmanager, String> {
        Ok(Alertmanager {
            url: format!("{}/api/v2/alerts", config.url),
            valid_for: config.resend_interval * 4,
            client: http_client(allow)?,
        })
    }
}

impl Receiver for Alertmanager {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            post_json(
                &self.client,
                &self.url,
                &n.alertmanager_json(&now, self.valid_for),
                None,
            )
            .await
        })
    }
}
