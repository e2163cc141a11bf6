//! The `webhook` receiver: a JSON POST of invariantd's own body, or a Slack-compatible one,
//! with the message id as the `Idempotency-Key` header. Both bodies are written here.

use std::any::Any;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;
use serde_saphyr::Spanned;

use super::send::{http_client, post_json, url_origin};
use super::{Checker, Configure, Receiver, ReceiverKind, SendError, same_as};
use crate::diag::Diagnostics;
use crate::notification::{Event, Notification};
use crate::outbound::Allowed;
use crate::value::Secrets;
use crate::yaml::{self, Shape};

#[derive(Debug, Deserialize)]
pub(super) struct RawWebhook {
    url: Spanned<String>,
    format: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// invariantd's own JSON body (documented in the README).
    Json,
    /// A Slack incoming-webhook body (`text` and `blocks`), which Mattermost and others take.
    Slack,
}

/// A checked `webhook` receiver.
#[derive(Clone, PartialEq)]
pub struct WebhookConfig {
    pub url: String,
    pub format: WebhookFormat,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &url_origin(&self.url))
            .field("format", &self.format)
            .finish()
    }
}

impl Configure for RawWebhook {
    fn shape() -> Shape {
        Shape::of::<RawWebhook>(vec![])
    }

    fn check(
        self,
        c: &Checker<'_>,
        diags: &mut Diagnostics,
        _secrets: &mut Secrets,
    ) -> Arc<dyn ReceiverKind> {
        let (w, what, path) = (self, c.what, c.path);
        let url = c.http_url(&w.url, diags);
        let format = match w.format.as_ref().map(|f| f.value.as_str()) {
            None | Some("json") => WebhookFormat::Json,
            Some("slack") => WebhookFormat::Slack,
            Some(other) => {
                diags.push(
                    path,
                    yaml::pos(w.format.as_ref().expect("format is set"), 0),
                    format!("{what}.format: `{other}` is not json or slack"),
                );
                WebhookFormat::Json
            }
        };
        Arc::new(WebhookConfig { url, format })
    }
}

impl ReceiverKind for WebhookConfig {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn target(&self) -> &str {
        &self.url
    }

    fn build(&self, allow: &[Allowed]) -> Result<Box<dyn Receiver>, String> {
        Ok(Box::new(Webhook::new(self, allow)?))
    }

    fn same(&self, other: &dyn ReceiverKind) -> bool {
        same_as(self, other)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

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
                WebhookFormat::Json => json_body(n),
                WebhookFormat::Slack => slack_body(n),
            };
            post_json(&self.client, &self.url, &body, Some(&n.id)).await
        })
    }
}

/// invariantd's webhook body: the notification itself, with a version, a title and the
/// text, so that a receiver can show it without formatting its own.
pub fn json_body(n: &Notification) -> serde_json::Value {
    let mut body = serde_json::to_value(n).expect("a notification serialises");
    let map = body.as_object_mut().expect("an object");
    map.insert("version".into(), json!(1));
    map.insert("title".into(), json!(n.subject()));
    map.insert("text".into(), json!(n.text()));
    body
}

/// A Slack incoming-webhook body (also taken by Mattermost, Rocket.Chat and others).
pub fn slack_body(n: &Notification) -> serde_json::Value {
    let mut lines = vec![format!("*{}*", escape_slack(&n.subject()))];
    if !n.description.is_empty() {
        lines.push(escape_slack(&n.description));
    }
    if n.event != Event::Resolved {
        for s in &n.sample {
            lines.push(format!(
                "• `{}`: {}",
                escape_slack(&s.key),
                escape_slack(&s.message)
            ));
        }
        if (n.sample.len() as i64) < n.count && !n.sample.is_empty() {
            lines.push(format!("… and {} more", n.count - n.sample.len() as i64));
        }
    }
    let mut links: Vec<String> = Vec::new();
    if let Some(r) = n.labels.get("runbook_url") {
        links.push(format!("<{r}|runbook>"));
    }
    links.extend(n.links.iter().map(|(n, u)| format!("<{u}|{n}>")));
    if !links.is_empty() {
        lines.push(links.join(" · "));
    }
    json!({
        "text": n.subject(),
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": lines.join("\n") } },
            { "type": "context", "elements": [
                { "type": "mrkdwn", "text": format!("invariantd · {}", n.id) }
            ] }
        ]
    })
}

fn escape_slack(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notification::tests::{firing, resolved};

    #[test]
    fn webhook_bodies() {
        insta::assert_json_snapshot!("webhook_firing", json_body(&firing()));
        insta::assert_json_snapshot!("slack_firing", slack_body(&firing()));
        insta::assert_json_snapshot!("slack_resolved", slack_body(&resolved()));
    }
}
