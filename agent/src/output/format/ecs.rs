//! The alert as an Elastic Common Schema (ECS 8.11) document: what the JSON
//! lines sink, the syslog JSON message and the webhooks carry. Fields ECS has
//! no name for live under `mcpwatch.*` (custom fields, as ECS advises). The
//! mapping is lossless: [`from_ecs`] gives the original alert back (the
//! README has the table).

use serde_json::{Map, Value, json};

use crate::alerts::{Alert, AlertAncestor, Mitre, Severity};

pub const ECS_VERSION: &str = "8.11.0";

/// ECS `event.severity` (numeric, higher is worse) for a severity.
pub fn severity_number(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 21,
        Severity::Medium => 47,
        Severity::High => 73,
        Severity::Critical => 99,
    }
}

pub fn to_ecs(a: &Alert) -> Value {
    let mut mcp = Map::new();
    mcp.insert("ktime_ns".into(), json!(a.ktime_ns));
    mcp.insert("count".into(), json!(a.count));
    mcp.insert("evidence".into(), a.evidence.clone());
    if !a.ancestry.is_empty() {
        mcp.insert("ancestry".into(), json!(a.ancestry));
    }
    for (k, v) in [
        ("manifest", &a.manifest),
        ("tool", &a.tool),
        ("call_id", &a.call_id),
        ("repeat_of", &a.repeat_of),
    ] {
        if let Some(v) = v {
            mcp.insert(k.into(), json!(v));
        }
    }
    if let Some(d) = &a.declared {
        mcp.insert("declared".into(), d.clone());
    }
    if a.would_block {
        mcp.insert("would_block".into(), json!(true));
    }
    if let Some(l) = a.layer {
        mcp.insert("layer".into(), json!(l));
    }
    let mut doc = json!({
        "@timestamp": a.ts,
        "ecs": { "version": ECS_VERSION },
        "event": {
            "id": a.id,
            "kind": "alert",
            "module": "mcpwatch",
            "dataset": "mcpwatch.alert",
            "severity": severity_number(a.severity),
        },
        "log": { "level": a.severity.as_str() },
        "rule": { "id": a.rule, "ruleset": "mcpwatch" },
        "message": a.summary,
        "host": { "hostname": a.host },
        "process": {
            "pid": a.pid,
            "executable": a.exe,
            "args": a.argv,
            "parent": { "pid": a.ppid },
        },
        "user": { "id": a.uid.to_string() },
        "mcpwatch": mcp,
    });
    if let Some(s) = &a.server {
        doc["service"] = json!({ "name": s });
    }
    if let Some(m) = &a.mitre {
        doc["threat"] = json!({
            "framework": "MITRE ATT&CK",
            "technique": { "id": m.id, "name": m.name },
        });
    }
    doc
}

#[derive(Debug, thiserror::Error)]
#[error("not an mcpwatch ECS alert: field `{0}` missing or of the wrong type")]
pub struct NotAnAlert(pub &'static str);

/// The alert an ECS document was made from.
pub fn from_ecs(doc: &Value) -> Result<Alert, NotAnAlert> {
    let str_at = |ptr: &'static str| doc.pointer(ptr).and_then(Value::as_str).ok_or(NotAnAlert(ptr));
    let u64_at = |ptr: &'static str| doc.pointer(ptr).and_then(Value::as_u64).ok_or(NotAnAlert(ptr));
    let opt_str = |ptr: &str| doc.pointer(ptr).and_then(Value::as_str).map(str::to_owned);
    let severity: Severity =
        serde_json::from_value(json!(str_at("/log/level")?)).map_err(|_| NotAnAlert("/log/level"))?;
    let argv = doc
        .pointer("/process/args")
        .and_then(Value::as_array)
        .ok_or(NotAnAlert("/process/args"))?
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or(NotAnAlert("/process/args")))
        .collect::<Result<Vec<_>, _>>()?;
    let ancestry: Vec<AlertAncestor> = match doc.pointer("/mcpwatch/ancestry") {
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| NotAnAlert("/mcpwatch/ancestry"))?,
        None => Vec::new(),
    };
    let mitre = match (opt_str("/threat/technique/id"), opt_str("/threat/technique/name")) {
        (Some(id), Some(name)) => Some(Mitre { id, name }),
        _ => None,
    };
    Ok(Alert {
        id: str_at("/event/id")?.to_owned(),
        ts: str_at("/@timestamp")?.to_owned(),
        ktime_ns: u64_at("/mcpwatch/ktime_ns")?,
        rule: str_at("/rule/id")?.to_owned(),
        severity,
        summary: str_at("/message")?.to_owned(),
        host: str_at("/host/hostname")?.to_owned(),
        server: opt_str("/service/name"),
        manifest: opt_str("/mcpwatch/manifest"),
        pid: u64_at("/process/pid")? as u32,
        ppid: u64_at("/process/parent/pid")? as u32,
        uid: str_at("/user/id")?.parse().map_err(|_| NotAnAlert("/user/id"))?,
        exe: str_at("/process/executable")?.to_owned(),
        argv,
        ancestry,
        evidence: doc
            .pointer("/mcpwatch/evidence")
            .cloned()
            .ok_or(NotAnAlert("/mcpwatch/evidence"))?,
        declared: doc.pointer("/mcpwatch/declared").cloned(),
        mitre,
        tool: opt_str("/mcpwatch/tool"),
        call_id: opt_str("/mcpwatch/call_id"),
        would_block: doc
            .pointer("/mcpwatch/would_block")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        layer: doc
            .pointer("/mcpwatch/layer")
            .and_then(Value::as_str)
            .and_then(crate::enforce::Layer::parse),
        count: u64_at("/mcpwatch/count")?,
        repeat_of: opt_str("/mcpwatch/repeat_of"),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An alert with every optional field set.
    pub fn full_alert() -> Alert {
        Alert {
            id: "123-4".into(),
            ts: "2026-11-21T17:00:00.000000001Z".into(),
            ktime_ns: 123,
            rule: "cred.ssh_key".into(),
            severity: Severity::High,
            summary: "read ~/.ssh/id_rsa | a=b \\ c".into(),
            host: "h1".into(),
            server: Some("fs".into()),
            manifest: Some("/etc/mcpwatch/manifests/fs.toml".into()),
            pid: 42,
            ppid: 41,
            uid: 1000,
            exe: "/usr/bin/node".into(),
            argv: vec!["node".into(), "server.js".into()],
            ancestry: vec![AlertAncestor {
                pid: 41,
                exe: "/usr/bin/bash".into(),
            }],
            evidence: json!({"path": "/home/u/.ssh/id_rsa"}),
            declared: Some(json!({"read": ["/srv"]})),
            mitre: Some(Mitre {
                id: "T1552.004".into(),
                name: "Unsecured Credentials: Private Keys".into(),
            }),
            tool: Some("read_file".into()),
            call_id: Some("7".into()),
            would_block: true,
            layer: Some(crate::enforce::Layer::Landlock),
            count: 1,
            repeat_of: Some("1-1".into()),
        }
    }

    #[test]
    fn round_trips_full_and_minimal_alerts() {
        let full = full_alert();
        let doc = to_ecs(&full);
        assert_eq!(doc["event"]["severity"], 73);
        assert_eq!(doc["service"]["name"], "fs");
        assert_eq!(doc["user"]["id"], "1000");
        assert_eq!(from_ecs(&doc).unwrap(), full);
        let min = crate::alerts::test_alert("1-1".into(), "t".into(), 1, 9);
        let doc = to_ecs(&min);
        assert!(doc.get("service").is_none() && doc.get("threat").is_none());
        assert_eq!(from_ecs(&doc).unwrap(), min);
    }
}
