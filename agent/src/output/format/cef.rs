//! ArcSight Common Event Format (CEF:0) for syslog sinks:
//! `CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|key=value ...`.
//!
//! Escaping follows the CEF rules: in the header `\` and `|` are escaped with
//! a backslash; in extension values `\` and `=` are, and line breaks become
//! `\n` / `\r`. Extension keys are fixed ASCII names.

use std::fmt::Write as _;

use crate::alerts::{Alert, Severity};

/// CEF severity 0-10.
pub fn severity(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

pub fn escape_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            // A header is one line: breaks would split the record.
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

pub fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// The CEF line for an alert.
pub fn format(a: &Alert) -> String {
    let mut out = format!(
        "CEF:0|{}|{}|{}|{}|{}|{}|",
        escape_header("mcpwatch"),
        escape_header("mcpwatch"),
        escape_header(env!("CARGO_PKG_VERSION")),
        escape_header(&a.rule),
        escape_header(&a.summary),
        severity(a.severity),
    );
    let rt_ms = humantime::parse_rfc3339(&a.ts)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis().to_string());
    let mut ext: Vec<(&str, String)> = vec![("externalId", a.id.clone())];
    if let Some(rt) = rt_ms {
        ext.push(("rt", rt));
    }
    ext.extend([
        ("dvchost", a.host.clone()),
        ("msg", a.summary.clone()),
        ("act", action(a).into()),
        ("cat", a.rule.split('.').next().unwrap_or_default().into()),
        ("spid", a.pid.to_string()),
        ("suid", a.uid.to_string()),
        ("cn1Label", "ppid".into()),
        ("cn1", a.ppid.to_string()),
        ("cnt", a.count.to_string()),
        ("cs1Label", "server".into()),
        ("cs1", a.server.clone().unwrap_or_default()),
        ("cs2Label", "argv".into()),
        ("cs2", a.argv.join(" ")),
        ("cs3Label", "evidence".into()),
        ("cs3", a.evidence.to_string()),
    ]);
    // The agent's own alerts have no process: no empty sproc/suser.
    if !a.exe.is_empty() {
        ext.push(("sproc", a.exe.clone()));
        if let Ok(Some(u)) = nix::unistd::User::from_uid(a.uid.into()) {
            ext.push(("suser", u.name));
        }
    }
    ext.extend(evidence_keys(&a.evidence));
    let optional = [
        ("cs4Label", "cs4", "tool", a.tool.clone()),
        ("cs5Label", "cs5", "manifest", a.manifest.clone()),
        (
            "cs6Label",
            "cs6",
            "mitre",
            a.mitre.as_ref().map(|m| format!("{} {}", m.id, m.name)),
        ),
    ];
    for (label_key, key, label, value) in optional {
        if let Some(v) = value {
            ext.push((label_key, label.into()));
            ext.push((key, v));
        }
    }
    for (i, (k, v)) in ext.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let _ = write!(out, "{sep}{k}={}", escape_value(v));
    }
    out
}

/// CEF `act`: what mcpwatch did about it.
fn action(a: &Alert) -> &'static str {
    if a.rule == crate::alerts::rules::ENFORCE_DENIED.id {
        "blocked"
    } else if a.would_block {
        "would_block"
    } else {
        "alert"
    }
}

/// The evidence's file and peer under CEF's own keys (the whole evidence
/// stays in `cs3`): `filePath`; the peer of a connect or send as
/// `dst`/`dpt`/`dhost`, of an accept as `src`/`spt`/`shost`, a local
/// bind or listen as `dpt` (the port offered).
fn evidence_keys(e: &serde_json::Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let text = |k: &str| e[k].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    if let Some(p) = text("path") {
        out.push(("filePath", p));
    }
    let port = e["port"].as_u64().filter(|p| *p > 0).map(|p| p.to_string());
    let (ip, port_key, host) = match e["op"].as_str() {
        Some("accept") => ("src", "spt", "shost"),
        Some("bind" | "listen") => {
            out.extend(port.map(|p| ("dpt", p)));
            return out;
        }
        _ => ("dst", "dpt", "dhost"),
    };
    if let Some(a) = text("address") {
        out.push((ip, a));
        out.extend(port.map(|p| (port_key, p)));
    }
    if let Some(h) = text("hostname") {
        out.push((host, h));
    }
    out
}

/// A CEF line read back: header fields and extension pairs, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// `CEF:0`, vendor, product, version, signature id, name, severity.
    pub header: Vec<String>,
    pub extension: Vec<(String, String)>,
}

impl Parsed {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.extension.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Splits a CEF line back into its 7 header fields and its extension pairs:
/// the reading side of the rules above.
pub fn parse(line: &str) -> Option<Parsed> {
    let mut header = Vec::new();
    let mut cur = String::new();
    let mut chars = line.char_indices();
    let mut ext_start = None;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => cur.push(chars.next()?.1),
            '|' => {
                header.push(std::mem::take(&mut cur));
                if header.len() == 7 {
                    ext_start = Some(i + 1);
                    break;
                }
            }
            c => cur.push(c),
        }
    }
    let ext = &line[ext_start?..];
    // Keys are `[A-Za-z0-9]+=` preceded by a space (or the start); an
    // unescaped `=` only ever follows a key.
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut value = String::new();
    let mut key: Option<String> = None;
    let mut word = String::new();
    let mut chars = ext.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let e = chars.next()?;
                word.push(match e {
                    'n' => '\n',
                    'r' => '\r',
                    e => e,
                });
            }
            '=' => {
                // `word` is the new key; what came before it is the previous value.
                if let Some(k) = key.take() {
                    pairs.push((k, value.trim_end_matches(' ').to_owned()));
                }
                value.clear();
                key = Some(std::mem::take(&mut word));
            }
            ' ' => {
                value.push_str(&word);
                value.push(' ');
                word.clear();
            }
            c => word.push(c),
        }
    }
    value.push_str(&word);
    if let Some(k) = key {
        pairs.push((k, value));
    }
    Some(Parsed {
        header,
        extension: pairs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::format::ecs::tests::full_alert;

    #[test]
    fn peers_go_to_cefs_own_keys_by_direction() {
        let mut a = full_alert();
        a.evidence = serde_json::json!({"op": "connect", "address": "10.0.0.9", "port": 443, "hostname": "x.example"});
        a.would_block = true;
        let p = parse(&format(&a)).unwrap();
        assert_eq!(
            [p.get("dst"), p.get("dpt"), p.get("dhost"), p.get("act")],
            [Some("10.0.0.9"), Some("443"), Some("x.example"), Some("would_block")]
        );
        a.evidence = serde_json::json!({"op": "accept", "address": "10.0.0.8", "port": 5000});
        let p = parse(&format(&a)).unwrap();
        assert_eq!(
            [p.get("src"), p.get("spt"), p.get("dst")],
            [Some("10.0.0.8"), Some("5000"), None]
        );
        a.evidence = serde_json::json!({"op": "listen", "address": "0.0.0.0", "port": 8080});
        let p = parse(&format(&a)).unwrap();
        assert_eq!([p.get("dpt"), p.get("dst"), p.get("src")], [Some("8080"), None, None]);
        a.exe = String::new();
        assert_eq!(parse(&format(&a)).unwrap().get("sproc"), None, "no empty sproc");
    }

    #[test]
    fn escapes_header_and_extension_per_the_rules() {
        assert_eq!(escape_header(r"a|b\c=d"), r"a\|b\\c=d");
        assert_eq!(escape_value("a|b\\c=d\ne"), r"a|b\\c\=d\ne");
        let mut a = full_alert();
        a.rule = "rule|with\\pipe".into();
        a.summary = "x=1 | y\\z\nnext".into();
        let line = format(&a);
        assert!(line.starts_with(r"CEF:0|mcpwatch|mcpwatch|"), "{line}");
        assert!(line.contains(r"|rule\|with\\pipe|x=1 \| y\\z next|8|"), "{line}");
        assert!(line.contains(r"msg=x\=1 | y\\z\nnext "), "{line}");
        assert!(!line.contains('\n'));
        // Every unescaped `=` in the extension follows a key.
        let parsed = parse(&line).expect("parses");
        let header = &parsed.header;
        assert_eq!(header[0], "CEF:0");
        assert_eq!(header[4], "rule|with\\pipe");
        assert_eq!(header[5], "x=1 | y\\z next");
        assert_eq!(header[6], "8");
        let get = |k: &str| parsed.get(k);
        assert_eq!(get("msg"), Some("x=1 | y\\z\nnext"));
        assert_eq!(get("externalId"), Some("123-4"));
        assert_eq!(get("cs1"), Some("fs"));
        assert_eq!(get("cs3"), Some(r#"{"path":"/home/u/.ssh/id_rsa"}"#));
        assert_eq!(get("cs6"), Some("T1552.004 Unsecured Credentials: Private Keys"));
        assert_eq!(get("rt"), Some("1795280400000"));
        assert_eq!(get("filePath"), Some("/home/u/.ssh/id_rsa"));
        assert_eq!(get("act"), Some("would_block"), "full_alert is an audit-mode alert");
        assert_eq!(get("cat"), Some("rule|with\\pipe"));
        assert!(
            parsed
                .extension
                .iter()
                .all(|(k, _)| k.chars().all(|c| c.is_ascii_alphanumeric()))
        );
    }
}
