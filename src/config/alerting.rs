//! The `alerting` section: receivers (email, webhook, Alertmanager), the ordered routes that
//! pick them, and the timing of an alert's lifecycle (`for`, `repeat_interval`,
//! `group_interval`). Matchers are checked against the rules' labels in `rules`, which knows
//! them; everything else about the section is checked here, without I/O.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Bound, duration_field};
use crate::diag::{Diagnostic, Diagnostics, Pos};
use crate::notification::AlertKind;
use crate::yaml::{self, OrderedMap, Shape};

#[derive(Debug, Deserialize)]
pub(super) struct RawAlerting {
    #[serde(default)]
    receivers: OrderedMap<RawReceiver>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    #[serde(rename = "for")]
    for_: Option<Spanned<String>>,
    repeat_interval: Option<Spanned<String>>,
    group_interval: Option<Spanned<String>>,
    sample_size: Option<Spanned<u32>>,
    stale_after: Option<Spanned<String>>,
    evaluation_interval: Option<Spanned<String>>,
    base_url: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
struct RawReceiver {
    email: Option<RawEmail>,
    webhook: Option<RawWebhook>,
    alertmanager: Option<RawAlertmanager>,
}

#[derive(Debug, Deserialize)]
struct RawEmail {
    #[serde(default)]
    to: Vec<Spanned<String>>,
    from: Option<Spanned<String>>,
    smtp: Spanned<String>,
    password_file: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
struct RawWebhook {
    url: Spanned<String>,
    format: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
struct RawAlertmanager {
    url: Spanned<String>,
    resend_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
struct RawRoute {
    #[serde(rename = "match", default)]
    matchers: OrderedMap<Spanned<String>>,
    #[serde(default)]
    receivers: Vec<Spanned<String>>,
    #[serde(rename = "continue")]
    continue_: Option<Spanned<bool>>,
}

/// The shape of the section, for unknown fields.
pub(super) fn shape() -> Shape {
    Shape::of::<RawAlerting>(vec![
        (
            "receivers",
            Shape::MapOf(Box::new(Shape::of::<RawReceiver>(vec![
                ("email", Shape::of::<RawEmail>(vec![])),
                ("webhook", Shape::of::<RawWebhook>(vec![])),
                ("alertmanager", Shape::of::<RawAlertmanager>(vec![])),
            ]))),
        ),
        (
            "routes",
            Shape::SeqOf(Box::new(Shape::of::<RawRoute>(vec![("match", Shape::Any)]))),
        ),
    ])
}

/// Where alerts go and when.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertingConfig {
    pub receivers: Vec<ReceiverConfig>,
    pub routes: Vec<RouteConfig>,
    /// How long a rule must stay failing (or passing) before the change is announced.
    pub for_: Duration,
    /// How often a firing alert is announced again.
    pub repeat_interval: Duration,
    /// The least time between two announcements of a group that grew.
    pub group_interval: Duration,
    /// Violations listed in a message.
    pub sample_size: usize,
    /// A rule whose last success is older than this alerts (`stale`).
    pub stale_after: Duration,
    /// How often alerts are evaluated when no run asks for it.
    pub evaluation_interval: Duration,
    /// The address of invariantd's web page and API, for links in messages.
    pub base_url: Option<String>,
    /// A receiver no route reaches, and the like: valid, but probably not meant.
    pub warnings: Vec<Diagnostic>,
}

pub const DEFAULT_FOR: Duration = Duration::ZERO;
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_SAMPLE_SIZE: usize = 10;
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(3600);
pub const DEFAULT_EVALUATION_INTERVAL: Duration = Duration::from_secs(15);
pub const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_secs(60);
const MAX_SAMPLE_SIZE: u32 = 1000;
const MAX_INTERVAL: Bound = (Duration::from_secs(30 * 24 * 3600), "30d");

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            receivers: Vec::new(),
            routes: Vec::new(),
            for_: DEFAULT_FOR,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
            group_interval: DEFAULT_GROUP_INTERVAL,
            sample_size: DEFAULT_SAMPLE_SIZE,
            stale_after: DEFAULT_STALE_AFTER,
            evaluation_interval: DEFAULT_EVALUATION_INTERVAL,
            base_url: None,
            warnings: Vec::new(),
        }
    }
}

impl AlertingConfig {
    pub fn receiver(&self, name: &str) -> Option<&ReceiverConfig> {
        self.receivers.iter().find(|r| r.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverConfig {
    pub name: String,
    pub kind: ReceiverKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReceiverKind {
    Email(EmailConfig),
    Webhook(WebhookConfig),
    Alertmanager(AlertmanagerConfig),
}

impl ReceiverKind {
    /// How often a firing alert must be sent again while it fires: for a receiver that
    /// forgets alerts it is not told about again (Alertmanager ends them at `endsAt`). `None`
    /// for receivers told once.
    pub fn resend_interval(&self) -> Option<Duration> {
        match self {
            ReceiverKind::Alertmanager(a) => Some(a.resend_interval),
            ReceiverKind::Email(_) | ReceiverKind::Webhook(_) => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ReceiverKind::Email(_) => "email",
            ReceiverKind::Webhook(_) => "webhook",
            ReceiverKind::Alertmanager(_) => "alertmanager",
        }
    }
}

#[derive(Clone, PartialEq)]
pub struct EmailConfig {
    pub to: Vec<String>,
    pub from: String,
    /// `smtp://` (plain, or STARTTLS with `?tls=required`) or `smtps://` (TLS), with the user
    /// and maybe the password; it may hold a secret, so it is never printed.
    pub smtp: String,
    /// A file holding the SMTP password (read when the receiver starts).
    pub password_file: Option<PathBuf>,
    /// PEM certificates to trust besides the system's, for a mail server with a private CA.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// invariantd's own JSON body (documented in the README).
    Json,
    /// A Slack incoming-webhook body (`text` and `blocks`), which Mattermost and others take.
    Slack,
}

#[derive(Clone, PartialEq)]
pub struct WebhookConfig {
    pub url: String,
    pub format: WebhookFormat,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerConfig {
    /// Alertmanager's base URL; alerts are posted to `/api/v2/alerts` under it.
    pub url: String,
    /// How often firing alerts are sent again, as Alertmanager expects from its clients.
    pub resend_interval: Duration,
}

/// An ordered route: the first whose matchers all match takes the alert; `continue` lets the
/// next ones match too. A route without matchers matches everything (the default route).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub matchers: Vec<Matcher>,
    pub receivers: Vec<String>,
    pub continue_: bool,
    pub pos: Pos,
}

/// `field: value`, where the field is `severity`, `rule`, `kind`, `source` or a rule label.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    pub field: String,
    pub value: String,
    pub pos: Pos,
}

/// The fields a matcher may name besides the rules' labels.
pub const MATCH_FIELDS: [&str; 4] = ["severity", "rule", "kind", "source"];
pub(super) fn check_alerting(
    raw: Option<RawAlerting>,
    path: &Path,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
    secrets: &mut crate::value::Secrets,
) -> AlertingConfig {
    let Some(raw) = raw else {
        return AlertingConfig::default();
    };
    let interval = |v: &Option<Spanned<String>>, default, what, diags: &mut Diagnostics| {
        duration_field(v.as_ref(), default, MAX_INTERVAL, what, path, diags)
    };
    let for_ = match &raw.for_ {
        // `for: 0s` is allowed: announce at once.
        Some(v) if humantime::parse_duration(&v.value).is_ok_and(|d| d.is_zero()) => Duration::ZERO,
        v => interval(v, DEFAULT_FOR, "alerting.for", diags),
    };
    let repeat_interval = interval(
        &raw.repeat_interval,
        DEFAULT_REPEAT_INTERVAL,
        "alerting.repeat_interval",
        diags,
    );
    let group_interval = interval(
        &raw.group_interval,
        DEFAULT_GROUP_INTERVAL,
        "alerting.group_interval",
        diags,
    );
    let stale_after = interval(
        &raw.stale_after,
        DEFAULT_STALE_AFTER,
        "alerting.stale_after",
        diags,
    );
    let evaluation_interval = interval(
        &raw.evaluation_interval,
        DEFAULT_EVALUATION_INTERVAL,
        "alerting.evaluation_interval",
        diags,
    );
    let sample_size = match &raw.sample_size {
        None => DEFAULT_SAMPLE_SIZE,
        Some(s) if s.value > MAX_SAMPLE_SIZE => {
            diags.push(
                path,
                yaml::pos(s, 0),
                format!("alerting.sample_size: at most {MAX_SAMPLE_SIZE}"),
            );
            DEFAULT_SAMPLE_SIZE
        }
        Some(s) => s.value as usize,
    };
    let base_url = raw.base_url.as_ref().and_then(|u| {
        let url = yaml::expand_spanned(u, "alerting.base_url", path, 0, env, diags);
        check_http_url(&url, "alerting.base_url", yaml::pos(u, 0), path, diags)
            .then(|| url.trim_end_matches('/').to_string())
    });

    let mut receivers = Vec::new();
    for (name, r) in raw.receivers.0 {
        let at = yaml::pos(&name, 0);
        let what = format!("alerting.receivers.{}", name.value);
        if !super::valid_receiver_name(&name.value) {
            diags.push(
                path,
                at,
                format!(
                    "receiver name `{}` must match [a-z0-9_-]+ (it is used in metric labels)",
                    name.value
                ),
            );
        }
        let given = [
            r.email.is_some(),
            r.webhook.is_some(),
            r.alertmanager.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if given != 1 {
            diags.push(
                path,
                at,
                format!("{what}: give exactly one of email, webhook or alertmanager"),
            );
            continue;
        }
        let kind = if let Some(e) = r.email {
            let smtp = yaml::expand_spanned(&e.smtp, &format!("{what}.smtp"), path, 0, env, diags);
            secrets.add_url_password(&smtp);
            if !smtp.is_empty() {
                check_smtp_url(&smtp, &what, yaml::pos(&e.smtp, 0), path, diags);
            }
            if e.to.is_empty() {
                diags.push(path, at, format!("{what}.to: at least one address"));
            }
            let mut to = Vec::new();
            for t in &e.to {
                let addr = yaml::expand_spanned(t, &format!("{what}.to"), path, 0, env, diags);
                check_address(&addr, &format!("{what}.to"), yaml::pos(t, 0), path, diags);
                to.push(addr);
            }
            let from = match &e.from {
                Some(f) => {
                    let addr =
                        yaml::expand_spanned(f, &format!("{what}.from"), path, 0, env, diags);
                    check_address(&addr, &format!("{what}.from"), yaml::pos(f, 0), path, diags);
                    addr
                }
                None => "invariantd <invariantd@localhost>".to_string(),
            };
            let password_file = e.password_file.as_ref().and_then(|f| {
                let file =
                    yaml::expand_spanned(f, &format!("{what}.password_file"), path, 0, env, diags);
                (!file.is_empty()).then(|| base.join(file))
            });
            let ca_file = e.ca_file.as_ref().and_then(|f| {
                let file = yaml::expand_spanned(f, &format!("{what}.ca_file"), path, 0, env, diags);
                let plain = reqwest::Url::parse(&smtp).is_ok_and(|u| {
                    u.scheme() == "smtp" && !u.query_pairs().any(|(k, _)| k == "tls")
                });
                if plain {
                    diags.push(
                        path,
                        yaml::pos(f, 0),
                        format!("{what}.ca_file: the smtp URL uses no TLS (use smtps:// or ?tls=required)"),
                    );
                }
                (!file.is_empty()).then(|| base.join(file))
            });
            ReceiverKind::Email(EmailConfig {
                to,
                from,
                smtp,
                password_file,
                ca_file,
            })
        } else if let Some(w) = r.webhook {
            let url = yaml::expand_spanned(&w.url, &format!("{what}.url"), path, 0, env, diags);
            if !url.is_empty() {
                check_http_url(
                    &url,
                    &format!("{what}.url"),
                    yaml::pos(&w.url, 0),
                    path,
                    diags,
                );
            }
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
            ReceiverKind::Webhook(WebhookConfig { url, format })
        } else {
            let a = r.alertmanager.expect("one kind is given");
            let url = yaml::expand_spanned(&a.url, &format!("{what}.url"), path, 0, env, diags);
            if !url.is_empty() {
                check_http_url(
                    &url,
                    &format!("{what}.url"),
                    yaml::pos(&a.url, 0),
                    path,
                    diags,
                );
            }
            let resend_interval = interval(
                &a.resend_interval,
                DEFAULT_RESEND_INTERVAL,
                "resend_interval",
                diags,
            );
            ReceiverKind::Alertmanager(AlertmanagerConfig {
                url: url.trim_end_matches('/').to_string(),
                resend_interval,
            })
        };
        if receivers
            .iter()
            .any(|x: &ReceiverConfig| x.name == name.value)
        {
            diags.push(
                path,
                at,
                format!("receiver `{}` is defined twice", name.value),
            );
            continue;
        }
        receivers.push(ReceiverConfig {
            name: name.value,
            kind,
        });
    }

    let mut routes = Vec::new();
    let mut reached = std::collections::HashSet::new();
    for (i, spanned) in raw.routes.into_iter().enumerate() {
        // Where the route is written: its first receiver or matcher, else the route itself.
        let r = &spanned.value;
        let pos = r
            .receivers
            .first()
            .map(|s| yaml::pos(s, 0))
            .or_else(|| r.matchers.0.first().map(|(k, _)| yaml::pos(k, 0)))
            .unwrap_or_else(|| yaml::pos(&spanned, 0));
        let r = spanned.value;
        if r.receivers.is_empty() {
            diags.push(
                path,
                pos,
                format!("alerting.routes[{i}]: a route needs at least one receiver"),
            );
        }
        let mut names = Vec::new();
        for name in &r.receivers {
            if receivers.iter().any(|x| x.name == name.value) {
                reached.insert(name.value.clone());
            } else {
                let known: Vec<&str> = receivers.iter().map(|x| x.name.as_str()).collect();
                let hint = crate::diag::suggest(&name.value, &known)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                diags.push(
                    path,
                    yaml::pos(name, 0),
                    format!(
                        "alerting.routes[{i}]: no receiver is named `{}`{hint}",
                        name.value
                    ),
                );
            }
            names.push(name.value.clone());
        }
        let mut matchers = Vec::new();
        for (field, value) in r.matchers.0 {
            let at = yaml::pos(&field, 0);
            match field.value.as_str() {
                "severity" if !["critical", "warning", "info"].contains(&value.value.as_str()) => {
                    diags.push(
                        path,
                        yaml::pos(&value, 0),
                        format!(
                            "alerting.routes[{i}]: severity `{}` is not one of critical, warning, info",
                            value.value
                        ),
                    );
                }
                "kind" if AlertKind::parse(&value.value).is_none() => {
                    diags.push(
                        path,
                        yaml::pos(&value, 0),
                        format!(
                            "alerting.routes[{i}]: kind `{}` is not one of {}",
                            value.value,
                            AlertKind::names()
                        ),
                    );
                }
                _ => {}
            }
            matchers.push(Matcher {
                field: field.value,
                value: value.value,
                pos: at,
            });
        }
        routes.push(RouteConfig {
            matchers,
            receivers: names,
            continue_: r.continue_.is_some_and(|c| c.value),
            pos,
        });
    }
    let mut warnings = Diagnostics::default();
    for r in &receivers {
        if !reached.contains(&r.name) {
            warnings.push(
                path,
                Pos::default(),
                format!(
                    "alerting: no route sends to receiver `{}`: it never gets an alert",
                    r.name
                ),
            );
        }
    }
    if routes.is_empty() && !receivers.is_empty() {
        // Receivers are only reached through routes.
        warnings.push(
            path,
            Pos::default(),
            "alerting: there are receivers but no routes: no alert is sent",
        );
    }
    AlertingConfig {
        receivers,
        routes,
        for_,
        repeat_interval,
        group_interval,
        sample_size,
        stale_after,
        evaluation_interval,
        base_url,
        warnings: warnings.0,
    }
}

fn check_http_url(url: &str, what: &str, at: Pos, path: &Path, diags: &mut Diagnostics) -> bool {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => true,
        _ => {
            diags.push(
                path,
                at,
                format!(
                    "{what}: `{}` is not an http:// or https:// URL",
                    redact_url(url)
                ),
            );
            false
        }
    }
}

fn check_smtp_url(url: &str, what: &str, at: Pos, path: &Path, diags: &mut Diagnostics) {
    let ok = match reqwest::Url::parse(url) {
        Ok(u) => {
            matches!(u.scheme(), "smtp" | "smtps")
                && u.host().is_some()
                && u.query_pairs()
                    .all(|(k, v)| k != "tls" || matches!(v.as_ref(), "required" | "opportunistic"))
        }
        Err(_) => false,
    };
    if !ok {
        diags.push(
            path,
            at,
            format!(
                "{what}.smtp: `{}` is not an SMTP URL such as smtps://user@mail.example.com:465 or smtp://mail.example.com:587?tls=required",
                redact_url(url)
            ),
        );
    }
}

fn check_address(addr: &str, what: &str, at: Pos, path: &Path, diags: &mut Diagnostics) {
    if !addr.is_empty() && addr.parse::<lettre::message::Mailbox>().is_err() {
        diags.push(
            path,
            at,
            format!("{what}: `{addr}` is not an email address"),
        );
    }
}

/// Only where a URL goes (scheme, host, port): its user, password, path and query may hold
/// secrets (a Slack webhook's path is one), so they are never printed.
fn url_origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}/…",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "<invalid URL>".into(),
    }
}

impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("to", &self.to)
            .field("from", &self.from)
            .field("smtp", &url_origin(&self.smtp))
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &url_origin(&self.url))
            .field("format", &self.format)
            .finish()
    }
}

/// A URL with its password, if any, replaced by `***`.
fn redact_url(url: &str) -> String {
    let mut secrets = crate::value::Secrets::default();
    secrets.add_url_password(url);
    secrets.redact(url).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receivers_never_print_their_secrets() {
        let email = EmailConfig {
            to: vec!["oncall@example.com".into()],
            from: "a@example.com".into(),
            smtp: "smtps://alerts:s3cr3t-pw@mail.example.com:465".into(),
            password_file: None,
            ca_file: None,
        };
        let hook = WebhookConfig {
            url: "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX".into(),
            format: WebhookFormat::Slack,
        };
        let printed = format!("{email:?} {hook:?}");
        assert!(
            !printed.contains("s3cr3t") && !printed.contains("SECRET"),
            "{printed}"
        );
        assert!(
            printed.contains("smtps://mail.example.com:465/…"),
            "{printed}"
        );
        assert!(printed.contains("https://hooks.slack.com/…"), "{printed}");
    }
}
