//! The client address (SPEC §3): the TCP peer, unless the peer is a trusted
//! proxy, in which case the right-most `X-Forwarded-For` entry that is not
//! itself a trusted proxy. Entries left of that are client-supplied and
//! could be anything.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// The address failed-attempt limits and logs use for this request.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    // Every X-Forwarded-For field in order, each a comma-separated list,
    // split on the raw bytes (SPEC §9): a field with one unreadable entry
    // must not hide the readable ones to its right, which proxies we trust
    // appended.
    let entries: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.as_bytes().split(|&c| c == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    for entry in entries.iter().rev() {
        match std::str::from_utf8(entry)
            .ok()
            .and_then(|text| text.parse::<IpAddr>().ok())
        {
            Some(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // Garbage from further left: stop at the last hop we could read.
            None => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append("x-forwarded-for", value.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            client_address(ip("203.0.113.9"), &headers(&["1.2.3.4"]), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(ip("10.1.1.1"), &headers(&["1.2.3.4"]), &[]),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn rightmost_untrusted_entry_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let map = headers(&["6.6.6.6, 198.51.100.2", "10.0.0.5"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &map, &trusted),
            ip("198.51.100.2")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &headers(&["junk, 10.0.0.7"]), &trusted),
            ip("10.0.0.7")
        );
    }

    #[test]
    fn an_unreadable_entry_does_not_hide_the_readable_ones() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut map = HeaderMap::new();
        map.append(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xff\xfe, 203.0.113.5").unwrap(),
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &map, &trusted),
            ip("203.0.113.5")
        );
    }
}
