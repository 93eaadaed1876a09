//! Who is on the other end of a request, for rate limits.
//!
//! The client is the socket's peer (axum's `ConnectInfo`, which
//! `app::serve` provides). Behind a reverse proxy every request would seem
//! to come from the proxy, so an operator may name the proxies
//! (`KLAXON_TRUSTED_PROXY`): for a request from one of them, the client is
//! the last address in `X-Forwarded-For` that is not itself a trusted
//! proxy. Headers from anyone else are ignored: a client cannot pick its
//! own address to escape a limit.

use std::net::IpAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::app::AppState;

/// An address or a CIDR range (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    addr: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// `addr` or `addr/prefix`.
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(bits);
        (prefix <= bits).then_some(IpRange { addr, prefix })
    }

    /// Whether `ip` is in the range (IPv4-mapped IPv6 addresses count as
    /// IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), self.prefix, 32)
                    == masked(u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128)
                    == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `bits`-wide address.
fn masked(value: u128, prefix: u8, bits: u8) -> u128 {
    let drop = u32::from(bits - prefix);
    value.checked_shr(drop).unwrap_or(0)
}

/// The client's address, when known (a request handed to the router
/// in-process has no peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    /// The key its rate-limit buckets are kept under: the address, an
    /// IPv6 client by its /64 (one subscriber's whole network, which a
    /// single host can draw addresses from at will).
    pub fn limit_key(&self) -> String {
        match self.0.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(ip)) => ip.to_string(),
            Some(IpAddr::V6(ip)) => {
                let s = ip.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            None => "unknown".to_owned(),
        }
    }
}

/// The client behind a request from `peer` with these `X-Forwarded-For`
/// values (in header order).
pub fn client_address(peer: IpAddr, forwarded: &[&str], trusted: &[IpRange]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|r| r.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    // Read from the nearest hop back: each trusted proxy appended the
    // address it saw; the first one that is not a trusted proxy is the
    // client. Anything further left was written by the client itself.
    let hops = forwarded
        .iter()
        .rev()
        .flat_map(|v| v.rsplit(','))
        .map(str::trim);
    let mut client = peer;
    for hop in hops {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            // Garbage from a proxy: stop at the last address believed.
            Err(_) => break,
        }
    }
    client
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(ConnectInfo(crate::app::Peer(peer))) =
            parts.extensions.get::<ConnectInfo<crate::app::Peer>>()
        else {
            return Ok(ClientIp(None));
        };
        let trusted = &state.config.trusted_proxies;
        if trusted.is_empty() {
            return Ok(ClientIp(Some(peer.ip())));
        }
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        Ok(ClientIp(Some(client_address(
            peer.ip(),
            &forwarded,
            trusted,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn ranges() {
        let r = IpRange::parse("10.0.0.0/8").expect("parses");
        assert!(r.contains(ip("10.1.2.3")));
        assert!(r.contains(ip("::ffff:10.1.2.3")));
        assert!(!r.contains(ip("11.0.0.1")));
        assert!(!r.contains(ip("::1")));
        let one = IpRange::parse("127.0.0.1").expect("parses");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = IpRange::parse("fd00::/8").expect("parses");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(IpRange::parse("0.0.0.0/0")
            .expect("parses")
            .contains(ip("8.8.8.8")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "host",
            "10.0.0.0/x",
            "1.2.3.4/",
        ] {
            assert_eq!(IpRange::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxies = [IpRange::parse("10.0.0.0/8").expect("parses")];
        // Not a proxy: its header is ignored.
        assert_eq!(
            client_address(ip("203.0.113.9"), &["1.2.3.4"], &proxies),
            ip("203.0.113.9")
        );
        // A proxy: the last untrusted hop, not what the client wrote first.
        assert_eq!(
            client_address(
                ip("10.0.0.2"),
                &["6.6.6.6, 198.51.100.7, 10.0.0.3"],
                &proxies
            ),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &["6.6.6.6", "198.51.100.7"], &proxies),
            ip("198.51.100.7")
        );
        // No header, or garbage: the proxy itself.
        assert_eq!(
            client_address(ip("10.0.0.2"), &[], &proxies),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_address(ip("10.0.0.2"), &["nonsense"], &proxies),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let a = ClientIp(Some(ip("2001:db8:1:2::1"))).limit_key();
        let b = ClientIp(Some(ip("2001:db8:1:2:ffff::9"))).limit_key();
        assert_eq!(a, b);
        assert_ne!(a, ClientIp(Some(ip("2001:db8:1:3::1"))).limit_key());
        assert_eq!(ClientIp(Some(ip("::ffff:1.2.3.4"))).limit_key(), "1.2.3.4");
    }
}
