//! Network rules: connects and datagrams, unix sockets, listens, accepts.

use std::net::IpAddr;

use serde_json::json;

use super::{
    Finding, ServerPolicy,
    scope::{Scope, grant_words, tool_key},
};
use crate::{
    alerts::rules::{self, RuleId},
    policy::{
        activity::{NetActivity, NetOp, ProcContext, Proto},
        baseline::{self, Runtime},
        net::is_loopback,
    },
};

impl ServerPolicy {
    /// Whether a scope allows a connection (or datagram) to `addr`.
    fn connect_allowed(&self, scope: Scope<'_>, n: &NetActivity, addr: &IpAddr) -> bool {
        let o = self.outbound_grant(scope);
        let transport_ok = o.transports.is_empty()
            || o.transports.iter().any(|t| match n.proto {
                Proto::Tcp => t == "tcp",
                Proto::Udp => t == "udp",
                Proto::Other => false,
            });
        o.all
            || (transport_ok
                && o.hosts.iter().any(|h| {
                    h.matches_host(Some(addr), n.hostname.as_deref())
                        && match h.port {
                            Some(p) => p == n.port,
                            None => o.ports.is_empty() || o.ports.contains(&n.port),
                        }
                }))
    }

    fn unix_allowed(&mut self, scope: Scope<'_>, path: &str) -> bool {
        let r = self.resolved(scope);
        r.read.iter().chain(r.write.iter()).any(|g| g.matches(path))
    }

    fn accept_allowed(&self, scope: Scope<'_>, addr: Option<&IpAddr>) -> bool {
        let inbound = self.inbound_grant(scope);
        inbound.is_empty() || addr.is_some_and(|a| inbound.iter().any(|h| h.matches_host(Some(a), None)))
    }

    pub(super) fn net(&mut self, ctx: &ProcContext, n: &NetActivity) -> Option<Finding> {
        // The server's DNS query, steered in the kernel from port 53 to its
        // resolver in the agent (the cgroup layer): the socket names the
        // resolver, not where the server sent it.
        let steered = self.sandbox.as_ref().and_then(|s| s.resolver_port).is_some_and(|p| {
            n.port == p
                && n.proto == Proto::Udp
                && matches!(n.op, NetOp::Connect | NetOp::SendTo)
                && n.addr.is_some_and(|a| crate::policy::net::normalise(&a).is_loopback())
        });
        if steered {
            return None;
        }
        let scopes = self.scopes(ctx);
        let narrowed = scopes[0].is_some();
        let addr = n.addr.map(|a| crate::policy::net::normalise(&a));
        let mut evidence = json!({
            "op": n.op.name(),
            "proto": match n.proto { Proto::Tcp => "tcp", Proto::Udp => "udp", Proto::Other => "other" },
            "address": addr.map(|a| a.to_string()),
            "port": n.port,
            "hostname": n.hostname,
            "unix_path": n.unix_path,
            "result": n.result,
        });
        if let Some(via) = n.via {
            evidence["via"] = json!(via);
        }
        let target = match (&n.unix_path, addr) {
            (Some(u), _) => u.clone(),
            (None, Some(a)) => format!("{a}:{}", n.port),
            (None, None) => String::new(),
        };
        // Built only for an alert: most connections are declared.
        let declared = |s: &Self| Some(s.declared_of(&scopes, ctx, &["network", "listen"]));
        let finding = |s: &Self, rule: RuleId, summary: String| Finding {
            rule,
            summary,
            evidence: evidence.clone(),
            declared: declared(s),
            dedup_key: target.clone(),
            would_block: None,
        };
        let outside_tool = |s: &Self, what: &str, to: &str| Finding {
            dedup_key: tool_key(ctx, &target),
            ..finding(
                s,
                &rules::TOOL_NET_OUTSIDE_GRANT,
                format!("{} {what} outside {}: {to}", ctx.server, grant_words(&scopes)),
            )
        };
        match n.op {
            NetOp::Connect | NetOp::SendTo => {
                if let Some(u) = &n.unix_path {
                    if baseline::unix_allowed(u) || scopes.iter().any(|s| self.unix_allowed(*s, u)) {
                        return None;
                    }
                    if narrowed && self.unix_allowed(None, u) {
                        return Some(outside_tool(self, "connected to a unix socket", u));
                    }
                    return Some(finding(
                        self,
                        &rules::NET_CONNECT_UNDECLARED,
                        format!("{} connected to an undeclared unix socket: {u}", ctx.server),
                    ));
                }
                let addr = addr?;
                let runtimes: Vec<Runtime> = self.runtimes.iter().copied().collect();
                if scopes.iter().any(|s| self.connect_allowed(*s, n, &addr))
                    || baseline::outbound_allowed(&runtimes, Some(&addr), n.hostname.as_deref(), n.port)
                {
                    return None;
                }
                let to = n
                    .hostname
                    .clone()
                    .map(|h| format!("{h} ({target})"))
                    .unwrap_or(target.clone());
                if narrowed && self.connect_allowed(None, n, &addr) {
                    return Some(outside_tool(self, "connected", &to));
                }
                Some(finding(
                    self,
                    &rules::NET_CONNECT_UNDECLARED,
                    format!("{} connected to an undeclared destination: {to}", ctx.server),
                ))
            }
            NetOp::Listen => {
                if self.manifest.listen.iter().any(|l| l.matches(addr.as_ref(), n.port)) {
                    return None;
                }
                let exposed = n.exposed || addr.is_some_and(|a| !is_loopback(&a));
                if exposed {
                    Some(finding(
                        self,
                        &rules::NET_LISTEN_EXPOSED,
                        format!("{} listens on a non-loopback address: {target}", ctx.server),
                    ))
                } else {
                    Some(finding(
                        self,
                        &rules::NET_LISTEN_UNDECLARED,
                        format!("{} listens on an undeclared address: {target}", ctx.server),
                    ))
                }
            }
            NetOp::Accept => {
                if scopes.iter().any(|s| self.accept_allowed(*s, addr.as_ref())) {
                    return None;
                }
                if narrowed && self.accept_allowed(None, addr.as_ref()) {
                    return Some(outside_tool(self, "accepted a connection", &target));
                }
                Some(finding(
                    self,
                    &rules::NET_ACCEPT_UNDECLARED,
                    format!("{} accepted a connection from an undeclared peer: {target}", ctx.server),
                ))
            }
            NetOp::Bind => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::policy::activity::{Activity, NetActivity, NetOp, Proto};

    #[test]
    fn network_hosts_suffixes_ports_and_pairs() {
        let (mut s, ctx) = server(
            r#"{"network": {"outbound": {"allow_host": [".github.com", "10.0.0.0/8", "localhost:5432"], "allow_port": [443]}}}"#,
            NODE,
        );
        let mut check = |a: Activity| rules(&s.evaluate(&ctx, &a));
        assert!(check(connect("140.82.112.3", 443, Some("api.github.com"))).is_empty());
        assert_eq!(
            check(connect("140.82.112.3", 80, Some("api.github.com"))),
            ["net.connect_undeclared"]
        );
        assert_eq!(
            check(connect("140.82.112.3", 443, Some("github.com.evil.io"))),
            ["net.connect_undeclared"]
        );
        assert!(check(connect("10.1.2.3", 443, None)).is_empty());
        assert!(check(connect("127.0.0.1", 5432, None)).is_empty(), "host:port pair");
        assert!(check(connect("::ffff:127.0.0.1", 5432, None)).is_empty(), "IPv4-mapped");
        assert_eq!(check(connect("127.0.0.1", 6379, None)), ["net.connect_undeclared"]);
        assert!(
            check(connect("127.0.0.53", 53, None)).is_empty(),
            "DNS to the local resolver"
        );
        let unix = Activity::Net(NetActivity {
            op: NetOp::Connect,
            proto: Proto::Other,
            addr: None,
            port: 0,
            unix_path: Some("/run/docker.sock".into()),
            hostname: None,
            exposed: false,
            result: 0,
            via: None,
        });
        assert_eq!(check(unix), ["net.connect_undeclared"]);
        let (mut all, ctx) = server(r#"{"network": {"outbound": {"insecure_allow_all": true}}}"#, NODE);
        assert!(all.evaluate(&ctx, &connect("1.2.3.4", 4444, None)).is_empty());
    }

    #[test]
    fn listening() {
        let (mut s, ctx) = server(r#"{"listen": ["127.0.0.1:8080"]}"#, NODE);
        let listen = |addr: &str, port: u16| {
            Activity::Net(NetActivity {
                op: NetOp::Listen,
                proto: Proto::Tcp,
                addr: Some(addr.parse().unwrap()),
                port,
                unix_path: None,
                hostname: None,
                exposed: false,
                result: 0,
                via: None,
            })
        };
        assert!(s.evaluate(&ctx, &listen("127.0.0.1", 8080)).is_empty());
        assert_eq!(
            rules(&s.evaluate(&ctx, &listen("127.0.0.1", 9000))),
            ["net.listen_undeclared"]
        );
        let f = s.evaluate(&ctx, &listen("0.0.0.0", 8080));
        assert_eq!(rules(&f), ["net.listen_exposed"]);
        assert_eq!(f[0].rule.severity, crate::alerts::Severity::High);
    }
}
