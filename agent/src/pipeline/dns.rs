//! DNS messages a watched server exchanged with port 53, and the per-server
//! map of address -> hostname they teach (so a connect can name its host).
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

/// Reads a (possibly compressed) name at `pos`; returns it and the position after it.
fn name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut end = None;
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

    pub fn lookup(&self, server: u32, addr: &IpAddr) -> Option<&str> {
        self.by_server.get(&server)?.0.get(addr).map(String::as_str)
    }
}

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
