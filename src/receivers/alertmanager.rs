//! The `alertmanager` receiver: posts alerts to Alertmanager's API v2 (`/api/v2/alerts`). The
//! labels are the same in every announcement of a group, so Alertmanager deduplicates them;
//! a firing alert is valid for four `resend_interval`s and sent again while it fires, and a
//! resolved one carries its `endsAt`.

use std::collections::BTreeMap;
use std::time::Duration;

use std::any::Any;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;
use serde_saphyr::Spanned;

use super::send::{http_client, post_json};
use super::{Checker, Configure, Receiver, ReceiverKind, SendError, same_as};
use crate::diag::Diagnostics;
use crate::notification::{AlertKind, Notification};
use crate::outbound::Allowed;
use crate::value::Secrets;
use crate::yaml::{Bound, Shape, duration_field};

#[derive(Debug, Deserialize)]
pub(super) struct RawAlertmanager {
    url: Spanned<String>,
    resend_interval: Option<Spanned<String>>,
}

/// A checked `alertmanager` receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerConfig {
    /// Alertmanager's base URL; alerts are posted to `/api/v2/alerts` under it.
    pub url: String,
    /// How often firing alerts are sent again, as Alertmanager expects from its clients.
    pub resend_interval: Duration,
}

/// How often firing alerts are sent again by default.
pub const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_secs(60);
const MAX_RESEND_INTERVAL: Bound = (Duration::from_secs(30 * 24 * 3600), "30d");

impl Configure for RawAlertmanager {
    fn shape() -> Shape {
        Shape::of::<RawAlertmanager>(vec![])
    }

    fn check(
        self,
        c: &Checker<'_>,
        diags: &mut Diagnostics,
        _secrets: &mut Secrets,
    ) -> Arc<dyn ReceiverKind> {
        let (a, what, path) = (self, c.what, c.path);
        let url = c.http_url(&a.url, diags);
        let resend_interval = duration_field(
            a.resend_interval.as_ref(),
            DEFAULT_RESEND_INTERVAL,
            MAX_RESEND_INTERVAL,
            &format!("{what}.resend_interval"),
            path,
            diags,
        );
        Arc::new(AlertmanagerConfig {
            url: url.trim_end_matches('/').to_string(),
            resend_interval,
        })
    }
}

impl ReceiverKind for AlertmanagerConfig {
    fn kind(&self) -> &'static str {
        "alertmanager"
    }

    fn target(&self) -> &str {
        &self.url
    }

    /// Alertmanager ends an alert at its `endsAt`: a firing one is sent again while it fires.
    fn resend_interval(&self) -> Option<Duration> {
        Some(self.resend_interval)
    }

    fn build(&self, allow: &[Allowed]) -> Result<Box<dyn Receiver>, String> {
        Ok(Box::new(Alertmanager::new(self, allow)?))
    }

    fn same(&self, other: &dyn ReceiverKind) -> bool {
        same_as(self, other)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

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
            let alerts = alerts_json(n, &now, self.valid_for);
            post_json(&self.client, &self.url, &alerts, None).await
        })
    }
}

/// The labels that identify the alert in Alertmanager: the same for every announcement of
/// a group, so Alertmanager groups, deduplicates and resolves them.
pub fn labels(n: &Notification) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = n
        .labels
        .iter()
        .filter(|(k, _)| *k != "runbook_url" && crate::notification::valid_label_name(k))
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

/// What one notification posts: its alert, and for an escalation also the end of the alert
/// of the severity before — Alertmanager knows an alert by its labels, severity among them,
/// and would let the old one fire on until it expired.
pub fn alerts_json(n: &Notification, now: &str, valid_for: Duration) -> serde_json::Value {
    let mut alerts = alert_json(n, now, valid_for);
    if let Some(from) = &n.escalated_from {
        let before = Notification {
            severity: from.clone(),
            ends_at: Some(now.to_string()),
            ..n.clone()
        };
        if let (Some(list), serde_json::Value::Array(ended)) =
            (alerts.as_array_mut(), alert_json(&before, now, valid_for))
        {
            list.extend(ended);
        }
    }
    alerts
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
    // Alertmanager's link back to what raised the alert: the rule's view on the page.
    if let Some(url) = n.links.get("page").or_else(|| n.links.get("rule")) {
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

    #[test]
    fn an_escalation_ends_the_alert_of_the_severity_before() {
        let valid = Duration::from_secs(240);
        let escalated = Notification {
            event: crate::notification::Event::Escalated,
            escalated_from: Some("warning".into()),
            ..firing()
        };
        let posted = alerts_json(&escalated, "2026-11-27T12:20:00Z", valid);
        let list = posted.as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["labels"]["severity"], "critical");
        assert_eq!(list[0]["endsAt"], "2026-11-27T12:24:00Z");
        assert_eq!(list[1]["labels"]["severity"], "warning");
        assert_eq!(list[1]["endsAt"], "2026-11-27T12:20:00Z");
        // Anything else posts its one alert.
        assert_eq!(
            alerts_json(&firing(), "2026-11-27T12:20:00Z", valid)
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}
