//! The `alertmanager` receiver: posts alerts to Alertmanager's API v2 (`/api/v2/alerts`). The
//! labels are the same in every announcement of a group, so Alertmanager deduplicates them;
//! a firing alert is valid for four `resend_interval`s and sent again while it fires, and a
//! resolved one carries its `endsAt`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::json;

use super::receiver::{Receiver, SendError, http_client, post_json};
use crate::config::AlertmanagerConfig;
use crate::notification::AlertKind;
use crate::notification::Notification;
use crate::outbound::Allowed;

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
                &alert_json(n, &now, self.valid_for),
                None,
            )
            .await
        })
    }
}

/// The labels that identify the alert in Alertmanager: the same for every announcement of
/// a group, so Alertmanager groups, deduplicates and resolves them.
pub fn labels(n: &Notification) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = n
        .labels
        .iter()
        .filter(|(k, _)| *k != "runbook_url" && crate::config::valid_label_name(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let alertname = match n.kind {
        AlertKind::Violation => "InvariantViolated",
        AlertKind::Unknown => "InvariantRuleUnknown",
        AlertKind::Stale => "InvariantRuleStale",
        AlertKind::RepairsHeld => "InvariantRepairsHeld",
        AlertKind::SourceDown => "InvariantSourceDown",
    };
    labels.insert("alertname".into(), alertname.into());
    labels.insert("severity".into(), n.severity.clone());
    labels.insert("kind".into(), n.kind.as_str().into());
    if let Some(rule) = &n.rule {
        labels.insert("rule".into(), rule.clone());
    }
    if let Some(source) = &n.source {
        labels.insert("source".into(), source.clone());
    }
    labels
}

/// One alert for Alertmanager's `POST /api/v2/alerts`. A firing alert ends at
/// `now + valid_for` unless it is sent again (`resend_interval` keeps it alive); a
/// resolved one ends when it resolved.
pub fn alert_json(n: &Notification, now: &str, valid_for: Duration) -> serde_json::Value {
    let ends_at = match &n.ends_at {
        Some(end) => end.clone(),
        None => chrono::DateTime::parse_from_rfc3339(now)
            .map(|t| {
                (t + chrono::Duration::from_std(valid_for).unwrap_or_default())
                    .to_utc()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })
            .unwrap_or_else(|_| now.to_string()),
    };
    let mut annotations = BTreeMap::new();
    annotations.insert("summary".to_string(), n.what());
    annotations.insert("description".to_string(), n.text());
    annotations.insert("message_id".to_string(), n.id.clone());
    if let Some(r) = n.labels.get("runbook_url") {
        annotations.insert("runbook_url".into(), r.clone());
    }
    let mut alert = json!({
        "labels": labels(n),
        "annotations": annotations,
        "startsAt": n.starts_at,
        "endsAt": ends_at,
    });
    if let Some(url) = n.links.get("rule") {
        alert["generatorURL"] = json!(url);
    }
    json!([alert])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notification::tests::{firing, repairs_held, resolved};

    #[test]
    fn alertmanager_alerts() {
        let valid = Duration::from_secs(240);
        insta::assert_json_snapshot!(
            "alertmanager_firing",
            alert_json(&firing(), "2026-11-27T12:17:00Z", valid)
        );
        insta::assert_json_snapshot!(
            "alertmanager_resolved",
            alert_json(&resolved(), "2026-11-27T13:00:00Z", valid)
        );
        insta::assert_json_snapshot!(
            "alertmanager_repairs_held",
            alert_json(&repairs_held(), "2026-11-27T12:17:00Z", valid)
        );
        // The labels that identify the alert are the same in every announcement of the group.
        assert_eq!(labels(&firing()), labels(&resolved()));
    }
}
