//! The DNS resolver each server in enforce mode is steered to (the cgroup
//! programs send its port-53 datagrams here): the answer's addresses for a
//! name the manifest declares enter the server's allowlist BEFORE the answer
//! is returned, so the server can never hold an address it may not yet
//! connect to (Cilium's FQDN policy). A name the manifest does not declare
//! gets REFUSED: the query never leaves the host (no data carried out in
//! names) and there is nothing the server could connect to anyway.
//!
//! Messages are parsed and built with `hickory-proto`; the forwarding
//! itself is one datagram to the upstream and one back. hickory-server's
//! catalogue of authorities answers from zones and has no step between the
//! upstream's answer and the reply where the allowlist could be written, so
//! the loop around the sockets is this module's.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agent_common::cgroup_net::{AllowData, KIND_OUT};
use aya::maps::{MapData, lpm_trie::LpmTrie};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::RData,
};
use ipnet::Ipv6Net;
use tokio::net::UdpSocket;

use super::allowlist::{NameRule, Rule, key, v6};
use crate::output::metrics::ResolverMetrics;

pub type AllowMap = LpmTrie<MapData, AllowData, u32>;

/// How long the upstream may take to answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);
/// A resolved address stays allowed at least this long (a TTL of 0 would
/// otherwise expire before the server connects).
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// How often expired addresses leave the allowlist.
const SWEEP: Duration = Duration::from_secs(5);

/// What a resolver answered for a server: (server id, name, addresses),
/// for the monitor, which names the server's connects by it (the query it
/// sees went to the resolver, not to port 53, so it learns nothing itself).
pub type Resolved = (u32, String, Vec<IpAddr>);

/// Answers waiting for the agent's loop, at most (then dropped, logged).
pub const RESOLVED_QUEUE: usize = 4096;

/// What one server's resolver needs.
pub struct ResolverCtx {
    pub id: u32,
    pub server: String,
    pub cgroup: u64,
    pub names: Vec<NameRule>,
    pub upstream: SocketAddr,
    pub allow: Arc<Mutex<AllowMap>>,
    /// Keys of the static rules: never inserted or expired by the resolver.
    pub fixed: HashSet<(u32, AllowData)>,
    /// The server's `mcpwatch_resolver_*` series.
    pub counters: ResolverMetrics,
    /// Where the answers go for the monitor (before the server gets them:
    /// the agent takes them before the events the server makes next).
    pub resolved: std::sync::mpsc::SyncSender<Resolved>,
}

/// A running resolver; stops when dropped.
pub struct Resolver {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    ctx: ResolverCtx,
    /// Addresses the resolver allowed, until when.
    learnt: Mutex<HashMap<(u32, AllowData), Instant>>,
}

/// Starts a resolver on 127.0.0.1 (and `[::1]` when this host has IPv6) on
/// `port` if it is free (a previous agent's resolver of the server, whose
/// port the kept programs steer to), else on a free port. `learnt`: the
/// addresses a previous agent's resolver allowed (still in the map), which
/// expire [`MIN_TTL`] from now.
pub fn spawn(ctx: ResolverCtx, port: u16, learnt: Vec<(u32, AllowData)>) -> std::io::Result<Resolver> {
    let v4 = match std::net::UdpSocket::bind(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(_) if port != 0 => std::net::UdpSocket::bind("127.0.0.1:0")?,
        Err(e) => return Err(e),
    };
    let port = v4.local_addr()?.port();
    v4.set_nonblocking(true)?;
    let v6 = std::net::UdpSocket::bind(("::1", port)).ok();
    let v4 = Arc::new(UdpSocket::from_std(v4)?);
    let v6 = match v6 {
        Some(s) => {
            s.set_nonblocking(true)?;
            Some(Arc::new(UdpSocket::from_std(s)?))
        }
        None => None,
    };
    let until = Instant::now() + MIN_TTL;
    let state = Arc::new(State {
        ctx,
        learnt: Mutex::new(learnt.into_iter().map(|k| (k, until)).collect()),
    });
    let task = tokio::spawn(serve(v4, v6, state));
    Ok(Resolver { port, task })
}

async fn recv(s: &Option<Arc<UdpSocket>>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match s {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn serve(v4: Arc<UdpSocket>, v6: Option<Arc<UdpSocket>>, state: Arc<State>) {
    let mut b4 = vec![0u8; 4096];
    let mut b6 = vec![0u8; 4096];
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            r = v4.recv_from(&mut b4) => if let Ok((n, from)) = r {
                tokio::spawn(answer(v4.clone(), b4[..n].to_vec(), from, state.clone()));
            },
            r = recv(&v6, &mut b6) => if let (Ok((n, from)), Some(s)) = (r, &v6) {
                tokio::spawn(answer(s.clone(), b6[..n].to_vec(), from, state.clone()));
            },
            _ = sweep.tick() => state.sweep(),
        }
    }
}

/// Answers one query: REFUSED for an undeclared name, else the upstream's
/// answer once its addresses are allowed.
async fn answer(sock: Arc<UdpSocket>, query: Vec<u8>, from: SocketAddr, state: Arc<State>) {
    let Ok(q) = Message::from_vec(&query) else {
        log::debug!(
            "{}: resolver: an unparsable query from {from} dropped",
            state.ctx.server
        );
        return;
    };
    let name = q.queries().first().map(|q| q.name().to_ascii()).unwrap_or_default();
    let rules: Vec<&NameRule> = state.ctx.names.iter().filter(|r| r.matches(&name)).collect();
    let reply = if rules.is_empty() {
        log::info!(
            "{}: resolver refused {name:?}: not a host its manifest declares",
            state.ctx.server
        );
        state.ctx.counters.refused.inc();
        error(&q, ResponseCode::Refused)
    } else {
        match forward(&query, q.id(), state.ctx.upstream).await {
            Ok((bytes, m)) => {
                state.allow_answers(&m, &rules);
                state.ctx.counters.answered.inc();
                Some(bytes)
            }
            Err(e) => {
                state.ctx.counters.upstream_failed.inc();
                log::warn!(
                    "{}: resolver: {name:?} via {}: {e}",
                    state.ctx.server,
                    state.ctx.upstream
                );
                error(&q, ResponseCode::ServFail)
            }
        }
    };
    if let Some(r) = reply {
        let _ = sock.send_to(&r, from).await;
    }
}

fn error(q: &Message, code: ResponseCode) -> Option<Vec<u8>> {
    let mut m = Message::error_msg(q.id(), q.op_code(), code);
    m.add_queries(q.queries().to_vec());
    m.to_vec().ok()
}

/// One datagram to the upstream, its answer back (with the query's id).
async fn forward(query: &[u8], id: u16, upstream: SocketAddr) -> std::io::Result<(Vec<u8>, Message)> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(bind).await?;
    s.connect(upstream).await?;
    s.send(query).await?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + FORWARD_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, s.recv(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
        // A datagram that is not the answer to this query is ignored.
        if let Ok(m) = Message::from_vec(&buf[..n])
            && m.id() == id
        {
            buf.truncate(n);
            return Ok((buf, m));
        }
    }
}

impl State {
    /// Allows every A/AAAA address of the answer for the rules that
    /// matched the query's name, until its TTL (at least [`MIN_TTL`]), and
    /// tells the monitor the name of each.
    fn allow_answers(&self, m: &Message, rules: &[&NameRule]) {
        let addrs: Vec<IpAddr> = m
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect();
        if let Some(q) = m.queries().first()
            && !addrs.is_empty()
        {
            let name = q.name().to_ascii().trim_end_matches('.').to_owned();
            if self.ctx.resolved.try_send((self.ctx.id, name, addrs)).is_err() {
                // The connect is then judged by address (and alerted as undeclared).
                log::warn!(
                    "{}: resolver: the agent's queue of answers is full; an answer's name is not learnt",
                    self.ctx.server
                );
            }
        }
        let now = Instant::now();
        let mut learnt = self.learnt.lock().expect("resolver state");
        let mut map = self.ctx.allow.lock().expect("allow map");
        for rec in m.answers() {
            let ip = match rec.data() {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => continue,
            };
            let until = now + MIN_TTL.max(Duration::from_secs(rec.ttl().into()));
            for r in rules {
                let rule = Rule {
                    net: Ipv6Net::new(v6(&ip), 128).expect("a /128"),
                    proto: r.proto,
                    port: r.port,
                };
                let k = key(self.ctx.cgroup, KIND_OUT, &rule);
                if self.ctx.fixed.contains(&k) {
                    continue;
                }
                if let Err(e) = map.insert(&aya::maps::lpm_trie::Key::new(k.0, k.1), 1, 0) {
                    // The answer still goes back: a connect to it is then
                    // refused and alerted, which is what the operator sees.
                    log::warn!("{}: resolver: allowing {ip}: {e}", self.ctx.server);
                    continue;
                }
                let e = learnt.entry(k).or_insert_with(|| {
                    self.ctx.counters.allowed.inc();
                    until
                });
                *e = (*e).max(until);
                log::debug!("{}: resolver allowed {ip} for {}", self.ctx.server, r.name);
            }
        }
    }

    fn sweep(&self) {
        let now = Instant::now();
        let mut learnt = self.learnt.lock().expect("resolver state");
        let mut map = self.ctx.allow.lock().expect("allow map");
        learnt.retain(|k, until| {
            if *until > now {
                return true;
            }
            let _ = map.remove(&aya::maps::lpm_trie::Key::new(k.0, k.1));
            false
        });
    }
}

/// The first nameserver of /etc/resolv.conf, port 53 (the default upstream).
pub fn system_upstream() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next() == Some("nameserver"))
            .then(|| f.next()?.parse::<IpAddr>().ok())
            .flatten()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}
