//! Where a webhook may be delivered (SPEC §12, server-side request
//! forgery): `https://` or `http://` URLs only, and unless
//! `--allow-private-webhooks` never to a loopback, private, link-local
//! (cloud metadata lives there), shared, multicast or unspecified address.
//!
//! The check runs where the connection is made, not only when an endpoint
//! is registered: [`VettedResolver`] is the delivery client's resolver, so
//! a name that resolves to a public address at registration and to
//! 169.254.169.254 at delivery (DNS rebinding) is refused, and
//! [`check_url`] refuses an address literal, which the connector never
//! resolves. Both use [`is_forbidden`].

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use cloro_auth_core::wire::MAX_WEBHOOK_URL_LEN;
use http::Uri;
use hyper_util::client::legacy::connect::dns::Name;

/// How long a name may take to resolve.
pub(crate) const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a URL is not a place webhooks may go; the text says what to change
/// and never quotes the URL (it may carry a token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TargetError {
    /// Not an absolute `http://` or `https://` URL with a host.
    NotHttp,
    /// Longer than [`MAX_WEBHOOK_URL_LEN`].
    TooLong,
    /// Holds `user:password@`.
    Credentials,
    /// A private address, and private targets are not allowed.
    Private,
}

impl TargetError {
    pub(crate) fn message(self) -> &'static str {
        match self {
            TargetError::NotHttp => "url must be an absolute https:// (or http://) URL with a host",
            TargetError::TooLong => "url is longer than 2048 bytes",
            TargetError::Credentials => {
                "url must not carry user:password@; put a token in the path or query instead"
            }
            TargetError::Private => {
                "url points to a loopback, private, link-local or metadata address; webhooks go to public addresses unless the server runs with --allow-private-webhooks"
            }
        }
    }
}

/// Whether no webhook may go to `ip` unless private targets are allowed.
pub(crate) fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => forbidden_v4(v4),
            None => forbidden_v6(v6),
        },
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        // 0.0.0.0/8 ("this network"), 100.64.0.0/10 (shared address space,
        // where some clouds put metadata), 192.0.0.0/24 (protocol
        // assignments), 240.0.0.0/4 (reserved).
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || a >= 240
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7 unique local (AWS metadata is fd00:ec2::254),
        // fe80::/10 link-local.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        // ::/96 and 64:ff9b::/96 (NAT64) embed an IPv4 address that may
        // be private.
        || ip.to_ipv4().is_some_and(forbidden_v4)
        || nat64_embedded(ip).is_some_and(forbidden_v4)
}

/// The IPv4 address in a NAT64 address (64:ff9b::/96, RFC 6052).
fn nat64_embedded(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let octets = ip.octets();
    (octets[..12] == [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0])
        .then(|| Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]))
}

/// Checks an endpoint URL's shape, and its host if that is an address.
///
/// # Errors
/// What is wrong with it.
pub(crate) fn check_url(text: &str, allow_private: bool) -> Result<Uri, TargetError> {
    if text.len() > MAX_WEBHOOK_URL_LEN {
        return Err(TargetError::TooLong);
    }
    let uri: Uri = text.parse().map_err(|_| TargetError::NotHttp)?;
    if !matches!(uri.scheme_str(), Some("https" | "http")) {
        return Err(TargetError::NotHttp);
    }
    let Some(authority) = uri.authority() else {
        return Err(TargetError::NotHttp);
    };
    if authority.as_str().contains('@') {
        return Err(TargetError::Credentials);
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(TargetError::NotHttp);
    }
    if !allow_private && host.parse::<IpAddr>().is_ok_and(is_forbidden) {
        return Err(TargetError::Private);
    }
    Ok(uri)
}

/// The delivery client's resolver: the system's, with forbidden addresses
/// dropped (all of them forbidden: the connection fails, naming why).
#[derive(Clone, Debug)]
pub(crate) struct VettedResolver {
    pub(crate) allow_private: bool,
}

type Resolving = Pin<Box<dyn Future<Output = io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower_service::Service<Name> for VettedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found =
                tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name.as_str(), 0)))
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "the host did not resolve in time")
                    })??;
            let allowed: Vec<SocketAddr> = found
                .filter(|addr| allow_private || !is_forbidden(addr.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    TargetError::Private.message(),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.0.170",
            "240.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "2606:4700::1111",
            "192.0.2.1",
        ] {
            assert!(!is_forbidden(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_http_with_a_host_and_no_credentials() {
        assert!(check_url("https://hooks.example.com/in?t=1", false).is_ok());
        assert!(check_url("http://hooks.example.com:8080/in", false).is_ok());
        for (url, error) in [
            ("ftp://hooks.example.com/", TargetError::NotHttp),
            ("hooks.example.com/in", TargetError::NotHttp),
            ("/in", TargetError::NotHttp),
            ("https://", TargetError::NotHttp),
            ("not a url", TargetError::NotHttp),
            (
                "https://user:pw@hooks.example.com/",
                TargetError::Credentials,
            ),
            ("http://127.0.0.1:9000/", TargetError::Private),
            ("http://[::1]:9000/", TargetError::Private),
            (
                "http://169.254.169.254/latest/meta-data/",
                TargetError::Private,
            ),
            ("http://[::ffff:10.0.0.1]/", TargetError::Private),
        ] {
            assert_eq!(check_url(url, false).err(), Some(error), "{url}");
        }
        assert!(check_url("http://127.0.0.1:9000/", true).is_ok());
        let long = format!("https://hooks.example.com/{}", "a".repeat(2048));
        assert_eq!(check_url(&long, false).err(), Some(TargetError::TooLong));
        // No message quotes the URL.
        assert!(!TargetError::Credentials.message().contains("pw"));
    }

    #[tokio::test]
    async fn the_resolver_drops_forbidden_addresses() {
        use tower_service::Service as _;
        let name: Name = "localhost".parse().unwrap();
        let refused = VettedResolver {
            allow_private: false,
        }
        .call(name.clone())
        .await;
        assert_eq!(
            refused.err().map(|e| e.kind()),
            Some(io::ErrorKind::PermissionDenied)
        );
        let allowed = VettedResolver {
            allow_private: true,
        }
        .call(name)
        .await
        .unwrap();
        assert!(allowed.into_iter().all(|addr| addr.ip().is_loopback()));
    }
}
