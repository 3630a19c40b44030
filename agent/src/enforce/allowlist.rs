//! A server's network grants compiled for the cgroup layer: the addresses,
//! CIDR ranges and ports it may connect to or send datagrams to, the local
//! addresses it may bind, and the host names whose resolved addresses join
//! the allowlist when the agent's resolver answers them. One model serves
//! the kernel (its map keys) and the judgement of audit mode (`allows`).

use std::net::{IpAddr, Ipv6Addr};

use agent_common::cgroup_net::{ALLOW_FIXED_BITS, AllowData, KIND_BIND, KIND_OUT};
use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use crate::policy::{
    activity::{NetActivity, NetOp, Proto},
    manifest::Outbound,
    net::{Host, HostPattern, ListenSpec},
};

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// An address range with a protocol (0: either) and a port (0: any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// IPv6; IPv4 as IPv4-mapped (`::ffff:0:0/96` and below).
    pub net: Ipv6Net,
    pub proto: u8,
    pub port: u16,
}

/// A declared host name (`api.github.com`) or domain (`.github.com`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRule {
    pub name: String,
    /// Every name below `name` too.
    pub suffix: bool,
    pub proto: u8,
    pub port: u16,
}

impl NameRule {
    pub fn matches(&self, name: &str) -> bool {
        let n = name.trim_end_matches('.').to_ascii_lowercase();
        n == self.name || (self.suffix && n.ends_with(&format!(".{}", self.name)))
    }
}

/// Serialized for the next agent, which takes over the server's cgroup
/// (`cgroup::CgroupRecord`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetAllow {
    /// `insecure_allow_all`: every destination.
    pub any_out: bool,
    pub out: Vec<Rule>,
    pub names: Vec<NameRule>,
    pub bind: Vec<Rule>,
}

/// `a` as IPv6, IPv4 mapped.
pub fn v6(a: &IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped(),
        IpAddr::V6(v) => *v,
    }
}

/// The IPv6 ranges a declared host stands for (none for a name).
fn ranges(h: &Host) -> Vec<Ipv6Net> {
    let net = |a: IpAddr, bits: u8| {
        let bits = if a.is_ipv4() { bits + 96 } else { bits };
        Ipv6Net::new(v6(&a), bits).expect("prefix checked at parse").trunc()
    };
    match h {
        Host::Any => vec![Ipv6Net::default()],
        Host::Localhost => vec![
            net(IpAddr::V4([127, 0, 0, 0].into()), 8),
            net(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
        ],
        Host::Cidr(a, bits) => vec![net(*a, *bits)],
        Host::Name(_) | Host::Suffix(_) => Vec::new(),
    }
}

fn proto_of(p: Proto) -> u8 {
    match p {
        Proto::Tcp => IPPROTO_TCP,
        Proto::Udp => IPPROTO_UDP,
        Proto::Other => 0,
    }
}

impl NetAllow {
    /// From the manifest's `network` (outbound) and `listen` sections, with
    /// `extra` names (host, port) the runtime needs (package registries).
    pub fn compile(ob: &Outbound, listen: &[ListenSpec], extra: &[(&str, u16)]) -> NetAllow {
        let mut a = NetAllow {
            any_out: ob.all,
            ..Default::default()
        };
        let protos: Vec<u8> = if ob.transports.is_empty() {
            vec![0]
        } else {
            ob.transports
                .iter()
                .filter_map(|t| match t.as_str() {
                    "tcp" => Some(IPPROTO_TCP),
                    "udp" => Some(IPPROTO_UDP),
                    _ => None,
                })
                .collect()
        };
        let extra = extra.iter().map(|(n, p)| HostPattern {
            host: Host::Name((*n).to_owned()),
            port: Some(*p),
        });
        for h in ob.hosts.iter().cloned().chain(extra) {
            let ports = match h.port {
                Some(p) => vec![p],
                None if ob.ports.is_empty() => vec![0],
                None => ob.ports.clone(),
            };
            for &proto in &protos {
                for &port in &ports {
                    for net in ranges(&h.host) {
                        a.out.push(Rule { net, proto, port });
                    }
                    if let Host::Name(n) | Host::Suffix(n) = &h.host {
                        a.names.push(NameRule {
                            name: n.clone(),
                            suffix: matches!(h.host, Host::Suffix(_)),
                            proto,
                            port,
                        });
                    }
                }
            }
        }
        for l in listen {
            for net in ranges(&l.host) {
                a.bind.push(Rule {
                    net,
                    proto: 0,
                    port: l.port.unwrap_or(0),
                });
            }
        }
        a
    }

    /// Whether the cgroup layer lets `n` through (`hostname`: what the
    /// resolver answered for its address, when it did).
    pub fn allows(&self, n: &NetActivity) -> bool {
        let Some(addr) = n.addr else {
            return true;
        };
        let a = v6(&addr);
        let proto = proto_of(n.proto);
        let hit = |rules: &[Rule]| {
            rules
                .iter()
                .any(|r| r.net.contains(&a) && (r.port == 0 || r.port == n.port) && (r.proto == 0 || r.proto == proto))
        };
        match n.op {
            // A DNS query goes to the agent's resolver, not where it was sent.
            NetOp::Connect | NetOp::SendTo if n.port == 53 && n.proto == Proto::Udp => true,
            NetOp::Connect | NetOp::SendTo => {
                self.any_out
                    || hit(&self.out)
                    || n.hostname.as_deref().is_some_and(|h| {
                        self.names.iter().any(|r| {
                            r.matches(h) && (r.port == 0 || r.port == n.port) && (r.proto == 0 || r.proto == proto)
                        })
                    })
            }
            NetOp::Bind => n.port == 0 || hit(&self.bind),
            NetOp::Listen | NetOp::Accept => true,
        }
    }

    /// The map keys of the static rules of the server in cgroup `cgroup`.
    pub fn keys(&self, cgroup: u64) -> Vec<(u32, AllowData)> {
        let out = self.out.iter().map(|r| key(cgroup, KIND_OUT, r));
        let bind = self.bind.iter().map(|r| key(cgroup, KIND_BIND, r));
        out.chain(bind).collect()
    }
}

/// One LPM key: (prefix length in bits, data).
pub fn key(cgroup: u64, kind: u8, r: &Rule) -> (u32, AllowData) {
    (
        ALLOW_FIXED_BITS + u32::from(r.net.prefix_len()),
        AllowData {
            cgroup: cgroup.to_ne_bytes(),
            kind,
            proto: r.proto,
            port: r.port.to_be_bytes(),
            addr: r.net.network().octets(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(op: NetOp, proto: Proto, addr: &str, port: u16, hostname: Option<&str>) -> NetActivity {
        NetActivity {
            op,
            proto,
            addr: Some(addr.parse().unwrap()),
            port,
            unix_path: None,
            hostname: hostname.map(str::to_owned),
            exposed: false,
            result: 0,
            via: None,
        }
    }

    #[test]
    fn addresses_ranges_names_and_listen_addresses_compile_to_what_they_declare() {
        let ob = Outbound {
            all: false,
            hosts: ["127.0.0.1:8080", "10.0.0.0/8", ".github.com:443"]
                .iter()
                .map(|h| HostPattern::parse(h).unwrap())
                .collect(),
            ports: vec![443],
            transports: vec![],
        };
        let a = NetAllow::compile(&ob, &[ListenSpec::parse("127.0.0.1:3000").unwrap()], &[]);
        let tcp = |addr, port, h| act(NetOp::Connect, Proto::Tcp, addr, port, h);
        assert!(a.allows(&tcp("127.0.0.1", 8080, None)));
        assert!(a.allows(&tcp("::ffff:127.0.0.1", 8080, None)), "IPv4-mapped");
        assert!(!a.allows(&tcp("127.0.0.1", 8081, None)));
        assert!(a.allows(&tcp("10.9.8.7", 443, None)));
        assert!(
            !a.allows(&tcp("10.9.8.7", 80, None)),
            "a host without port takes `ports`"
        );
        assert!(a.allows(&tcp("140.82.1.1", 443, Some("api.github.com"))));
        assert!(!a.allows(&tcp("140.82.1.1", 443, Some("evil.example"))));
        assert!(!a.allows(&act(NetOp::SendTo, Proto::Udp, "127.0.0.2", 9999, None)));
        assert!(
            a.allows(&act(NetOp::SendTo, Proto::Udp, "8.8.8.8", 53, None)),
            "steered"
        );
        assert!(a.allows(&act(NetOp::Bind, Proto::Tcp, "127.0.0.1", 3000, None)));
        assert!(!a.allows(&act(NetOp::Bind, Proto::Tcp, "0.0.0.0", 3000, None)));
        let keys = a.keys(7);
        let (bits, k) = keys[0];
        assert_eq!(bits, 96 + 128);
        assert_eq!(k.port, 8080u16.to_be_bytes());
        assert_eq!(&k.addr[10..], &[0xff, 0xff, 127, 0, 0, 1]);
        let (bits, _) = keys[1];
        assert_eq!(bits, 96 + 96 + 8, "10.0.0.0/8, mapped");
    }
}
