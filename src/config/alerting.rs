//! The `alerting` section: receivers (each kind checked by its own file in `receivers`), the
//! ordered routes that pick them, and the timing of an alert's lifecycle (`for`, `repeat_interval`,
//! `group_interval`). Matchers are checked against the rules' labels in `rules`, which knows
//! them; everything else about the section is checked here, without I/O.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, Diagnostics, Pos};
use crate::notification::AlertKind;
use crate::receivers::ReceiverKind;
use crate::yaml::{self, OrderedMap, Shape};
use crate::yaml::{Bound, duration_field};

#[derive(Debug, Deserialize)]
pub(super) struct RawAlerting {
    #[serde(default)]
    receivers: OrderedMap<crate::receivers::RawReceiver>,
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
struct RawRoute {
    #[serde(rename = "match", default)]
    matchers: OrderedMap<Spanned<String>>,
    #[serde(default)]
    receivers: Vec<Spanned<String>>,
    #[serde(rename = "continue")]
    continue_: Option<Spanned<bool>>,
    min_impact: Option<Spanned<String>>,
}

/// The shape of the section, for unknown fields.
pub(super) fn shape() -> Shape {
    Shape::of::<RawAlerting>(vec![
        (
            "receivers",
            Shape::MapOf(Box::new(crate::receivers::shape())),
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

/// A receiver, named; its kind (`email`, …) is its own file in `receivers`.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub name: String,
    pub kind: Arc<dyn ReceiverKind>,
}

impl PartialEq for ReceiverConfig {
    fn eq(&self, other: &ReceiverConfig) -> bool {
        self.name == other.name && self.kind.same(&*other.kind)
    }
}

/// An ordered route: the first whose matchers all match takes the alert; `continue` lets the
/// next ones match too. A route without matchers matches everything (the default route).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub matchers: Vec<Matcher>,
    pub receivers: Vec<String>,
    pub continue_: bool,
    /// Only alerts whose rule puts at least this much at risk (its open violations' impact
    /// summed, in the rule's unit) take this route.
    pub min_impact: Option<rust_decimal::Decimal>,
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
        crate::receivers::check_http_url(&url, "alerting.base_url", yaml::pos(u, 0), path, diags)
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
        let checker = crate::receivers::Checker {
            path,
            base,
            env,
            what: &what,
            at,
        };
        let Some(kind) = crate::receivers::check(r, &checker, diags, secrets) else {
            continue;
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
        let min_impact = r.min_impact.and_then(|m| {
            let n = m
                .value
                .trim()
                .parse::<rust_decimal::Decimal>()
                .ok()
                .filter(|n| !n.is_sign_negative());
            if n.is_none() {
                diags.push(
                    path,
                    yaml::pos(&m, 0),
                    format!(
                        "alerting.routes[{i}]: min_impact `{}` is not a number of 0 or more (in the rule's impact unit)",
                        m.value
                    ),
                );
            }
            n
        });
        routes.push(RouteConfig {
            matchers,
            receivers: names,
            continue_: r.continue_.is_some_and(|c| c.value),
            min_impact,
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
