//! `mcpwatch report`: per server, its tool calls and what each tool touched —
//! files (with the access), hosts, programs — and its alerts; activity outside
//! any call is grouped apart. Built from the events file, bounded per list.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{filter::Filter, s};

/// Entries kept per list (files, hosts, programs) of one tool; the rest counted.
const LIST_MAX: usize = 50;
/// Where activity outside any tool call is listed.
pub const NO_TOOL: &str = "(outside tool calls)";

#[derive(Default)]
struct Touched {
    calls: BTreeSet<String>,
    files: BTreeMap<String, BTreeSet<String>>,
    hosts: BTreeSet<String>,
    programs: BTreeSet<String>,
    /// (rule, severity) -> count
    alerts: BTreeMap<(String, String), u64>,
    more: u64,
    /// Operations that failed (a library searched for, a refused connect):
    /// counted, not listed as touched.
    failed: u64,
}

impl Touched {
    /// A `touched` summary: its examples listed, the rest counted.
    fn add_touched(&mut self, touched: &Value) {
        let list = |k: &str| touched.get(k).cloned().unwrap_or(Value::Null);
        let count = |l: &Value| l.get("count").and_then(Value::as_u64).unwrap_or(0);
        let first = |l: &Value| l.get("first").and_then(Value::as_array).cloned().unwrap_or_default();
        let files = list("files");
        for f in first(&files) {
            let access = self.files.entry(s(&f, "path").to_owned()).or_default();
            for a in f.get("access").and_then(Value::as_array).into_iter().flatten() {
                access.insert(a.as_str().unwrap_or("").to_owned());
            }
        }
        self.more += count(&files).saturating_sub(first(&files).len() as u64);
        for (k, set) in [("hosts", &mut self.hosts), ("programs", &mut self.programs)] {
            let l = list(k);
            for x in first(&l) {
                set.insert(x.as_str().unwrap_or("").to_owned());
            }
            self.more += count(&l).saturating_sub(first(&l).len() as u64);
        }
        self.failed += touched.get("failed").and_then(Value::as_u64).unwrap_or(0);
    }
}

#[derive(Default)]
struct Server {
    tools: BTreeMap<String, Touched>,
}

#[derive(Default)]
pub struct Report {
    servers: BTreeMap<String, Server>,
}

impl Report {
    pub fn add(&mut self, e: &Value, filter: &Filter) {
        // The report is about servers: lines without one (the agent's own) are left out.
        let server = s(e, "server");
        if server.is_empty() || !filter.wants_server_time(e) {
            return;
        }
        let tool = match s(e, "tool") {
            "" => NO_TOOL,
            t => t,
        };
        let t = self
            .servers
            .entry(server.to_owned())
            .or_default()
            .tools
            .entry(tool.to_owned())
            .or_default();
        if let Some(id) = e.get("call_id").and_then(Value::as_str) {
            t.calls.insert(id.to_owned());
        }
        if e.get("result").and_then(Value::as_i64).is_some_and(|r| r < 0) && s(e, "kind") != "alert" {
            t.failed += 1;
            return;
        }
        if let Some(touched) = e.get("touched") {
            // A summary-level line (`[events] level = "summary"`): what the
            // call or the server touched, as counts and first examples.
            t.add_touched(touched);
        }
        let size = t.files.len() + t.hosts.len() + t.programs.len();
        let full = size >= 3 * LIST_MAX;
        match s(e, "kind") {
            "alert" => {
                *t.alerts
                    .entry((s(e, "rule").to_owned(), s(e, "severity").to_owned()))
                    .or_default() += 1;
            }
            "file" if !s(e, "path").is_empty() => {
                let path = s(e, "path");
                if full && !t.files.contains_key(path) {
                    t.more += 1;
                    return;
                }
                let access = t.files.entry(path.to_owned()).or_default();
                for a in e.get("access").and_then(Value::as_array).into_iter().flatten() {
                    access.insert(a.as_str().unwrap_or("").to_owned());
                }
            }
            "net" if matches!(s(e, "op"), "connect" | "sendto" | "sendmsg") => {
                let host = match (s(e, "hostname"), s(e, "unix_path")) {
                    (_, p) if !p.is_empty() => p.to_owned(),
                    (h, _) => {
                        let port = e.get("port").and_then(Value::as_u64).unwrap_or(0);
                        let name = if h.is_empty() { String::new() } else { format!(" ({h})") };
                        format!("{}:{port}{name}", s(e, "addr"))
                    }
                };
                insert(&mut t.hosts, host, full, &mut t.more);
            }
            "exec" => insert(&mut t.programs, s(e, "exe").to_owned(), full, &mut t.more),
            _ => {}
        }
    }

    pub fn to_json(&self) -> Value {
        let servers: Vec<Value> = self
            .servers
            .iter()
            .map(|(name, srv)| {
                let tools: Vec<Value> = srv
                    .tools
                    .iter()
                    .map(|(tool, t)| {
                        json!({
                            "tool": tool,
                            "calls": t.calls.len(),
                            "files": t.files.iter().map(|(p, a)| json!({"path": p, "access": a})).collect::<Vec<_>>(),
                            "hosts": t.hosts,
                            "programs": t.programs,
                            "alerts": alerts_json(&t.alerts),
                            "not_listed": t.more,
                            "failed": t.failed,
                        })
                    })
                    .collect();
                let mut all = BTreeMap::new();
                for t in srv.tools.values() {
                    for (k, n) in &t.alerts {
                        *all.entry(k.clone()).or_default() += n;
                    }
                }
                let calls: usize = srv
                    .tools
                    .iter()
                    .filter(|(t, _)| t.as_str() != NO_TOOL)
                    .map(|(_, t)| t.calls.len())
                    .sum();
                json!({ "server": name, "tool_calls": calls, "alerts": alerts_json(&all), "tools": tools })
            })
            .collect();
        json!({ "servers": servers })
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let j = self.to_json();
        for srv in j["servers"].as_array().into_iter().flatten() {
            let alerts: u64 = srv["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| a["count"].as_u64().unwrap_or(0))
                .sum();
            out += &format!(
                "server {}: {}, {}\n",
                s(srv, "server"),
                plural(srv["tool_calls"].as_u64().unwrap_or(0), "tool call"),
                plural(alerts, "alert")
            );
            for a in srv["alerts"].as_array().into_iter().flatten() {
                out += &format!("  alert {} ({}) x{}\n", s(a, "rule"), s(a, "severity"), a["count"]);
            }
            for t in srv["tools"].as_array().into_iter().flatten() {
                match s(t, "tool") {
                    NO_TOOL => out += &format!("  {NO_TOOL}\n"),
                    name => out += &format!("  tool {name}: {}\n", plural(t["calls"].as_u64().unwrap_or(0), "call")),
                }
                for f in t["files"].as_array().into_iter().flatten() {
                    let access: Vec<&str> = f["access"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    out += &format!("    file    {} {}\n", access.join(","), s(f, "path"));
                }
                for h in t["hosts"].as_array().into_iter().flatten() {
                    out += &format!("    host    {}\n", h.as_str().unwrap_or(""));
                }
                for p in t["programs"].as_array().into_iter().flatten() {
                    out += &format!("    program {}\n", p.as_str().unwrap_or(""));
                }
                for a in t["alerts"].as_array().into_iter().flatten() {
                    out += &format!("    alert   {} ({}) x{}\n", s(a, "rule"), s(a, "severity"), a["count"]);
                }
                if t["failed"].as_u64().unwrap_or(0) > 0 {
                    out += &format!("    ({} failed operations not listed)\n", t["failed"]);
                }
                if t["not_listed"].as_u64().unwrap_or(0) > 0 {
                    out += &format!("    ... and {} more not listed\n", t["not_listed"]);
                }
            }
        }
        if out.is_empty() {
            out = "no server activity in these events\n".to_owned();
        }
        out
    }
}

fn plural(n: u64, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

fn insert(set: &mut BTreeSet<String>, v: String, full: bool, more: &mut u64) {
    if full && !set.contains(&v) {
        *more += 1;
    } else {
        set.insert(v);
    }
}

fn alerts_json(a: &BTreeMap<(String, String), u64>) -> Vec<Value> {
    a.iter()
        .map(|((rule, sev), n)| json!({"rule": rule, "severity": sev, "count": n}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tool_gets_what_it_touched_and_the_rest_is_apart() {
        let lines = [
            json!({"kind": "exec", "server": "fs", "exe": "/usr/bin/git", "tool": "log", "call_id": "1"}),
            json!({"kind": "file", "server": "fs", "path": "/r/.git/HEAD", "access": ["read"], "tool": "log", "call_id": "1"}),
            json!({"kind": "file", "server": "fs", "path": "/r/.git/HEAD", "access": ["write"], "tool": "log", "call_id": "2"}),
            json!({"kind": "net", "server": "fs", "op": "connect", "addr": "1.2.3.4", "port": 443, "hostname": "x.test"}),
            json!({"kind": "file", "server": "fs", "path": "/lib/x.so", "access": ["read"], "result": -2}),
            json!({"kind": "alert", "server": "fs", "rule": "net.connect_undeclared", "severity": "medium"}),
            json!({"kind": "alert", "rule": "agent.heartbeat", "severity": "info"}),
        ];
        let mut r = Report::default();
        for l in &lines {
            r.add(l, &Filter::default());
        }
        let j = r.to_json();
        let srv = &j["servers"][0];
        assert_eq!(
            j["servers"].as_array().unwrap().len(),
            1,
            "the agent's own lines are left out"
        );
        assert_eq!(srv["tool_calls"], 2);
        let log = &srv["tools"][1];
        assert_eq!(log["tool"], "log");
        assert_eq!(
            log["files"][0],
            json!({"path": "/r/.git/HEAD", "access": ["read", "write"]})
        );
        assert_eq!(log["programs"], json!(["/usr/bin/git"]));
        assert_eq!(srv["tools"][0]["tool"], NO_TOOL);
        assert_eq!(srv["tools"][0]["hosts"], json!(["1.2.3.4:443 (x.test)"]));
        assert_eq!(srv["tools"][0]["files"], json!([]), "a failed open touched nothing");
        assert_eq!(srv["tools"][0]["failed"], 1);
        assert_eq!(srv["alerts"][0]["count"], 1);
        let text = r.to_text();
        assert!(text.starts_with("server fs: 2 tool calls, 1 alert\n"), "{text}");
        assert!(
            text.contains("  tool log: 2 calls\n    file    read,write /r/.git/HEAD\n"),
            "{text}"
        );
    }

    #[test]
    fn lists_are_bounded_and_count_the_rest() {
        let mut r = Report::default();
        for i in 0..(3 * LIST_MAX + 7) {
            r.add(
                &json!({"kind": "file", "server": "s", "path": format!("/f{i}"), "access": ["read"]}),
                &Filter::default(),
            );
        }
        let j = r.to_json();
        assert_eq!(
            j["servers"][0]["tools"][0]["files"].as_array().unwrap().len(),
            3 * LIST_MAX
        );
        assert_eq!(j["servers"][0]["tools"][0]["not_listed"], 7);
    }
}
