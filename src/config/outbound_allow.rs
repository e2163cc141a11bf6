//! `outbound.allow`: the hosts and networks that receivers and repair actions may reach
//! although they are loopback, private, link-local or metadata addresses (which are refused
//! otherwise; the `outbound` module decides). Entries are an address (`127.0.0.1`), a network
//! (`10.0.0.0/8`), a host name (`alertmanager.internal`) or every name under a domain
//! (`*.svc.cluster.local`).

use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diag::Diagnostics;
use crate::yaml;

#[derive(Debug, Deserialize)]
pub(super) struct RawOutbound {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
}

/// One entry of `outbound.allow`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// An address (a network of one) or a network: allowed whatever name led to it.
    Network(ipnet::IpNet),
    /// A host name, lower case without a trailing dot: whatever it resolves to is allowed.
    Host(String),
    /// `*.example.internal`, kept as `.example.internal`: every name below that domain.
    Domain(String),
}

impl Allowed {
    /// Whether a request to `host` (as written in the URL) connecting to `ip` is allowed.
    pub fn covers(&self, host: &str, ip: std::net::IpAddr) -> bool {
        let host = host.trim_end_matches('.');
        match self {
            Allowed::Network(net) => net.contains(&ip),
            Allowed::Host(name) => host.eq_ignore_ascii_case(name),
            Allowed::Domain(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

impl std::fmt::Display for Allowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Allowed::Network(net) if net.prefix_len() == net.max_prefix_len() => {
                write!(f, "{}", net.addr())
            }
            Allowed::Network(net) => write!(f, "{net}"),
            Allowed::Host(name) => f.write_str(name),
            Allowed::Domain(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// A DNS name as an allow entry may give it: labels of letters, digits and hyphens.
fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Parses one entry; the error says what the entry may be.
pub fn parse_allowed(text: &str) -> Result<Allowed, String> {
    let t = text.trim();
    if t.contains("://") {
        return Err(format!("`{t}` is a URL: list its host or address alone"));
    }
    if t.contains('/') {
        return t
            .parse::<ipnet::IpNet>()
            .map(|n| Allowed::Network(n.trunc()))
            .map_err(|_| format!("`{t}` is not a network (like 10.0.0.0/8 or fd00::/8)"));
    }
    if let Ok(ip) = t
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
    {
        return Ok(Allowed::Network(ipnet::IpNet::from(ip)));
    }
    let name = t.trim_end_matches('.').to_ascii_lowercase();
    if let Some(domain) = name.strip_prefix("*.") {
        return if valid_host_name(domain) {
            Ok(Allowed::Domain(format!(".{domain}")))
        } else {
            Err(format!("`{t}` is not a domain (like *.svc.cluster.local)"))
        };
    }
    if valid_host_name(&name) {
        Ok(Allowed::Host(name))
    } else {
        Err(format!(
            "`{t}` is not an address, a network or a host name (like 127.0.0.1, 10.0.0.0/8, hooks.internal or *.internal)"
        ))
    }
}

pub(super) fn check_outbound(
    raw: Option<&RawOutbound>,
    path: &Path,
    diags: &mut Diagnostics,
) -> Vec<Allowed> {
    let mut allow: Vec<Allowed> = Vec::new();
    for entry in raw.map(|o| o.allow.as_slice()).unwrap_or_default() {
        match parse_allowed(&entry.value) {
            Ok(a) if allow.contains(&a) => diags.push(
                path,
                yaml::pos(entry, 0),
                format!("outbound.allow: `{}` is listed twice", entry.value.trim()),
            ),
            Ok(a) => allow.push(a),
            Err(e) => diags.push(path, yaml::pos(entry, 0), format!("outbound.allow: {e}")),
        }
    }
    allow
}

#[cfg(test)]
mod tests {
    use super::{Allowed, parse_allowed};

    #[test]
    fn entries_are_addresses_networks_names_and_domains() {
        let ip = |s: &str| s.parse().unwrap();
        let a = parse_allowed("127.0.0.1").unwrap();
        assert!(a.covers("localhost", ip("127.0.0.1")));
        assert!(!a.covers("localhost", ip("127.0.0.2")));
        assert_eq!(a.to_string(), "127.0.0.1");
        let n = parse_allowed("10.1.2.3/8").unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.covers("x", ip("10.200.0.1")));
        assert!(parse_allowed("[::1]").unwrap().covers("x", ip("::1")));
        let h = parse_allowed("Hooks.Internal.").unwrap();
        assert_eq!(h, Allowed::Host("hooks.internal".into()));
        assert!(h.covers("HOOKS.internal.", ip("10.0.0.1")));
        assert!(!h.covers("evil-hooks.internal", ip("10.0.0.1")));
        let d = parse_allowed("*.svc.cluster.local").unwrap();
        assert!(d.covers("am.monitoring.svc.cluster.local", ip("10.0.0.1")));
        assert!(!d.covers("svc.cluster.local", ip("10.0.0.1")));
        assert!(!d.covers("evilsvc.cluster.local", ip("10.0.0.1")));
        for bad in ["10.0.0.0/33", "*", "a b", "http://x", "-x.internal", ""] {
            assert!(parse_allowed(bad).is_err(), "{bad}");
        }
    }
}
