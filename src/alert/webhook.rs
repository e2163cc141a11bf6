//! The `webhook` receiver: a JSON POST of invariantd's own body, or a Slack-compatible one,
//! with the message id as the `Idempotency-Key` header.

use futures_util::future::BoxFuture;

use super::message::Notification;
use super::receiver::{Receiver, SendError, http_client, post_json};
use crate::config::{Allowed, WebhookConfig, WebhookFormat};

pub struct Webhook {
    url: String,
    format: WebhookFormat,
    client: crate::outbound::Client,
}

impl Webhook {
    pub fn new(config: &WebhookConfig, allow: &[Allowed]) -> Result<Webhook, String> {
        Ok(Webhook {
            url: config.url.clone(),
            format: config.format,
            client: http_client(allow)?,
        })
    }
}

impl Receiver for Webhook {
    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let body = match self.format {
                WebhookFormat::Json => n.webhook_json(),
                WebhookFormat::Slack => n.slack_json(),
            };
            post_json(&self.client, &self.url, &body, Some(&n.id)).await
        })
    }
}
