//! Where receivers and repair actions may send. An address that is loopback, private,
//! link-local, shared (carrier-grade NAT), a cloud metadata service or otherwise not a public
//! unicast address is refused unless `outbound.allow` lists it, its network or the host name
//! that led to it. The decision (`refusal`) is a pure function; HTTP clients apply it after DNS
//! resolution, to the very addresses they connect to (`Guard`), and to literal addresses in a
//! URL before a request starts; SMTP and NATS check their server's addresses before connecting.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Allowed;

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

/// A request refused by `outbound.allow`: not worth retrying until the config changes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Resolves host names for reqwest and keeps only the addresses the policy allows, so the
/// connection goes to an address that was checked (a second lookup cannot rebind it).
struct Guard {
    allow: Arc<[Allowed]>,
}

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let kept = permitted(&host, 0, &allow).await?;
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The addresses `host` resolves to that the policy allows; an error when none is.
async fn permitted(
    host: &str,
    port: u16,
    allow: &[Allowed],
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    let mut kept = Vec::new();
    let mut refused = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match refusal(host, addr.ip(), allow) {
            None => kept.push(addr),
            Some(why) => refused = refused.or(Some(why)),
        }
    }
    match (kept.is_empty(), refused) {
        (false, _) => Ok(kept),
        (true, Some(why)) => Err(Box::new(Refused(why))),
        (true, None) => Err(format!("{host} resolves to no address").into()),
    }
}

/// Checks a server's host before a client that resolves names itself (SMTP, NATS) connects:
/// every address it resolves to must be allowed.
pub async fn check_server(host: &str, port: u16, allow: &[Allowed]) -> Result<(), Refused> {
    let host = host.trim_matches(['[', ']']);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return refusal(host, ip, allow).map_or(Ok(()), |w| Err(Refused(w)));
    }
    // A name that does not resolve is the client's own error to report.
    let Ok(addrs) = tokio::net::lookup_host((host, port)).await else {
        return Ok(());
    };
    for addr in addrs {
        if let Some(why) = refusal(host, addr.ip(), allow) {
            return Err(Refused(why));
        }
    }
    Ok(())
}

/// Whether a reqwest error is, at its root, a refusal of the policy.
pub fn refused_in(e: &reqwest::Error) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return Some(r.0.clone());
        }
        source = s.source();
    }
    None
}

/// An HTTP client that goes only where the policy allows, follows no redirect (an answer must
/// not send a request elsewhere) and uses no proxy from the environment (a proxy would reach
/// addresses the policy never sees).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    allow: Arc<[Allowed]>,
}

impl Client {
    /// `timeout` bounds a whole request; `connect` its connection.
    pub fn new(allow: &[Allowed], timeout: Duration, connect: Duration) -> Result<Client, String> {
        let allow: Arc<[Allowed]> = allow.into();
        let http = reqwest::Client::builder()
            .user_agent(concat!("invariantd/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(connect)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Guard {
                allow: allow.clone(),
            })
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Client { http, allow })
    }

    /// A request to `url`, refused at once when its host is a literal address the policy does
    /// not allow (names are checked when they are resolved).
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, Refused> {
        if let Ok(parsed) = reqwest::Url::parse(url) {
            let ip = match parsed.host() {
                Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            };
            if let Some(ip) = ip
                && let Some(why) = refusal(parsed.host_str().unwrap_or_default(), ip, &self.allow)
            {
                return Err(Refused(why));
            }
        }
        Ok(self.http.request(method, url))
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::{Class, class, refusal};
    use crate::config::parse_allowed;

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
            let allow = [crate::config::Allowed::Network(net)];
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
