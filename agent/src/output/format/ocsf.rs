//! The Open Cybersecurity Schema Framework (OCSF 1.6.0), the schema of AWS
//! Security Lake and of newer SIEMs: an alert is a Detection Finding (class
//! 2004); an event line is the System or Network Activity class it matches
//! (Process 1007, File System 1001, Network 4001, DNS 4003), or a Base Event
//! (class 0) carrying the native line in `unmapped` when OCSF has no class
//! for it (MCP messages, loss reports, risky syscalls...). What OCSF has no
//! attribute for goes under `unmapped`, as OCSF advises. The README has the
//! mapping table; tests/tests/sink_ocsf.rs checks real documents against a
//! pinned copy of the schema.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use crate::alerts::{Alert, Severity};

pub const OCSF_VERSION: &str = "1.6.0";

/// OCSF `severity_id` and its caption.
fn severity(s: Severity) -> (u8, &'static str) {
    match s {
        Severity::Info => (1, "Informational"),
        Severity::Low => (2, "Low"),
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
        Severity::Critical => (5, "Critical"),
    }
}

/// Milliseconds since the epoch (OCSF `timestamp_t`) of an RFC 3339 time.
fn epoch_ms(ts: &str) -> u64 {
    humantime::parse_rfc3339(ts)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(crate::alerts::hostname)
}

/// `metadata`: the schema version, the product, the profiles in use.
fn metadata(profiles: &[&str], uid: Option<&str>, event_code: &str) -> Value {
    let mut m = json!({
        "version": OCSF_VERSION,
        "product": {
            "name": "mcpwatch",
            "vendor_name": "mcpwatch",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "profiles": profiles,
        "event_code": event_code,
    });
    if let Some(uid) = uid {
        m["uid"] = json!(uid);
    }
    m
}

/// `device`: this host, and the agent (its stable id) in `agent_list`.
fn device(hostname: &str) -> Value {
    let mut agent = json!({
        "name": "mcpwatch",
        "vendor_name": "mcpwatch",
        "version": env!("CARGO_PKG_VERSION"),
        "type_id": 1,
        "type": "Endpoint Detection and Response",
    });
    if let Some(id) = crate::output::agent_id::get() {
        agent["uid"] = json!(id);
    }
    json!({ "hostname": hostname, "type_id": 0, "type": "Unknown", "agent_list": [agent] })
}

/// A `file` object for a path (its kind is not known: `type_id` 0).
fn file(path: &str) -> Value {
    let name = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path);
    json!({ "path": path, "name": name, "type_id": 0, "type": "Unknown" })
}

/// A `process` object: pid, executable, command line, user, parent.
fn process(pid: u64, ppid: u64, uid: u64, exe: &str, argv: &[&str]) -> Value {
    let mut p = json!({
        "pid": pid,
        "user": { "uid": uid.to_string() },
        "parent_process": { "pid": ppid },
    });
    if !exe.is_empty() {
        p["path"] = json!(exe);
        p["name"] = json!(exe.rsplit('/').next().unwrap_or(exe));
        p["file"] = file(exe);
    }
    if !argv.is_empty() {
        p["cmd_line"] = json!(argv.join(" "));
    }
    p
}

/// The MITRE technique as an OCSF `attack` (a sub-technique in its own
/// object, as in ECS).
fn attack(id: &str, name: &str) -> Value {
    match (id.split_once('.'), name.split_once(": ")) {
        (Some((tid, _)), Some((tname, sname))) => json!({
            "technique": { "uid": tid, "name": tname },
            "sub_technique": { "uid": id, "name": sname },
        }),
        (Some((tid, _)), None) => json!({
            "technique": { "uid": tid },
            "sub_technique": { "uid": id, "name": name },
        }),
        _ => json!({ "technique": { "uid": id, "name": name } }),
    }
}

/// The peer of a network evidence or event as a `network_endpoint`.
fn endpoint(addr: Option<&str>, port: Option<u64>, hostname: Option<&str>) -> Option<Value> {
    let mut e = Map::new();
    if let Some(ip) = addr.filter(|a| a.parse::<std::net::IpAddr>().is_ok()) {
        e.insert("ip".into(), json!(ip));
    }
    if let Some(p) = port.filter(|p| *p > 0) {
        e.insert("port".into(), json!(p));
    }
    if let Some(h) = hostname.filter(|h| !h.is_empty()) {
        e.insert("hostname".into(), json!(h));
    }
    (!e.is_empty()).then_some(Value::Object(e))
}

/// An alert as an OCSF Detection Finding.
pub fn from_alert(a: &Alert) -> Value {
    let (severity_id, severity_name) = severity(a.severity);
    let family = a.rule.split('.').next().unwrap_or_default();
    let time = epoch_ms(&a.ts);
    let mut finding = json!({
        "uid": a.id,
        "title": a.summary,
        "types": [family],
        "created_time": time,
        "analytic": { "uid": a.rule, "name": a.rule, "category": family, "type_id": 1, "type": "Rule" },
    });
    if let Some(m) = &a.mitre {
        finding["attacks"] = json!([attack(&m.id, &m.name)]);
    }
    // An enforced denial was blocked; the rest were seen (and in audit
    // mode would have been blocked: `unmapped.would_block`).
    let denied = a.rule == crate::alerts::rules::ENFORCE_DENIED.id;
    let (action_id, action, disposition_id, disposition) = if denied {
        (2, "Denied", 2, "Blocked")
    } else {
        (3, "Observed", 15, "Detected")
    };
    let mut doc = json!({
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": 200401,
        "type_name": "Detection Finding: Create",
        "time": time,
        "severity_id": severity_id,
        "severity": severity_name,
        "status_id": 1,
        "status": "New",
        "message": a.summary,
        "count": a.count,
        "is_alert": true,
        "action_id": action_id,
        "action": action,
        "disposition_id": disposition_id,
        "disposition": disposition,
        "finding_info": finding,
        "metadata": metadata(&["host", "security_control"], Some(&a.id), &a.rule),
        "device": device(&a.host),
    });
    // The agent's own alerts have no process.
    if a.pid != 0 || !a.exe.is_empty() {
        let argv: Vec<&str> = a.argv.iter().map(String::as_str).collect();
        let p = process(a.pid.into(), a.ppid.into(), a.uid.into(), &a.exe, &argv);
        let mut actor = json!({ "process": p });
        if let Some(s) = &a.server {
            actor["app_name"] = json!(s);
        }
        doc["actor"] = actor;
    }
    let e = &a.evidence;
    let text = |k: &str| e[k].as_str().filter(|s| !s.is_empty());
    let mut evidence = json!({ "data": e });
    if let Some(p) = text("path") {
        evidence["file"] = file(p);
    }
    let peer = endpoint(text("address"), e["port"].as_u64(), text("hostname"));
    match (e["op"].as_str(), peer) {
        (Some("accept"), Some(p)) => evidence["src_endpoint"] = p,
        (Some("bind" | "listen"), _) | (_, None) => {}
        (_, Some(p)) => evidence["dst_endpoint"] = p,
    }
    doc["evidences"] = json!([evidence]);
    let mut unmapped = Map::new();
    unmapped.insert("ktime_ns".into(), json!(a.ktime_ns));
    for (k, v) in [
        ("server", &a.server),
        ("manifest", &a.manifest),
        ("tool", &a.tool),
        ("call_id", &a.call_id),
        ("repeat_of", &a.repeat_of),
    ] {
        if let Some(v) = v {
            unmapped.insert(k.into(), json!(v));
        }
    }
    if let Some(d) = &a.declared {
        unmapped.insert("declared".into(), d.clone());
    }
    if !a.ancestry.is_empty() {
        unmapped.insert("ancestry".into(), json!(a.ancestry));
    }
    if a.would_block {
        unmapped.insert("would_block".into(), json!(true));
    }
    if let Some(l) = a.layer {
        unmapped.insert("layer".into(), json!(l));
    }
    doc["unmapped"] = Value::Object(unmapped);
    doc
}

/// The class, category and activity of an event line.
struct Class {
    uid: u32,
    name: &'static str,
    category: (u32, &'static str),
    activity: (u32, &'static str),
}

const SYSTEM: (u32, &str) = (1, "System Activity");
const NETWORK: (u32, &str) = (4, "Network Activity");

fn class_of(kind: &str, op: &str, dns_direction: &str) -> Class {
    let c = |uid, name, category, activity| Class {
        uid,
        name,
        category,
        activity,
    };
    match kind {
        "exec" | "fork" => c(1007, "Process Activity", SYSTEM, (1, "Launch")),
        "exit" => c(1007, "Process Activity", SYSTEM, (2, "Terminate")),
        "file" => c(
            1001,
            "File System Activity",
            SYSTEM,
            match op {
                "open" => (14, "Open"),
                "truncate" => (3, "Update"),
                "rename" => (5, "Rename"),
                "unlink" => (4, "Delete"),
                "mkdir" | "link" | "symlink" => (1, "Create"),
                "chmod" | "chown" => (7, "Set Security"),
                _ => (99, "Other"),
            },
        ),
        "net" => c(
            4001,
            "Network Activity",
            NETWORK,
            match op {
                "connect" | "accept" => (1, "Open"),
                "bind" | "listen" => (7, "Listen"),
                "sendto" | "sendmsg" | "recvfrom" | "recvmsg" => (6, "Traffic"),
                _ => (99, "Other"),
            },
        ),
        "dns" if dns_direction == "answer" => c(4003, "DNS Activity", NETWORK, (2, "Response")),
        "dns" => c(4003, "DNS Activity", NETWORK, (1, "Query")),
        _ => c(0, "Base Event", (0, "Uncategorized"), (99, "Other")),
    }
}

/// An event line (the agent's own form, `output::events::Record`, as JSON)
/// in the OCSF class that matches its kind.
pub fn from_event(n: &Value) -> Value {
    let s = |k: &str| n[k].as_str().unwrap_or_default();
    let u = |k: &str| n[k].as_u64().unwrap_or_default();
    let kind = s("kind");
    let op = s("op");
    let class = class_of(kind, op, n["dns"]["direction"].as_str().unwrap_or_default());
    let mut doc = json!({
        "class_uid": class.uid,
        "class_name": class.name,
        "category_uid": class.category.0,
        "category_name": class.category.1,
        "activity_id": class.activity.0,
        "activity_name": if class.activity.0 == 99 && class.uid == 0 { kind } else { class.activity.1 },
        "type_uid": u64::from(class.uid) * 100 + u64::from(class.activity.0),
        "type_name": format!("{}: {}", class.name, class.activity.1),
        "time": epoch_ms(s("ts")),
        "severity_id": 1,
        "severity": "Informational",
        "metadata": metadata(&["host"], None, kind),
        "device": device(host()),
    });
    let argv: Vec<&str> = n["argv"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let me = process(u("pid"), u("ppid"), u("uid"), s("exe"), &argv);
    let mut actor = json!({ "process": me });
    if let Some(server) = n["server"].as_str() {
        actor["app_name"] = json!(server);
    }
    match n["result"].as_i64() {
        Some(r) if r < 0 => {
            doc["status_id"] = json!(2);
            doc["status"] = json!("Failure");
            doc["status_detail"] = json!(s("error"));
        }
        Some(_) => {
            doc["status_id"] = json!(1);
            doc["status"] = json!("Success");
        }
        None => {}
    }
    match class.uid {
        1007 => {
            let mut p = actor["process"].clone();
            if kind == "fork" {
                // The new process is the child; the parent launched it.
                p = json!({ "pid": u("child_pid"), "parent_process": { "pid": u("pid") } });
            }
            if let Some(cwd) = n["cwd"].as_str() {
                p["working_directory"] = json!(cwd);
            }
            if let Some(tid) = n["tid"].as_u64() {
                p["tid"] = json!(tid);
            }
            if kind == "exec" {
                // The launcher is the parent, known by its pid.
                actor["process"] = json!({ "pid": u("ppid") });
            }
            if let Some(code) = n["exit_code"].as_i64() {
                doc["exit_code"] = json!(code);
            }
            doc["process"] = p;
        }
        1001 => {
            let path = n["path"].as_str().or(n["path_as_given"].as_str()).unwrap_or_default();
            doc["file"] = file(path);
            if let Some(to) = n["path2"].as_str().filter(|p| !p.is_empty()) {
                doc["file_result"] = file(to);
            }
        }
        4001 | 4003 => {
            let peer = endpoint(n["addr"].as_str(), n["port"].as_u64(), n["hostname"].as_str());
            let (direction, side) = match op {
                "accept" | "recvfrom" | "recvmsg" => ((1, "Inbound"), "src_endpoint"),
                "bind" | "listen" => ((0, "Unknown"), "src_endpoint"),
                _ => ((2, "Outbound"), "dst_endpoint"),
            };
            if let Some(p) = peer {
                doc[side] = p;
            }
            let mut conn = json!({ "direction_id": direction.0, "direction": direction.1 });
            if let Some(proto) = n["proto"].as_str() {
                conn["protocol_name"] = json!(proto);
            }
            if class.uid == 4001 || n["proto"].is_string() {
                doc["connection_info"] = conn;
            }
            if class.uid == 4003 {
                let d = &n["dns"];
                doc["query"] = json!({ "hostname": d["name"], "type": d["qtype"], "packet_uid": d["id"] });
                if let Some(answers) = d["answers"].as_array() {
                    doc["answers"] = answers
                        .iter()
                        .map(|a| json!({ "rdata": a, "packet_uid": d["id"] }))
                        .collect();
                }
            }
        }
        _ => {}
    }
    doc["actor"] = actor;
    // Everything else the native line says, under `unmapped`.
    let mut unmapped = n.as_object().cloned().unwrap_or_default();
    for k in ["ts", "pid", "ppid", "uid", "exe", "argv", "server"] {
        unmapped.remove(k);
    }
    doc["unmapped"] = Value::Object(unmapped);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::format::ecs::tests::full_alert;

    #[test]
    fn an_alert_is_a_detection_finding_with_its_technique_and_evidence() {
        let a = full_alert();
        let d = from_alert(&a);
        assert_eq!(d["class_uid"], 2004);
        assert_eq!(d["type_uid"], 200401);
        assert_eq!(d["finding_info"]["uid"], a.id.as_str());
        assert_eq!(d["finding_info"]["analytic"]["uid"], a.rule.as_str());
        assert_eq!(d["metadata"]["version"], OCSF_VERSION);
        assert_eq!(d["severity_id"], 4, "{d}");
        assert!(d["time"].as_u64().unwrap() > 1_700_000_000_000);
        assert_eq!(d["actor"]["process"]["pid"], a.pid);
    }

    #[test]
    fn events_get_their_class_and_activity() {
        let ev = |v: Value| from_event(&v);
        let exec = ev(
            json!({"ts": "2026-11-21T17:00:00Z", "kind": "exec", "pid": 5, "ppid": 1, "uid": 0,
            "exe": "/bin/sh", "argv": ["sh", "-c", "x"]}),
        );
        assert_eq!(
            (exec["class_uid"].as_u64(), exec["type_uid"].as_u64()),
            (Some(1007), Some(100701))
        );
        assert_eq!(exec["process"]["cmd_line"], "sh -c x");
        let f = ev(
            json!({"ts": "2026-11-21T17:00:00Z", "kind": "file", "op": "unlink", "path": "/tmp/a", "result": -2, "error": "ENOENT"}),
        );
        assert_eq!(
            (f["type_uid"].as_u64(), f["status_id"].as_u64()),
            (Some(100104), Some(2))
        );
        assert_eq!(f["file"]["name"], "a");
        let n = ev(
            json!({"ts": "2026-11-21T17:00:00Z", "kind": "net", "op": "connect", "addr": "10.0.0.1", "port": 443, "proto": "tcp"}),
        );
        assert_eq!(n["type_uid"], 400101);
        assert_eq!(n["dst_endpoint"], json!({"ip": "10.0.0.1", "port": 443}));
        let d = ev(
            json!({"ts": "2026-11-21T17:00:00Z", "kind": "dns", "dns": {"direction": "answer", "id": 7, "name": "x.org", "qtype": "A", "answers": ["1.2.3.4"]}}),
        );
        assert_eq!(d["type_uid"], 400302);
        assert_eq!(d["answers"][0]["rdata"], "1.2.3.4");
        let other = ev(json!({"ts": "2026-11-21T17:00:00Z", "kind": "tool_call", "tool": "t"}));
        assert_eq!(
            (other["class_uid"].as_u64(), other["type_uid"].as_u64()),
            (Some(0), Some(99))
        );
        assert_eq!(other["unmapped"]["tool"], "t");
    }
}
