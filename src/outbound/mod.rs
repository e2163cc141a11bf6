//! Where receivers and repair actions may send: `allow` reads `outbound.allow`, and its `refusal` decides (an address that is
//! loopback, private, link-local, shared, a cloud metadata service or otherwise not public is
//! refused unless `outbound.allow` lists it, its network or the host name that led to it); this
//! module applies it. HTTP clients apply it after DNS resolution, to the very addresses they
//! connect to (`Guard`), and to literal addresses in a URL before a request starts; SMTP and
//! NATS check their server's addresses before connecting.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

mod allow;

pub use allow::{Allowed, Class, class, literal_refusal, parse_allowed, refusal};
pub(crate) use allow::{RawOutbound, check_outbound};

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
            let kept = permitted(&host, &allow).await?;
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The addresses `host` resolves to that the policy allows; an error when none is.
async fn permitted(
    host: &str,
    allow: &[Allowed],
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    let mut kept = Vec::new();
    let mut refused = None;
    for addr in tokio::net::lookup_host((host, 0)).await? {
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
pub async fn check_server(host: &str, allow: &[Allowed]) -> Result<(), Refused> {
    let host = host.trim_matches(['[', ']']);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return refusal(host, ip, allow).map_or(Ok(()), |w| Err(Refused(w)));
    }
    // A name that does not resolve is the client's own error to report.
    let Ok(addrs) = tokio::net::lookup_host((host, 0)).await else {
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
        if let Some(why) = literal_refusal(url, &self.allow) {
            return Err(Refused(why));
        }
        Ok(self.http.request(method, url))
    }
}
