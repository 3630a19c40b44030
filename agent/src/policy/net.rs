//! Network declarations: hosts (names, `.suffix` domains, addresses, CIDR
//! ranges, `localhost`), optional ports, and listen addresses.

use std::net::IpAddr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostError {
    #[error("host {0:?} is not a host name, .domain, address or CIDR range")]
    BadHost(String),
    #[error("port in {0:?} is not a number from 1 to 65535 (or *)")]
    BadPort(String),
    #[error("{0:?} is not ADDRESS:PORT (e.g. 127.0.0.1:8080, [::1]:*, *:3000)")]
    BadListen(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// `*`
    Any,
    /// `localhost`: every loopback address.
    Localhost,
    Name(String),
    /// `.example.com`: example.com and every name below it.
    Suffix(String),
    Cidr(IpAddr, u8),
}

impl Host {
    /// Whether every peer `other` stands for is one this stands for too. Exact
    /// for names, domains and ranges; a name is never inside an address range
    /// (what it resolves to is not known before the connection). For load-time
    /// warnings.
    pub fn covers(&self, other: &Host) -> bool {
        match (self, other) {
            (Host::Any, _) => true,
            (_, Host::Any) => false,
            (a, b) if a == b => true,
            (Host::Suffix(s), Host::Name(n) | Host::Suffix(n)) => n.ends_with(&format!(".{s}")) || n == s,
            (Host::Localhost, Host::Cidr(a, bits)) => {
                is_loopback(a) && *bits >= if normalise(a).is_ipv4() { 8 } else { 128 }
            }
            (Host::Cidr(net, nb), Host::Cidr(a, ab)) => {
                let (net, a) = (normalise(net), normalise(a));
                net.is_ipv4() == a.is_ipv4() && ab >= nb && in_cidr(&a, &net, *nb)
            }
            _ => false,
        }
    }
}

/// A host with an optional port (`None`: the manifest's `allow_port`, or any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pub host: Host,
    pub port: Option<u16>,
}

fn parse_port(s: &str, whole: &str) -> Result<Option<u16>, HostError> {
    if s == "*" {
        return Ok(None);
    }
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(Some(p)),
        _ => Err(HostError::BadPort(whole.to_owned())),
    }
}

fn parse_host(h: &str, whole: &str) -> Result<Host, HostError> {
    let bad = || HostError::BadHost(whole.to_owned());
    if h == "*" {
        return Ok(Host::Any);
    }
    if h.eq_ignore_ascii_case("localhost") {
        return Ok(Host::Localhost);
    }
    if let Some((a, bits)) = h.split_once('/') {
        let a: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if a.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits.parse().ok().filter(|b| *b <= max).ok_or_else(bad)?;
        return Ok(Host::Cidr(a, bits));
    }
    if let Ok(a) = h.parse::<IpAddr>() {
        let bits = if a.is_ipv4() { 32 } else { 128 };
        return Ok(Host::Cidr(a, bits));
    }
    let name = h.to_ascii_lowercase();
    let body = name.strip_prefix('.').unwrap_or(&name);
    let valid = !body.is_empty()
        && body
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    if !valid {
        return Err(bad());
    }
    Ok(if name.starts_with('.') {
        Host::Suffix(body.to_owned())
    } else {
        Host::Name(name)
    })
}

/// Splits `host:port`, `[v6]:port`; a bare IPv6 address has no port.
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[')
        && let Some((h, p)) = rest.split_once(']')
    {
        return (h, p.strip_prefix(':'));
    }
    if s.matches(':').count() == 1 {
        let (h, p) = s.split_once(':').expect("one colon");
        return (h, Some(p));
    }
    (s, None)
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<Self, HostError> {
        let (h, p) = split_host_port(s.trim());
        let port = match p {
            Some(p) => parse_port(p, s)?,
            None => None,
        };
        Ok(Self {
            host: parse_host(h, s)?,
            port,
        })
    }

    /// Whether a peer (its address, and the name DNS gave it when known) is this host.
    pub fn matches_host(&self, addr: Option<&IpAddr>, hostname: Option<&str>) -> bool {
        match &self.host {
            Host::Any => true,
            Host::Localhost => addr.is_some_and(is_loopback) || hostname.is_some_and(|h| h == "localhost"),
            Host::Name(n) => hostname.is_some_and(|h| h.trim_end_matches('.').eq_ignore_ascii_case(n)),
            Host::Suffix(s) => hostname.is_some_and(|h| {
                let h = h.trim_end_matches('.').to_ascii_lowercase();
                h == *s || h.ends_with(&format!(".{s}"))
            }),
            Host::Cidr(net, bits) => addr.is_some_and(|a| in_cidr(&normalise(a), &normalise(net), *bits)),
        }
    }
}

/// Whether an address is loopback (IPv4-mapped included).
pub fn is_loopback(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_loopback(),
        IpAddr::V6(v) => v.is_loopback() || v.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
pub fn normalise(a: &IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v) => v.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(*a),
        _ => *a,
    }
}

fn in_cidr(a: &IpAddr, net: &IpAddr, bits: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits as u32) };
            u32::from(*a) & mask == u32::from(*n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits as u32) };
            u128::from(*a) & mask == u128::from(*n) & mask
        }
        _ => false,
    }
}

/// A declared listen address: `127.0.0.1:8080`, `[::1]:*`, `*:3000`, `localhost:3000`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    pub host: Host,
    pub port: Option<u16>,
}

impl ListenSpec {
    pub fn parse(s: &str) -> Result<Self, HostError> {
        let (h, p) = split_host_port(s.trim());
        let p = p.ok_or_else(|| HostError::BadListen(s.to_owned()))?;
        let host = match h {
            "" | "*" => Host::Any,
            h => parse_host(h, s)?,
        };
        Ok(Self {
            host,
            port: parse_port(p, s)?,
        })
    }

    pub fn matches(&self, addr: Option<&IpAddr>, port: u16) -> bool {
        let port_ok = self.port.is_none_or(|p| p == port);
        let host_ok = match &self.host {
            Host::Any => true,
            // 0.0.0.0 / :: bind every address: only `*` (or that literal) declares it.
            h => addr.is_some_and(|a| {
                HostPattern {
                    host: h.clone(),
                    port: None,
                }
                .matches_host(Some(a), None)
            }),
        };
        port_ok && host_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn hosts_and_suffixes() {
        let gh = HostPattern::parse(".github.com").unwrap();
        assert!(gh.matches_host(None, Some("github.com")));
        assert!(gh.matches_host(None, Some("api.GitHub.com.")));
        assert!(!gh.matches_host(None, Some("evilgithub.com")));
        assert!(!gh.matches_host(Some(&ip("140.82.112.3")), None));
        let exact = HostPattern::parse("pypi.org").unwrap();
        assert!(exact.matches_host(None, Some("pypi.org")));
        assert!(!exact.matches_host(None, Some("files.pypi.org")));
        let lo = HostPattern::parse("localhost:5432").unwrap();
        assert_eq!(lo.port, Some(5432));
        assert!(lo.matches_host(Some(&ip("127.0.0.2")), None));
        assert!(lo.matches_host(Some(&ip("::ffff:127.0.0.1")), None));
        assert!(!lo.matches_host(Some(&ip("10.0.0.1")), None));
        let net = HostPattern::parse("10.0.0.0/8").unwrap();
        assert!(net.matches_host(Some(&ip("10.2.3.4")), None));
        assert!(!net.matches_host(Some(&ip("11.2.3.4")), None));
        let v6 = HostPattern::parse("[::1]:8080").unwrap();
        assert_eq!(v6.port, Some(8080));
        assert!(v6.matches_host(Some(&ip("::1")), None));
        assert_eq!(HostPattern::parse("::1").unwrap().port, None);
    }

    #[test]
    fn coverage() {
        let h = |s: &str| HostPattern::parse(s).unwrap().host;
        assert!(h("*").covers(&h("example.com")));
        assert!(h(".github.com").covers(&h("api.github.com")));
        assert!(h(".github.com").covers(&h("github.com")));
        assert!(h(".github.com").covers(&h(".api.github.com")));
        assert!(!h(".github.com").covers(&h("evilgithub.com")));
        assert!(!h("api.github.com").covers(&h(".github.com")));
        assert!(h("10.0.0.0/8").covers(&h("10.1.0.0/16")));
        assert!(h("10.0.0.0/8").covers(&h("10.1.2.3")));
        assert!(!h("10.1.0.0/16").covers(&h("10.0.0.0/8")));
        assert!(h("localhost").covers(&h("127.0.0.1")));
        assert!(h("localhost").covers(&h("::1")));
        assert!(!h("localhost").covers(&h("10.0.0.1")));
        assert!(!h("10.0.0.0/8").covers(&h("internal.example")));
        assert!(!h("example.com").covers(&h("*")));
    }

    #[test]
    fn bad_hosts() {
        assert!(HostPattern::parse("bad host").is_err());
        assert!(HostPattern::parse("a..b").is_err());
        assert!(matches!(HostPattern::parse("x.com:99999"), Err(HostError::BadPort(_))));
        assert!(HostPattern::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn listen_specs() {
        let l = ListenSpec::parse("127.0.0.1:8080").unwrap();
        assert!(l.matches(Some(&ip("127.0.0.1")), 8080));
        assert!(!l.matches(Some(&ip("0.0.0.0")), 8080));
        assert!(!l.matches(Some(&ip("127.0.0.1")), 8081));
        assert!(ListenSpec::parse("*:3000").unwrap().matches(Some(&ip("0.0.0.0")), 3000));
        assert!(ListenSpec::parse("localhost:*").unwrap().matches(Some(&ip("::1")), 1));
        assert!(ListenSpec::parse("127.0.0.1").is_err());
    }
}
