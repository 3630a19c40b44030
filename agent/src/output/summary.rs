//! The `summary` events level: instead of one line per file, connection and
//! program, one `touched` summary per MCP tool call (added to its `tool_call`
//! line) and per server exit (an `activity` line): counts and the first
//! examples of the files, hosts and programs, and of failed operations. The
//! lines `mcpwatch report` reads are kept, so it works from such a file.
//!
//! A first `npx -y` launch writes about 16,000 lines at `all`; at `summary`
//! it is a few dozen (README, Reading the output).

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::{Value, json};

use super::events::Record;

/// Examples kept per list.
const EXAMPLES: usize = 5;
/// Distinct entries counted per list; past it the count is a lower bound.
const DISTINCT_MAX: usize = 4096;
/// Open summaries (calls and servers) at most; past it activity of a new
/// call goes to its server's summary outside calls.
const OPEN_MAX: usize = 4096;
/// Where activity outside any tool call is summed up.
const NO_CALL: &str = "";

/// The OS events summarised at this level rather than written.
fn summarised(kind: &str) -> bool {
    matches!(kind, "file" | "net" | "dns" | "exec" | "fork" | "exit" | "risky")
}

#[derive(Default, Serialize)]
struct List {
    /// Distinct entries (at least, when `capped`).
    count: usize,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    capped: bool,
    first: Vec<Value>,
    #[serde(skip)]
    seen: HashSet<String>,
}

impl List {
    fn add(&mut self, key: String, example: impl FnOnce() -> Value) {
        if self.seen.contains(&key) {
            return;
        }
        if self.seen.len() >= DISTINCT_MAX {
            self.capped = true;
            return;
        }
        if self.first.len() < EXAMPLES {
            self.first.push(example());
        }
        self.seen.insert(key);
        self.count += 1;
    }
}

/// What one call (or a server outside calls) touched.
#[derive(Default, Serialize)]
pub struct Touched {
    /// OS events summed up here.
    events: u64,
    files: List,
    hosts: List,
    programs: List,
    /// Operations that failed (a library searched for, a refused connect).
    failed: u64,
    #[serde(skip)]
    tool: Option<String>,
}

impl Touched {
    fn add(&mut self, r: &Record<'_>) {
        self.events += 1;
        if r.result.is_some_and(|x| x < 0) {
            self.failed += 1;
            return;
        }
        match r.kind {
            "file" => {
                if let Some(p) = &r.path {
                    let access = r.access.map(|a| a.words()).unwrap_or_default();
                    self.files.add(p.to_string(), || json!({ "path": p, "access": access }));
                }
            }
            "net" if matches!(r.op, Some("connect" | "sendto" | "sendmsg")) => {
                let host = match (r.unix_path, &r.addr) {
                    (Some(p), _) => p.to_owned(),
                    (None, Some(a)) => {
                        let name = r.hostname.as_deref().map(|h| format!(" ({h})")).unwrap_or_default();
                        format!("{a}:{}{name}", r.port.unwrap_or(0))
                    }
                    (None, None) => return,
                };
                self.hosts.add(host.clone(), || Value::String(host));
            }
            "exec" => {
                // The exe as written on the line (rendered once, or a plain value).
                let exe = serde_json::to_value(r.exe)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                self.programs.add(exe.clone(), || Value::String(exe));
            }
            _ => {}
        }
    }
}

/// What to write for one record at the `summary` level.
pub enum Verdict {
    /// Nothing: summed up for later.
    Drop,
    /// The record as it is.
    Write,
    /// The record with a `touched` field (a `tool_call` line).
    WriteTouched(Value),
    /// The record, then `activity` lines (a server's root exited).
    WriteThen(Vec<Value>),
}

/// The open summaries, by (server, call id).
#[derive(Default)]
pub struct Summaries {
    open: HashMap<(String, String), Touched>,
    /// Watched roots (their exit ends the server's summary), with their server.
    roots: HashMap<u32, String>,
}

impl Summaries {
    pub fn on(&mut self, r: &Record<'_>) -> Verdict {
        let Some(server) = r.server else {
            return Verdict::Write;
        };
        match r.kind {
            "watch" => {
                self.roots.insert(r.pid, server.to_owned());
                return Verdict::Write;
            }
            "tool_call" => {
                let key = (server.to_owned(), r.call_id.unwrap_or_default().to_owned());
                let t = self.open.remove(&key).unwrap_or_default();
                return Verdict::WriteTouched(json!(t));
            }
            "exit" if self.roots.get(&r.pid).is_some_and(|s| s == server) => {
                self.roots.remove(&r.pid);
                let lines = self.close_server(server, r);
                return Verdict::WriteThen(lines);
            }
            k if !summarised(k) => return Verdict::Write,
            _ => {}
        }
        let mut call = r.call_id.unwrap_or(NO_CALL).to_owned();
        if self.open.len() >= OPEN_MAX && !self.open.contains_key(&(server.to_owned(), call.clone())) {
            call = NO_CALL.to_owned();
        }
        let t = self.open.entry((server.to_owned(), call)).or_default();
        if t.tool.is_none() {
            t.tool = r.tool.map(str::to_owned);
        }
        t.add(r);
        Verdict::Drop
    }

    /// The lines this level makes of `r`, as values (what the sinks at
    /// `level = "summary"` get; the events file writes the record itself).
    pub fn lines(&mut self, r: &Record<'_>) -> Vec<Value> {
        let line = || serde_json::to_value(r).ok();
        match self.on(r) {
            Verdict::Drop => Vec::new(),
            Verdict::Write => line().into_iter().collect(),
            Verdict::WriteTouched(touched) => line()
                .map(|mut v| {
                    v["touched"] = touched;
                    v
                })
                .into_iter()
                .collect(),
            Verdict::WriteThen(then) => line().into_iter().chain(then).collect(),
        }
    }

    /// `activity` lines for what `server` touched that no `tool_call` line
    /// took: outside calls, and calls whose line never came.
    fn close_server(&mut self, server: &str, exit: &Record<'_>) -> Vec<Value> {
        let keys: Vec<(String, String)> = self.open.keys().filter(|(s, _)| s == server).cloned().collect();
        let mut lines = Vec::new();
        for key in keys {
            let Some(t) = self.open.remove(&key) else { continue };
            let mut line = json!({
                "ts": exit.ts,
                "kind": "activity",
                "server": server,
                "pid": exit.pid,
                "touched": t,
            });
            if let Some(tool) = &t.tool {
                line["tool"] = json!(tool);
                line["call_id"] = json!(key.1);
            }
            lines.push(line);
        }
        lines
    }
}

/// At the `alerts` level: the agent's own lines (no server, or loss) and the
/// servers' starts and ends (`watch`, the exit of a watched root) only.
pub fn alerts_level_line(roots: &mut Summaries, r: &Record<'_>) -> bool {
    let Some(server) = r.server else {
        return true;
    };
    match r.kind {
        "loss" => true,
        "watch" => {
            roots.roots.insert(r.pid, server.to_owned());
            true
        }
        "exit" => roots.roots.remove(&r.pid).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec<'a>(kind: &'static str, call: Option<&'a str>, path: Option<&'a str>) -> Record<'a> {
        Record {
            kind,
            server: Some("fs"),
            pid: 7,
            tool: call.map(|_| "read_file"),
            call_id: call,
            path,
            access: Some(crate::policy::activity::Access {
                read: true,
                ..Default::default()
            }),
            result: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn a_calls_files_go_on_its_tool_call_line_the_rest_on_the_exit() {
        let mut s = Summaries::default();
        assert!(matches!(s.on(&rec("watch", None, None)), Verdict::Write));
        for i in 0..8 {
            let p = format!("/srv/f{}", i % 7);
            assert!(matches!(s.on(&rec("file", Some("1"), Some(&p))), Verdict::Drop));
        }
        assert!(matches!(s.on(&rec("file", None, Some("/etc/hosts"))), Verdict::Drop));
        let Verdict::WriteTouched(t) = s.on(&rec("tool_call", Some("1"), None)) else {
            panic!("the call's line")
        };
        assert_eq!((t["events"].as_u64(), t["files"]["count"].as_u64()), (Some(8), Some(7)));
        assert_eq!(t["files"]["first"].as_array().unwrap().len(), EXAMPLES);
        assert_eq!(t["files"]["first"][0], json!({"path": "/srv/f0", "access": ["read"]}));
        let Verdict::WriteThen(lines) = s.on(&rec("exit", None, None)) else {
            panic!("the root's exit")
        };
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["kind"], "activity");
        assert_eq!(lines[0]["touched"]["files"]["first"][0]["path"], "/etc/hosts");
        assert!(s.open.is_empty());
    }
}
