//! `outbound.allow`: the hosts and networks that receivers and repair actions may reach
//! although they are loopback, private, link-local or metadata addresses (which are refused
//! otherwise). Entries are an address (`127.0.0.1`), a network
//! (`10.0.0.0/8`), a host name (`alertmanager.internal`) or every name under a domain
//! (`*.svc.cluster.local`). `refusal` is the decision for one address, which the `outbound`
//! module applies to every connection and `alerting` warns of at load for literal addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diag::Diagnostics;
use crate::yaml;

#[derive(Debug, Deserialize)]
pub(crate) struct RawOutbound {
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

pub(crate) fn check_outbound(
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

/// Why an address is not a public one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Loopback,
    Private,
    LinkLocal,
    Metadata,
    Shared,
    Unspecified,
    Multicast,
    Reserved,
}

impl Class {
    fn describe(self) -> &'static str {
        match self {
            Class::Loopback => "a loopback address",
            Class::Private => "a private address",
            Class::LinkLocal => "a link-local address",
            Class::Metadata => "a cloud metadata address",
            Class::Shared => "a shared (carrier-grade NAT) address",
            Class::Unspecified => "an unspecified address",
            Class::Multicast => "a multicast or broadcast address",
            Class::Reserved => "a reserved address",
        }
    }
}

/// The metadata services of the clouds (AWS, GCP, Azure, OpenStack, ECS, Alibaba).
const METADATA: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

fn class_v4(ip: Ipv4Addr) -> Option<Class> {
    let [a, b, c, _] = ip.octets();
    Some(if ip.is_loopback() {
        Class::Loopback
    } else if ip.is_private() {
        Class::Private
    } else if ip.is_link_local() {
        Class::LinkLocal
    } else if a == 100 && (64..128).contains(&b) {
        Class::Shared
    } else if a == 0 {
        Class::Unspecified
    } else if ip.is_multicast() || ip.is_broadcast() {
        Class::Multicast
    } else if a >= 240 || (a == 192 && b == 0 && c == 0) || (a == 198 && (b & 0xfe) == 18) {
        Class::Reserved
    } else {
        return None;
    })
}

/// The class of an address, or `None` for a public unicast one. IPv4 addresses inside IPv6
/// (mapped, compatible, NAT64) are judged as the IPv4 address they carry.
pub fn class(ip: IpAddr) -> Option<Class> {
    if METADATA.contains(&ip) {
        return Some(Class::Metadata);
    }
    let v6 = match ip {
        IpAddr::V4(v4) => return class_v4(v4),
        IpAddr::V6(v6) => v6,
    };
    let s = v6.segments();
    if let Some(v4) = v6.to_ipv4_mapped() {
        return class(IpAddr::V4(v4));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (s[..6] == [0; 6] && s[6] != 0) {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return class(IpAddr::V4(v4));
    }
    Some(if v6.is_loopback() {
        Class::Loopback
    } else if v6.is_unspecified() {
        Class::Unspecified
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
        Class::Private
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Class::LinkLocal
    } else if v6.is_multicast() {
        Class::Multicast
    } else if s[0] == 0x2001 && s[1] == 0xdb8 {
        Class::Reserved
    } else {
        return None;
    })
}

/// Why a request to `host` that would connect to `ip` is refused, or `None` when it may go.
pub fn refusal(host: &str, ip: IpAddr, allow: &[Allowed]) -> Option<String> {
    let class = class(ip)?;
    if allow.iter().any(|a| a.covers(host, ip)) {
        return None;
    }
    let what = if host.trim_matches(['[', ']']).parse::<IpAddr>() == Ok(ip) {
        format!("{ip} is {}", class.describe())
    } else {
        format!("{host} resolves to {ip}, {}", class.describe())
    };
    Some(format!(
        "refused: {what}, not in outbound.allow (list the host or network there to send to it)"
    ))
}

/// Why a request to `url` is refused before any name is resolved: its host is a literal
/// address the list does not allow. `None` for names (they are judged once resolved) and for
/// what is not a URL.
pub fn literal_refusal(url: &str, allow: &[Allowed]) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let ip = match parsed.host()? {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        // Schemes the URL standard does not know (nats://) keep an address as a name.
        url::Host::Domain(d) => d.parse().ok()?,
    };
    refusal(parsed.host_str().unwrap_or_default(), ip, allow)
}

#[cfg(test)]
mod tests {
    use super::{Allowed, parse_allowed};

    #[test]
    fn literal_addresses_are_judged_before_any_lookup() {
        use super::literal_refusal;
        assert!(literal_refusal("http://127.0.0.1:9/x", &[]).is_some());
        assert!(literal_refusal("nats://127.0.0.1:4222", &[]).is_some());
        assert!(literal_refusal("smtp://u@[::1]:25", &[]).is_some());
        // Other spellings of an address are addresses too.
        for spelled in [
            "http://0x7f.1/",
            "http://2130706433/",
            "http://127.1:9/",
            "http://[0:0:0:0:0:ffff:a9fe:a9fe]/",
        ] {
            assert!(literal_refusal(spelled, &[]).is_some(), "{spelled}");
        }
        assert!(literal_refusal("http://localhost:9/x", &[]).is_none());
        assert!(literal_refusal("https://8.8.8.8/", &[]).is_none());
        let allow = [parse_allowed("127.0.0.0/8").unwrap()];
        assert!(literal_refusal("nats://127.0.0.1:4222", &allow).is_none());
    }

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

    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::{Class, class, refusal};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_that_are_not_public_are_named() {
        for (a, c) in [
            ("127.0.0.1", Class::Loopback),
            ("127.9.9.9", Class::Loopback),
            ("::1", Class::Loopback),
            ("10.1.2.3", Class::Private),
            ("172.16.0.1", Class::Private),
            ("172.31.255.255", Class::Private),
            ("192.168.1.1", Class::Private),
            ("fd12::1", Class::Private),
            ("169.254.169.254", Class::Metadata),
            ("fd00:ec2::254", Class::Metadata),
            ("100.100.100.200", Class::Metadata),
            ("169.254.1.1", Class::LinkLocal),
            ("fe80::1", Class::LinkLocal),
            ("100.64.0.1", Class::Shared),
            ("0.0.0.0", Class::Unspecified),
            ("::", Class::Unspecified),
            ("255.255.255.255", Class::Multicast),
            ("224.0.0.1", Class::Multicast),
            ("ff02::1", Class::Multicast),
            ("::ffff:127.0.0.1", Class::Loopback),
            ("::ffff:169.254.169.254", Class::Metadata),
            ("64:ff9b::a00:1", Class::Private),
            ("::10.0.0.1", Class::Private),
            ("240.0.0.1", Class::Reserved),
        ] {
            assert_eq!(class(ip(a)), Some(c), "{a}");
        }
        for a in [
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "8.8.8.8",
        ] {
            assert_eq!(class(ip(a)), None, "{a}");
        }
    }

    #[test]
    fn a_refusal_says_what_the_address_is_and_what_to_do() {
        let why = refusal("metadata.internal", ip("169.254.169.254"), &[]).unwrap();
        assert_eq!(
            why,
            "refused: metadata.internal resolves to 169.254.169.254, a cloud metadata address, not in outbound.allow (list the host or network there to send to it)"
        );
        let why = refusal("127.0.0.1", ip("127.0.0.1"), &[]).unwrap();
        assert!(
            why.starts_with("refused: 127.0.0.1 is a loopback address"),
            "{why}"
        );
        let allow = [parse_allowed("localhost").unwrap()];
        assert_eq!(refusal("localhost", ip("127.0.0.1"), &allow), None);
        assert!(refusal("127.0.0.1", ip("127.0.0.1"), &allow).is_some());
    }

    proptest! {
        /// Public addresses always go; any other goes exactly when an entry covers it, and a
        /// network entry covers its addresses whatever the name.
        #[test]
        fn only_what_is_listed_gets_through(octets: [u8; 4], prefix in 8u8..=32, host in "[a-z]{1,8}\\.internal") {
            let addr = IpAddr::from(octets);
            let net = ipnet::IpNet::new(addr, prefix).unwrap().trunc();
            let allow = [Allowed::Network(net)];
            prop_assert_eq!(refusal(&host, addr, &allow), None);
            let refused = refusal(&host, addr, &[]);
            prop_assert_eq!(refused.is_some(), class(addr).is_some());
            let named = [parse_allowed(&host).unwrap()];
            prop_assert_eq!(refusal(&host, addr, &named), None);
            let other = [parse_allowed("other.internal").unwrap()];
            prop_assert_eq!(refusal(&host, addr, &other).is_some(), class(addr).is_some() && host != "other.internal");
        }
    }
}
