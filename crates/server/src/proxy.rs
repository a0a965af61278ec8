//! The client's address, behind reverse proxies we were told to trust.
//!
//! Behind a proxy every request comes from the proxy's address, so a brake
//! per address would brake everyone at once. `X-Forwarded-For` names the
//! client, but anyone can send it: it is read only when the peer is a
//! configured proxy, and then from the right, skipping further trusted
//! proxies, since only the entries our own proxies appended are true.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

#[derive(Debug, thiserror::Error)]
#[error("trusted_proxies: `{0}` is neither an IP address nor a CIDR block (like 10.0.0.0/8)")]
pub struct BadProxy(String);

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, BadProxy> {
        let nets = entries
            .iter()
            .map(|e| {
                let e = e.as_ref().trim();
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| BadProxy(e.to_owned()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nets })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The address a request comes from: the peer's, or, when the peer is
    /// a trusted proxy, the nearest untrusted hop `X-Forwarded-For` names.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            // A malformed entry ends the trustworthy part of the chain.
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = ip.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_peers() {
        let t = TrustedProxies::parse(&["10.0.0.0/8", "192.168.1.1"]).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let h = headers("6.6.6.6, 1.2.3.4, 10.0.0.7");
        assert_eq!(t.client(ip("10.0.0.2"), &h), ip("1.2.3.4"));
        assert_eq!(t.client(ip("192.168.1.1"), &h), ip("1.2.3.4"));
        assert_eq!(t.client(ip("5.5.5.5"), &h), ip("5.5.5.5"));
        assert_eq!(t.client(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
        assert_eq!(
            t.client(ip("10.0.0.2"), &headers("garbage, 10.0.0.9")),
            ip("10.0.0.9")
        );
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["proxy.local"]).is_err());
    }
}
