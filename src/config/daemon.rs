//! The daemon's sections: `state`, `max_concurrent_runs`, `http`, `telemetry`, `auth`,
//! `metrics` and `cluster`.

use std::path::Path;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::sources::connect_options;
use super::{
    AuthConfig, ClusterConfig, ConnectOptions, DEFAULT_LEASE, DEFAULT_LISTEN,
    DEFAULT_MAX_CONCURRENT_RUNS, DEFAULT_RENEW, DEFAULT_RETENTION, LogFormat, MAX_RETENTION,
    RawAuth, RawCluster, RawHttp, RawMetrics, RawState, RawTelemetry, duration_field,
};
use crate::diag::Diagnostics;
use crate::yaml;

pub(super) fn check_retention(
    state: Option<&RawState>,
    path: &Path,
    diags: &mut Diagnostics,
) -> Duration {
    duration_field(
        state.and_then(|s| s.retention.as_ref()),
        DEFAULT_RETENTION,
        MAX_RETENTION,
        "state.retention",
        path,
        diags,
    )
}

pub(super) fn check_max_concurrent_runs(
    value: Option<Spanned<u32>>,
    path: &Path,
    diags: &mut Diagnostics,
) -> usize {
    (match value {
        Some(m) if m.value == 0 => {
            diags.push(
                path,
                yaml::pos(&m, 0),
                "max_concurrent_runs must be at least 1",
            );
            DEFAULT_MAX_CONCURRENT_RUNS
        }
        Some(m) => m.value,
        None => DEFAULT_MAX_CONCURRENT_RUNS,
    }) as usize
}

pub(super) fn check_http(
    http: Option<&RawHttp>,
    path: &Path,
    diags: &mut Diagnostics,
) -> (std::net::SocketAddr, Option<std::net::SocketAddr>) {
    let default = || DEFAULT_LISTEN.parse().expect("a valid address");
    let Some(h) = http else {
        return (default(), None);
    };
    let mut address = |field: &str, s: &Spanned<String>| {
        s.value.parse().map_err(|_| {
            diags.push(
                path,
                yaml::pos(s, 0),
                format!(
                    "http.{field}: `{}` is not an address and port such as 127.0.0.1:9464",
                    s.value
                ),
            );
        })
    };
    let listen = address("listen", &h.listen).unwrap_or_else(|()| default());
    let probes = h
        .probes_listen
        .as_ref()
        .and_then(|p| address("probes_listen", p).ok());
    if let (Some(p), Some(raw)) = (probes, &h.probes_listen)
        && p == listen
        && p.port() != 0
    {
        diags.push(
            path,
            yaml::pos(raw, 0),
            "http.probes_listen must differ from http.listen: it is a listener of its own",
        );
    }
    (listen, probes)
}

pub(super) fn check_telemetry(
    telemetry: Option<&RawTelemetry>,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
) -> (LogFormat, Option<String>) {
    let mut log_format = LogFormat::default();
    let mut otlp_endpoint = None;
    if let Some(t) = telemetry {
        if let Some(f) = &t.log_format {
            log_format = match f.value.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    diags.push(
                        path,
                        yaml::pos(f, 0),
                        format!("telemetry.log_format: `{other}` is not text or json"),
                    );
                    LogFormat::Text
                }
            };
        }
        if let Some(e) = &t.otlp_endpoint {
            let url = yaml::expand_spanned(e, "telemetry.otlp_endpoint", path, 0, env, diags);
            if !url.is_empty() {
                if url.starts_with("http://") || url.starts_with("https://") {
                    otlp_endpoint = Some(url);
                } else {
                    diags.push(path, yaml::pos(e, 0), "telemetry.otlp_endpoint: an http:// or https:// URL (OTLP over HTTP) is expected");
                }
            }
        }
    }
    (log_format, otlp_endpoint)
}

/// The state store's connection options; `None` when in error (already reported).
pub(super) fn check_state(
    state: Option<RawState>,
    path: &Path,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
    secrets: &mut crate::value::Secrets,
) -> Option<ConnectOptions> {
    match state {
        None => connect_options("sqlite://invariantd.db?mode=rwc", base).ok(),
        Some(s) => {
            let url = yaml::expand_spanned(&s.url, "state.url", path, 0, env, diags);
            secrets.add_url_password(&url);
            match connect_options(&url, base) {
                Ok(ConnectOptions::MySql(..)) => {
                    diags.push(
                        path,
                        yaml::pos(&s.url, 0),
                        "state: the state store is SQLite or PostgreSQL",
                    );
                    None
                }
                Ok(o) => Some(o),
                Err(msg) if !url.is_empty() => {
                    diags.push(path, yaml::pos(&s.url, 0), format!("state: {msg}"));
                    None
                }
                Err(_) => None,
            }
        }
    }
}

pub(super) fn check_auth(
    auth: Option<&RawAuth>,
    path: &Path,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    diags: &mut Diagnostics,
) -> AuthConfig {
    let Some(auth) = auth else {
        return AuthConfig::default();
    };
    let tokens_file = auth.tokens_file.as_ref().and_then(|f| {
        let file = yaml::expand_spanned(f, "auth.tokens_file", path, 0, env, diags);
        (!file.is_empty()).then(|| base.join(file))
    });
    let audit_key_file = auth.audit_key_file.as_ref().and_then(|f| {
        let file = yaml::expand_spanned(f, "auth.audit_key_file", path, 0, env, diags);
        (!file.is_empty()).then(|| base.join(file))
    });
    let read_requires_token = match &auth.read {
        None => false,
        Some(r) => match r.value.as_str() {
            "open" => false,
            "token" => true,
            other => {
                diags.push(
                    path,
                    yaml::pos(r, 0),
                    format!("auth.read: `{other}` is not open or token"),
                );
                false
            }
        },
    };
    if read_requires_token && tokens_file.is_none() {
        diags.push(
            path,
            yaml::pos(auth.read.as_ref().expect("read is set"), 0),
            "auth.read: token needs auth.tokens_file: no token could ever be accepted",
        );
    }
    AuthConfig {
        tokens_file,
        read_requires_token,
        audit_key_file,
    }
}

/// Label names invariantd's metrics set themselves, or Prometheus gives meaning to.
const RESERVED_LABELS: [&str; 14] = [
    "rule", "severity", "outcome", "dataset", "source", "receiver", "kind", "status", "unit",
    "version", "le", "quantile", "job", "instance",
];

pub(super) fn check_metrics(
    metrics: Option<&RawMetrics>,
    path: &Path,
    diags: &mut Diagnostics,
) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in metrics
        .map(|m| m.rule_labels.as_slice())
        .unwrap_or_default()
    {
        let at = yaml::pos(name, 0);
        let n = name.value.as_str();
        if !crate::notification::valid_label_name(n) {
            diags.push(
                path,
                at,
                format!("metrics.rule_labels: `{n}` is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"),
            );
        } else if RESERVED_LABELS.contains(&n) {
            diags.push(
                path,
                at,
                format!(
                    "metrics.rule_labels: `{n}` is a label invariantd or Prometheus sets itself"
                ),
            );
        } else if names.iter().any(|x| x == n) {
            diags.push(
                path,
                at,
                format!("metrics.rule_labels: `{n}` is listed twice"),
            );
        } else {
            names.push(n.to_string());
        }
    }
    names
}

/// A lease longer than an hour leaves work undone for an hour after a replica dies.
const MAX_LEASE: yaml::Bound = (Duration::from_secs(3600), "1h");

/// `cluster.lease` and `cluster.renew`: the renewal at most half the lease, so that one
/// renewal that fails (a slow store) does not lose every lease.
pub(super) fn check_cluster(
    cluster: Option<&RawCluster>,
    path: &Path,
    diags: &mut Diagnostics,
) -> ClusterConfig {
    let Some(c) = cluster else {
        return ClusterConfig::default();
    };
    let lease = duration_field(
        c.lease.as_ref(),
        DEFAULT_LEASE,
        MAX_LEASE,
        "cluster.lease",
        path,
        diags,
    );
    let renew = duration_field(
        c.renew.as_ref(),
        DEFAULT_RENEW.min(lease / 3),
        MAX_LEASE,
        "cluster.renew",
        path,
        diags,
    );
    if renew * 2 > lease {
        let at = c.renew.as_ref().or(c.lease.as_ref());
        diags.push(
            path,
            at.map_or_else(Default::default, |s| yaml::pos(s, 0)),
            format!(
                "cluster.renew ({}) must be at most half of cluster.lease ({}): a replica renews its leases several times before they expire",
                humantime::format_duration(renew),
                humantime::format_duration(lease)
            ),
        );
        return ClusterConfig::default();
    }
    if lease < Duration::from_secs(1) {
        diags.push(
            path,
            c.lease
                .as_ref()
                .map_or_else(Default::default, |s| yaml::pos(s, 0)),
            "cluster.lease must be at least 1s",
        );
        return ClusterConfig::default();
    }
    ClusterConfig { lease, renew }
}
