//! Syslog sink: RFC 5424 messages over UDP (one datagram each), TCP
//! (octet-counted framing, RFC 6587 3.4.1) or a Unix datagram socket (like
//! /dev/log), the message being the JSON document (ECS or OCSF) or a CEF
//! line. Event lines (`level = "summary"`) are informational, JSON only.
//!
//! A `host:port` target is resolved each time a connection is made: at the
//! first alert, after any failure, and (UDP, whose failures mostly go
//! unnoticed) at least every [`UDP_RESOLVE_EVERY`]; so a SIEM whose name
//! moves to another address is followed.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpStream, UdpSocket, UnixDatagram},
};

use super::record::SinkRecord;
use crate::{
    alerts::Severity,
    config::{MessageFormat, Schema, SyslogSinkConfig, SyslogTransport},
    output::format::cef,
};

/// The SD-ID's name; the private enterprise number after `@` is a setting
/// (`enterprise_number`, by default RFC 5612's documentation number).
const SD_NAME: &str = "mcpwatch";
/// A UDP "connection" is redone (the name resolved again) this often.
pub const UDP_RESOLVE_EVERY: Duration = Duration::from_secs(60);

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Unix(UnixDatagram),
}

pub struct SyslogSink {
    cfg: SyslogSinkConfig,
    conn: Option<Conn>,
    /// When `conn` was made.
    since: Instant,
    procid: u32,
}

/// Syslog severity (RFC 5424 6.2.1) for an alert severity.
fn syslog_severity(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

/// PRINTUSASCII without spaces, bounded; `-` (NILVALUE) when empty.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s.chars().filter(|c| ('!'..='~').contains(c)).take(max).collect();
    if f.is_empty() { "-".into() } else { f }
}

/// An SD-PARAM value: `"`, `\` and `]` are escaped.
fn sd_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// RFC 3339 with at most 6 fractional digits (TIME-SECFRAC is 1*6DIGIT).
fn timestamp(ts: &str) -> String {
    match humantime::parse_rfc3339(ts) {
        Ok(t) => humantime::format_rfc3339_micros(t).to_string(),
        Err(_) => "-".into(),
    }
}

/// The RFC 5424 message for an alert (MSGID `alert`) or an event line
/// (MSGID `event`, informational; a CEF sink takes alerts only, see config).
pub fn format(
    rec: &SinkRecord,
    facility: u8,
    app_name: &str,
    pen: u32,
    procid: u32,
    fmt: MessageFormat,
    schema: Schema,
) -> String {
    let (severity, msgid, sd) = match rec {
        SinkRecord::Alert(a) => (
            a.severity,
            "alert",
            format!(
                "id=\"{}\" rule=\"{}\" severity=\"{}\" server=\"{}\"",
                sd_value(&a.id),
                sd_value(&a.rule),
                a.severity.as_str(),
                sd_value(a.server.as_deref().unwrap_or("")),
            ),
        ),
        SinkRecord::Line(l) => (
            Severity::Info,
            "event",
            format!(
                "kind=\"{}\" server=\"{}\"",
                sd_value(l["kind"].as_str().unwrap_or_default()),
                sd_value(l["server"].as_str().unwrap_or_default()),
            ),
        ),
    };
    let pri = u32::from(facility) * 8 + u32::from(syslog_severity(severity));
    let msg = match (fmt, rec) {
        (MessageFormat::Cef, SinkRecord::Alert(a)) => cef::format(a),
        _ => rec.document(schema).to_string(),
    };
    format!(
        "<{pri}>1 {} {} {} {procid} {msgid} [{SD_NAME}@{pen} {sd}] {msg}",
        timestamp(rec.ts()),
        header_field(rec.host(), 255),
        header_field(app_name, 48),
    )
}

impl SyslogSink {
    pub fn new(cfg: &SyslogSinkConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            conn: None,
            since: Instant::now(),
            procid: std::process::id(),
        }
    }

    async fn connect(&self) -> std::io::Result<Conn> {
        Ok(match self.cfg.transport {
            SyslogTransport::Udp => {
                let addr = self.resolve().await?;
                let local: SocketAddr = if addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let s = UdpSocket::bind(local).await?;
                s.connect(addr).await?;
                Conn::Udp(s)
            }
            // Every address of the name in turn (tokio resolves it anew).
            SyslogTransport::Tcp => Conn::Tcp(TcpStream::connect(self.cfg.address.as_str()).await?),
            SyslogTransport::Unix => {
                let s = UnixDatagram::unbound()?;
                s.connect(PathBuf::from(&self.cfg.address))?;
                Conn::Unix(s)
            }
        })
    }

    /// The first address `host:port` resolves to now.
    async fn resolve(&self) -> std::io::Result<SocketAddr> {
        tokio::net::lookup_host(self.cfg.address.as_str())
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{} resolves to no address", self.cfg.address)))
    }

    pub async fn deliver(&mut self, rec: &SinkRecord) -> std::io::Result<()> {
        let msg = format(
            rec,
            self.cfg.facility,
            &self.cfg.app_name,
            self.cfg.enterprise_number,
            self.procid,
            self.cfg.format,
            self.cfg.schema,
        );
        // A TCP peer that went away is only noticed on read: check before
        // writing, or the first alert after an outage would vanish into a
        // dead connection's send buffer.
        if let Some(Conn::Tcp(s)) = &self.conn
            && peer_closed(s)
        {
            self.conn = None;
        }
        if matches!(self.conn, Some(Conn::Udp(_))) && self.since.elapsed() >= UDP_RESOLVE_EVERY {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
            self.since = Instant::now();
        }
        let res = match self.conn.as_mut() {
            Some(Conn::Udp(s)) => s.send(msg.as_bytes()).await.map(drop),
            Some(Conn::Unix(s)) => s.send(msg.as_bytes()).await.map(drop),
            Some(Conn::Tcp(s)) => {
                let framed = format!("{} {msg}", msg.len());
                match s.write_all(framed.as_bytes()).await {
                    Ok(()) => s.flush().await,
                    Err(e) => Err(e),
                }
            }
            None => Err(std::io::Error::other("not connected")),
        };
        if res.is_err() {
            self.conn = None;
        }
        res
    }
}

/// True when the peer closed the connection (or it failed): a syslog
/// receiver never writes to us, so anything readable means EOF or an error.
fn peer_closed(s: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    match s.try_read(&mut buf) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::format::ecs::tests::full_alert;

    /// After the receiver closed the connection, the next alert goes over a
    /// new one instead of into the dead one's send buffer.
    #[tokio::test(flavor = "current_thread")]
    async fn tcp_reconnects_after_the_peer_closed() {
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = SyslogSinkConfig {
            transport: SyslogTransport::Tcp,
            address: listener.local_addr().unwrap().to_string(),
            format: MessageFormat::Json,
            schema: Schema::Ecs,
            facility: 13,
            app_name: "mcpwatch".into(),
            enterprise_number: 32473,
        };
        let mut sink = SyslogSink::new(&cfg);
        let mut a = full_alert();
        sink.deliver(&SinkRecord::from(a.clone())).await.unwrap();
        let (first, _) = listener.accept().await.unwrap();
        drop(first);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        a.id = "second".into();
        sink.deliver(&SinkRecord::from(a)).await.unwrap();
        let (mut second, _) = tokio::time::timeout(std::time::Duration::from_secs(5), listener.accept())
            .await
            .expect("a new connection for the second alert")
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = second.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        let (len, msg) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len(), "octet counting");
        assert!(msg.contains("id=\"second\""), "{msg}");
    }

    #[test]
    fn rfc5424_header_and_structured_data() {
        let mut a = full_alert();
        a.id = "1-\"]x".into();
        let rec = SinkRecord::from(a.clone());
        let m = format(&rec, 13, "mcpwatch", 32473, 77, MessageFormat::Json, Schema::Ecs);
        let prefix = "<107>1 2026-11-21T17:00:00.000000Z h1 mcpwatch 77 alert [mcpwatch@32473 id=\"1-\\\"\\]x\" \
                      rule=\"cred.ssh_key\" severity=\"high\" server=\"fs\"] {";
        assert!(m.starts_with(prefix), "{m}");
        let json = &m[prefix.len() - 1..];
        let back = crate::output::format::ecs::from_ecs(&serde_json::from_str(json).unwrap()).unwrap();
        assert_eq!(back, a);
        let c = format(&rec, 13, "mcpwatch", 32473, 77, MessageFormat::Cef, Schema::Ecs);
        assert!(c.contains("] CEF:0|mcpwatch|"), "{c}");
    }

    /// A summary line: informational, MSGID `event`, its kind and server in
    /// the structured data, the ECS event document as the message.
    #[test]
    fn an_event_line_is_an_informational_event_message() {
        let line = serde_json::json!({"ts": "2026-11-21T17:00:00Z", "kind": "tool_call", "server": "fs", "pid": 9});
        let m = format(
            &SinkRecord::Line(line),
            13,
            "mcpwatch",
            32473,
            77,
            MessageFormat::Json,
            Schema::Ecs,
        );
        let (head, json) = m.split_once("] ").unwrap();
        assert!(head.starts_with("<110>1 2026-11-21T17:00:00.000000Z "), "{m}");
        assert!(
            head.ends_with(" mcpwatch 77 event [mcpwatch@32473 kind=\"tool_call\" server=\"fs\""),
            "{m}"
        );
        let doc: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            (doc["event"]["kind"].as_str(), doc["event"]["action"].as_str()),
            (Some("event"), Some("tool_call"))
        );
        assert_eq!(doc["process"]["pid"], 9);
    }
}
