//! DNS messages a watched server exchanged with port 53, and the per-server
//! map of address -> hostname they teach (so a connect can name its host).
//!
//! A server controls what it sends, so only answers it *received* teach
//! anything, and only when they answer a query it sent on the same socket to
//! the same resolver (id, name, resolver address and port): a forged
//! "answer" sent to port 53 naming a trusted host teaches nothing.
//!
//! Only the question and the A/AAAA answers are read. The parser is ~60
//! bounded lines over untrusted bytes; a general DNS crate would bring far
//! more than that for the same two fields.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// What a message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    pub response: bool,
    /// The first question's name, dotted, without the final dot.
    pub name: String,
    pub qtype: u16,
    /// A and AAAA records of the answer section.
    pub answers: Vec<IpAddr>,
}

pub fn qtype_name(t: u16) -> String {
    match t {
        1 => "A".into(),
        28 => "AAAA".into(),
        5 => "CNAME".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        33 => "SRV".into(),
        65 => "HTTPS".into(),
        12 => "PTR".into(),
        n => n.to_string(),
    }
}

/// The longest name DNS allows, in wire octets (RFC 1035 3.1). Pointers let a
/// small message spell a far longer one: such a name is not DNS.
pub const NAME_MAX_OCTETS: usize = 255;

/// Reads a (possibly compressed) name at `pos`; returns it and the position after it.
fn name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut end = None;
    // Wire octets of the name so far: each label's length byte and bytes, the root's 0.
    let mut octets = 1;
    for _ in 0..128 {
        let len = *msg.get(pos)? as usize;
        match len {
            0 => {
                return Some((out, end.unwrap_or(pos + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let ptr = ((l & 0x3f) << 8) | *msg.get(pos + 1)? as usize;
                end.get_or_insert(pos + 2);
                pos = ptr;
            }
            l => {
                let label = msg.get(pos + 1..pos + 1 + l)?;
                octets += 1 + l;
                if octets > NAME_MAX_OCTETS {
                    return None;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&String::from_utf8_lossy(label));
                pos += 1 + l;
            }
        }
    }
    None
}

fn u16_at(msg: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]))
}

/// Parses a DNS message; None when it is not one.
pub fn parse(msg: &[u8]) -> Option<DnsMessage> {
    let id = u16_at(msg, 0)?;
    let flags = u16_at(msg, 2)?;
    let qd = u16_at(msg, 4)?;
    let an = u16_at(msg, 6)?;
    if qd == 0 {
        return None;
    }
    let (qname, mut pos) = name(msg, 12)?;
    let qtype = u16_at(msg, pos)?;
    pos += 4;
    for _ in 1..qd {
        let (_, p) = name(msg, pos)?;
        pos = p + 4;
    }
    let mut answers = Vec::new();
    for _ in 0..an.min(64) {
        let (_, p) = name(msg, pos)?;
        let rtype = u16_at(msg, p)?;
        let rdlen = u16_at(msg, p + 8)? as usize;
        let rdata = msg.get(p + 10..p + 10 + rdlen)?;
        match (rtype, rdlen) {
            (1, 4) => answers.push(IpAddr::V4(Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]))),
            (28, 16) => answers.push(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(rdata).ok()?))),
            _ => {}
        }
        pos = p + 10 + rdlen;
    }
    Some(DnsMessage {
        id,
        response: flags & 0x8000 != 0,
        name: qname,
        qtype,
        answers,
    })
}

/// A query a watched process sent, as its answer must match it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueryKey {
    pub server: u32,
    pub pid: u32,
    /// The socket's descriptor in that process.
    pub fd: u64,
    pub id: u16,
    /// Lower-cased: resolvers may answer in another case (0x20 encoding).
    pub name: String,
    pub resolver: IpAddr,
    pub port: u16,
}

impl QueryKey {
    pub fn new(server: u32, pid: u32, fd: u64, id: u16, name: &str, resolver: IpAddr, port: u16) -> Self {
        QueryKey {
            server,
            pid,
            fd,
            id,
            name: name.to_ascii_lowercase(),
            resolver,
            port,
        }
    }
}

/// Queries awaiting their answer, bounded in number and age.
#[derive(Default)]
pub struct Outstanding {
    sent: HashMap<QueryKey, u64>,
    order: VecDeque<(QueryKey, u64)>,
}

/// Queries remembered at most (all servers): beyond, the oldest is forgotten
/// and its answer, if it ever comes, teaches nothing.
const OUTSTANDING: usize = 4096;
/// A resolver answers within seconds; older queries are forgotten.
const QUERY_TTL_NS: u64 = 30_000_000_000;

impl Outstanding {
    pub fn sent(&mut self, key: QueryKey, ktime_ns: u64) {
        self.expire(ktime_ns);
        self.sent.insert(key.clone(), ktime_ns);
        self.order.push_back((key, ktime_ns));
        while self.order.len() > OUTSTANDING
            && let Some((old, at)) = self.order.pop_front()
        {
            self.forget(&old, at);
        }
    }

    /// Whether `key` answers a query still outstanding; it is then answered.
    pub fn answered(&mut self, key: &QueryKey, ktime_ns: u64) -> bool {
        self.expire(ktime_ns);
        self.sent.remove(key).is_some()
    }

    fn expire(&mut self, now: u64) {
        while let Some((_, at)) = self.order.front()
            && now.saturating_sub(*at) > QUERY_TTL_NS
        {
            if let Some((old, at)) = self.order.pop_front() {
                self.forget(&old, at);
            }
        }
    }

    /// Forgets `key` if it is the query sent at `at` (not a later resend).
    fn forget(&mut self, key: &QueryKey, at: u64) {
        if self.sent.get(key) == Some(&at) {
            self.sent.remove(key);
        }
    }
}

/// Address -> hostname, per server, bounded (oldest forgotten first).
#[derive(Default)]
pub struct HostCache {
    by_server: HashMap<u32, (HashMap<IpAddr, String>, VecDeque<IpAddr>)>,
}

/// Addresses remembered per server.
const PER_SERVER: usize = 4096;

impl HostCache {
    pub fn learn(&mut self, server: u32, name: &str, addrs: &[IpAddr]) {
        let (map, order) = self.by_server.entry(server).or_default();
        for a in addrs {
            if map.insert(*a, name.to_owned()).is_none() {
                order.push_back(*a);
                if order.len() > PER_SERVER
                    && let Some(old) = order.pop_front()
                {
                    map.remove(&old);
                }
            }
        }
    }

    /// Forgets a server whose processes all exited.
    pub fn forget(&mut self, server: u32) {
        self.by_server.remove(&server);
    }

    pub fn lookup(&self, server: u32, addr: &IpAddr) -> Option<&str> {
        self.by_server.get(&server)?.0.get(addr).map(String::as_str)
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    /// A response for example.com A with a compressed answer name.
    fn response() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        for l in ["exfil", "example", "com"] {
            m.push(l.len() as u8);
            m.extend(l.as_bytes());
        }
        m.extend([0, 0, 1, 0, 1]);
        m.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 9]);
        m.extend([0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16]);
        m.extend(Ipv6Addr::LOCALHOST.octets());
        m
    }

    #[test]
    fn parses_question_and_answers() {
        let d = parse(&response()).unwrap();
        assert_eq!(d.id, 0x1234);
        assert!(d.response);
        assert_eq!(d.name, "exfil.example.com");
        assert_eq!(qtype_name(d.qtype), "A");
        assert_eq!(
            d.answers,
            vec![IpAddr::from([127, 0, 0, 9]), IpAddr::V6(Ipv6Addr::LOCALHOST)]
        );
    }

    #[test]
    fn garbage_and_truncation_are_none_not_panics() {
        let r = response();
        for n in 0..r.len() {
            let _ = parse(&r[..n]);
        }
        assert!(parse(&[0xff; 40]).is_none() || parse(&[0xff; 40]).is_some());
        // A pointer loop terminates.
        let mut m = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12];
        m.extend([0, 1, 0, 1]);
        assert!(parse(&m).is_none());
    }

    /// Seen while writing `props`: labels chained by pointers spelt names of
    /// kilobytes (each kept in the outstanding queries and event lines);
    /// beyond 255 octets it is not DNS.
    #[test]
    fn a_name_longer_than_dns_allows_is_none() {
        let mut m = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        // Four 63-byte labels, each followed by a pointer to the next: 256 octets.
        let mut at = 12;
        for i in 0..4u8 {
            m.push(63);
            m.extend([b'a' + i; 63]);
            at += 64 + 2;
            if i < 3 {
                m.extend([0xc0 | (at >> 8) as u8, at as u8]);
            } else {
                m.push(0);
            }
        }
        m.extend([0, 1, 0, 1]);
        assert_eq!(parse(&m), None);
        // Three fit (193 octets).
        let mut m = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for i in 0..3u8 {
            m.push(63);
            m.extend([b'a' + i; 63]);
        }
        m.extend([0, 0, 1, 0, 1]);
        assert_eq!(parse(&m).unwrap().name.len(), 3 * 63 + 2);
    }

    #[test]
    fn only_an_answer_to_an_outstanding_query_matches() {
        let resolver = IpAddr::from([127, 0, 0, 53]);
        let key = |fd, id, name: &str, ip: IpAddr| QueryKey::new(1, 10, fd, id, name, ip, 53);
        let mut q = Outstanding::default();
        assert!(!q.answered(&key(3, 7, "api.github.com", resolver), 0), "no query sent");
        q.sent(key(3, 7, "API.github.com", resolver), 0);
        assert!(!q.answered(&key(4, 7, "api.github.com", resolver), 1), "another socket");
        assert!(!q.answered(&key(3, 8, "api.github.com", resolver), 1), "another id");
        assert!(!q.answered(&key(3, 7, "evil.test", resolver), 1), "another name");
        let other = IpAddr::from([127, 0, 0, 1]);
        assert!(!q.answered(&key(3, 7, "api.github.com", other), 1), "another resolver");
        assert!(q.answered(&key(3, 7, "api.github.com", resolver), 1));
        assert!(!q.answered(&key(3, 7, "api.github.com", resolver), 2), "answered once");
        q.sent(key(3, 9, "a.test", resolver), 0);
        assert!(!q.answered(&key(3, 9, "a.test", resolver), QUERY_TTL_NS + 1), "too old");
        for i in 0..(OUTSTANDING as u64 + 1) {
            q.sent(key(i, 1, "b.test", resolver), 5);
        }
        assert!(!q.answered(&key(0, 1, "b.test", resolver), 6), "oldest forgotten");
        assert!(q.answered(&key(OUTSTANDING as u64, 1, "b.test", resolver), 6));
    }

    #[test]
    fn cache_is_per_server_and_bounded() {
        let mut c = HostCache::default();
        let a = IpAddr::from([127, 0, 0, 9]);
        c.learn(1, "exfil.example.com", &[a]);
        assert_eq!(c.lookup(1, &a), Some("exfil.example.com"));
        assert_eq!(c.lookup(2, &a), None);
        for i in 0..(PER_SERVER as u32 + 10) {
            c.learn(1, "n", &[IpAddr::from(Ipv4Addr::from(0x0a00_0000 + i))]);
        }
        assert_eq!(c.lookup(1, &a), None, "oldest forgotten");
    }
}
