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
    let (category, kind) = category_and_type(a);
    let family = a.rule.split('.').next().unwrap_or_default();
    let mut doc = json!({
        "@timestamp": a.ts,
        "ecs": { "version": ECS_VERSION },
        "event": {
            "id": a.id,
            "kind": "alert",
            "category": [category],
            "type": [kind],
            "action": a.rule,
            "outcome": outcome(a),
            "module": "mcpwatch",
            "dataset": "mcpwatch.alert",
            "severity": severity_number(a.severity),
        },
        "agent": agent(),
        "log": { "level": a.severity.as_str() },
        "rule": { "id": a.rule, "name": a.rule, "category": family, "ruleset": "mcpwatch" },
        "message": a.summary,
        "host": { "hostname": a.host, "name": a.host },
        "process": {
            "pid": a.pid,
            "args": a.argv,
            "parent": { "pid": a.ppid },
        },
        "user": { "id": a.uid.to_string() },
        "mcpwatch": mcp,
    });
    // The agent's own alerts have no process: no empty executable.
    if !a.exe.is_empty() {
        doc["process"]["executable"] = json!(a.exe);
        let name = a.exe.rsplit('/').next().unwrap_or(&a.exe);
        doc["process"]["name"] = json!(name);
    }
    if let Some(s) = &a.server {
        doc["service"] = json!({ "name": s });
    }
    add_evidence_fields(&mut doc, &a.evidence);
    if let Some(m) = &a.mitre {
        // `T1059.004 "Command and Scripting Interpreter: Unix Shell"`: the
        // technique and its sub-technique, each where ECS wants it.
        let (tid, sub) = match m.id.split_once('.') {
            Some((t, _)) => (t, Some(m.id.as_str())),
            None => (m.id.as_str(), None),
        };
        let (tname, sname) = match (sub, m.name.split_once(": ")) {
            (Some(_), Some((t, s))) => (t, Some(s)),
            _ => (m.name.as_str(), None),
        };
        let mut technique = json!({ "id": [tid], "name": [tname] });
        if let Some(sub) = sub {
            technique["subtechnique"] = json!({ "id": [sub] });
            if let Some(n) = sname {
                technique["subtechnique"]["name"] = json!([n]);
            }
        }
        doc["threat"] = json!({ "framework": "MITRE ATT&CK", "technique": technique });
    }
    doc
}

/// ECS `agent`: this program, and its id when it has one.
fn agent() -> Value {
    let mut agent = json!({ "type": "mcpwatch", "name": "mcpwatch", "version": env!("CARGO_PKG_VERSION") });
    if let Some(id) = crate::output::agent_id::get() {
        agent["id"] = json!(id);
    }
    agent
}

/// An event line (a sink at `level = "summary"`) as an ECS event:
/// `event.kind` "event", `event.action` the line's kind, the process and
/// service ECS has fields for, and the whole line under `mcpwatch`.
pub fn from_event(line: &Value, host: &str) -> Value {
    let mut doc = json!({
        "@timestamp": line["ts"],
        "ecs": { "version": ECS_VERSION },
        "event": {
            "kind": "event",
            "action": line["kind"],
            "module": "mcpwatch",
            "dataset": "mcpwatch.event",
        },
        "agent": agent(),
        "host": { "hostname": host, "name": host },
        "mcpwatch": line,
    });
    if let Some(pid) = line["pid"].as_u64().filter(|p| *p > 0) {
        doc["process"] = json!({ "pid": pid });
        if let Some(exe) = line["exe"].as_str().filter(|e| !e.is_empty()) {
            doc["process"]["executable"] = json!(exe);
        }
    }
    if let Some(s) = line["server"].as_str() {
        doc["service"] = json!({ "name": s });
    }
    doc
}

/// ECS `event.category` and `event.type` (one each, from ECS' allowed
/// values) for the rule's family.
fn category_and_type(a: &Alert) -> (&'static str, &'static str) {
    match a.rule.split('.').next().unwrap_or_default() {
        "file" | "cred" if a.rule.contains("write") => ("file", "change"),
        "file" | "cred" => ("file", "access"),
        "net" => ("network", "connection"),
        "exec" => ("process", "start"),
        "proc" | "priv" | "evasion" | "tool" => ("process", "info"),
        "enforce" if a.rule == crate::alerts::rules::ENFORCE_DENIED.id => ("intrusion_detection", "denied"),
        "agent" => ("host", "info"),
        _ => ("intrusion_detection", "info"),
    }
}

/// ECS `event.outcome`: a refused operation failed; an operation whose
/// result the evidence carries succeeded or failed by it; else unknown.
fn outcome(a: &Alert) -> &'static str {
    if a.rule == crate::alerts::rules::ENFORCE_DENIED.id {
        return "failure";
    }
    match a.evidence["result"].as_i64() {
        Some(r) if r < 0 => "failure",
        Some(_) => "success",
        None => "unknown",
    }
}

/// The evidence's file and peer in ECS' own fields (the whole evidence
/// stays under `mcpwatch.evidence`): `file.path`; the peer of a connect or
/// send as `destination.*`, of an accept as `source.*`.
fn add_evidence_fields(doc: &mut Value, e: &Value) {
    let text = |k: &str| e[k].as_str().filter(|s| !s.is_empty());
    if let Some(p) = text("path") {
        doc["file"] = json!({ "path": p });
    }
    let side = match e["op"].as_str() {
        Some("accept") => "source",
        Some("bind" | "listen") | None => return,
        Some(_) => "destination",
    };
    let mut peer = Map::new();
    if let Some(ip) = text("address").filter(|a| a.parse::<std::net::IpAddr>().is_ok()) {
        peer.insert("ip".into(), json!(ip));
        if let Some(port) = e["port"].as_u64().filter(|p| *p > 0) {
            peer.insert("port".into(), json!(port));
        }
    }
    if let Some(h) = text("hostname") {
        peer.insert("domain".into(), json!(h));
    }
    if !peer.is_empty() {
        doc[side] = Value::Object(peer);
    }
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
    let mitre = match (
        opt_str("/threat/technique/id/0"),
        opt_str("/threat/technique/name/0"),
        opt_str("/threat/technique/subtechnique/id/0"),
        opt_str("/threat/technique/subtechnique/name/0"),
    ) {
        (Some(_), Some(name), Some(id), Some(sub)) => Some(Mitre {
            id,
            name: format!("{name}: {sub}"),
        }),
        (Some(_), Some(name), Some(id), None) | (Some(id), Some(name), None, _) => Some(Mitre { id, name }),
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
        exe: opt_str("/process/executable").unwrap_or_default(),
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
        // The sub-technique in its own field, the technique without it.
        assert_eq!(doc["threat"]["technique"]["id"], json!(["T1552"]));
        assert_eq!(doc["threat"]["technique"]["name"], json!(["Unsecured Credentials"]));
        assert_eq!(doc["threat"]["technique"]["subtechnique"]["id"], json!(["T1552.004"]));
        assert_eq!(
            doc["threat"]["technique"]["subtechnique"]["name"],
            json!(["Private Keys"])
        );
        assert_eq!(doc["file"]["path"], "/home/u/.ssh/id_rsa");
        assert_eq!(doc["process"]["name"], "node");
        assert_eq!(doc["host"]["name"], "h1");
        assert_eq!(doc["event"]["category"], json!(["file"]));
        assert_eq!(doc["event"]["action"], "cred.ssh_key");
        assert_eq!(doc["rule"]["name"], "cred.ssh_key");
        let mut net = full.clone();
        net.rule = "net.connect_undeclared".into();
        net.evidence =
            json!({"op": "connect", "address": "10.1.2.3", "port": 443, "hostname": "x.example", "result": -111});
        let doc = to_ecs(&net);
        assert_eq!(
            doc["destination"],
            json!({"ip": "10.1.2.3", "port": 443, "domain": "x.example"})
        );
        assert_eq!(doc["event"]["outcome"], "failure");
        assert_eq!(from_ecs(&doc).unwrap(), net);
        let min = crate::alerts::test_alert("1-1".into(), "t".into(), 1, 9);
        let doc = to_ecs(&min);
        assert!(doc.get("service").is_none() && doc.get("threat").is_none());
        assert!(doc["process"].get("executable").is_none(), "no empty executable: {doc}");
        assert_eq!(from_ecs(&doc).unwrap(), min);
    }
}
