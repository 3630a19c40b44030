//! MCP protocol awareness: what watched stdio servers say.
//!
//! Captured stdio chunks go through one pass: `reassembly` (lines per process
//! and direction) -> `jsonrpc` (messages, garbage counted) -> `calls` (requests
//! in flight, `tools/call` attribution) -> `pins` (rug pulls) and `poison`
//! (indicators in descriptions and results) -> alerts and lines for the agent
//! to emit. The agent asks [`Mcp::current_call`] which tool call a server's
//! kernel event belongs to.

mod alerts;
pub mod audit;
pub mod calls;
pub mod chunk;
pub mod gate;
pub mod jsonrpc;
mod listing;
pub mod pins;
pub mod poison;
pub mod reassembly;
pub mod redact;
pub mod roots;
pub mod secrets;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
};

use serde_json::{Map, Value, json};

use crate::{alerts::rules::RuleId, output::metrics::McpTotals};

pub use self::calls::{ActivityKind, CallTag, ToolCounters};
use self::{
    alerts::{poison_alert, secret_alerts},
    calls::Calls,
    chunk::{Direction, StdioChunk},
    jsonrpc::{Id, Message, Outcome},
    pins::{ExpectedPins, PinStore, Tool},
    reassembly::{CutReason, Frame, Reassembler},
};

/// A call (or request) with no response after this long is given up.
pub const CALL_TIMEOUT_NS: u64 = 15 * 60 * 1_000_000_000;
/// Bytes of a garbage line shown in reports.
const GARBAGE_EXCERPT: usize = 64;
/// Tools of one listing kept at most (a server paging forever cannot grow the agent).
pub const MAX_LISTED_TOOLS: usize = 10_000;
/// Tool versions remembered as scanned at most (then forgotten, and rescanned if seen again).
const MAX_SCANNED: usize = 100_000;
/// Gated server names remembered at most.
const MAX_GATED: usize = 4096;

#[derive(Clone, Debug)]
pub struct McpOptions {
    /// Pins go under `<state_dir>/pins/`.
    pub state_dir: PathBuf,
    /// Emit a `tool_call` line per completed call.
    pub audit_tool_calls: bool,
}

impl Default for McpOptions {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from(pins::DEFAULT_STATE_DIR),
            audit_tool_calls: false,
        }
    }
}

/// An alert for the agent to complete (process fields, id, time) and deliver.
#[derive(Clone, Debug, PartialEq)]
pub struct McpAlert {
    /// Severity and technique come from the catalogue.
    pub rule: RuleId,
    pub server: u32,
    /// Judged against the pins the server's manifest ships (the manifest is
    /// then what the alert names), not against pins learnt here.
    pub shipped_pins: bool,
    pub summary: String,
    pub evidence: Value,
    pub tool: Option<String>,
    pub call_id: Option<String>,
    pub pid: u32,
    pub ktime_ns: u64,
}

/// A JSON line for the agent to write (common fields from the process).
#[derive(Clone, Debug, PartialEq)]
pub struct McpLine {
    pub kind: &'static str,
    pub server: u32,
    pub pid: u32,
    pub ktime_ns: u64,
    pub tool: Option<String>,
    pub call_id: Option<String>,
    pub fields: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Alert(McpAlert),
    Line(McpLine),
}

/// Garbage and cut lines of one stream since the last report.
#[derive(Debug, Default)]
struct StreamTrouble {
    garbage: u64,
    garbage_reason: String,
    garbage_excerpt: String,
    cut: u64,
    cut_reason: &'static str,
    cut_bytes: u64,
    lost_bytes: u64,
    ktime_ns: u64,
}

/// Where and when a message was seen.
#[derive(Clone, Copy, Debug)]
struct At<'a> {
    name: &'a str,
    server: u32,
    pid: u32,
    ktime_ns: u64,
}

/// A `tools/list` answer being collected over pages.
#[derive(Debug, Default)]
struct Listing {
    tools: Vec<Tool>,
}

/// A server's last complete listing, checked again when its manifest pins change.
#[derive(Debug)]
struct Listed {
    name: String,
    /// The process that wrote it: the listing is forgotten when it exits.
    pid: u32,
    tools: Vec<Tool>,
}

pub struct Mcp {
    reassembler: Reassembler,
    calls: Calls,
    pins: PinStore,
    audit: bool,
    listings: HashMap<u32, Listing>,
    /// Tool names of each server's last complete listing (for shadowing).
    known_tools: HashMap<u32, (String, Vec<String>)>,
    /// Each live server's last complete listing.
    listed: HashMap<u32, Listed>,
    /// (server, tool hash) already scanned for poisoning.
    scanned: HashSet<(u32, String)>,
    /// When each server last sent `notifications/tools/list_changed`.
    list_changed: HashMap<u32, u64>,
    trouble: BTreeMap<(u32, u32, Direction), StreamTrouble>,
    stats: McpTotals,
    /// Servers relayed through the gate (by name): their secrets are the
    /// gate's to report, the capture sees its output.
    gated: HashSet<String>,
    /// `roots/list` requests of servers not answered yet (server, id).
    roots_asked: HashSet<(u32, String)>,
    /// Roots clients gave, not yet taken by the policy.
    client_roots: Vec<Vec<String>>,
}

impl Mcp {
    pub fn new(opts: &McpOptions) -> Self {
        let pins = PinStore::new(&opts.state_dir);
        Self {
            reassembler: Reassembler::default(),
            calls: Calls::default(),
            pins,
            audit: opts.audit_tool_calls,
            listings: HashMap::new(),
            known_tools: HashMap::new(),
            listed: HashMap::new(),
            scanned: HashSet::new(),
            list_changed: HashMap::new(),
            trouble: BTreeMap::new(),
            stats: McpTotals::default(),
            gated: HashSet::new(),
            roots_asked: HashSet::new(),
            client_roots: Vec::new(),
        }
    }

    /// The roots clients gave in the chunks handled since the last call
    /// (`roots/list` answers), for `${roots}` in the manifest.
    pub fn take_client_roots(&mut self) -> Vec<Vec<String>> {
        std::mem::take(&mut self.client_roots)
    }

    /// Whether `server` is relayed through the gate (it registered with one).
    pub fn set_gated(&mut self, server: &str, gated: bool) {
        if !gated {
            self.gated.remove(server);
        } else if self.gated.len() < MAX_GATED {
            self.gated.insert(server.to_owned());
        } else {
            log::warn!("more than {MAX_GATED} gated servers: secrets of {server} may be alerted twice");
        }
    }

    /// Forgets what is kept of a server whose processes all exited (its
    /// streams went with its processes' exits). Its pin file stays: it is the
    /// baseline if the server runs again.
    pub fn forget_server(&mut self, server: u32) {
        self.calls.forget_server(server);
        self.listings.remove(&server);
        self.known_tools.remove(&server);
        self.listed.remove(&server);
        self.scanned.retain(|(s, _)| *s != server);
        self.list_changed.remove(&server);
        self.trouble.retain(|(s, _, _), _| *s != server);
    }

    /// The gate of `server` withheld tools whose definition changed since
    /// they were approved (each with the description approved locally, when
    /// known): rug pulls, alerted as blocked.
    pub fn gate_blocked(
        &mut self,
        at: (&str, u32),
        tools: &[(&gate::WithheldTool, Option<String>)],
        (pid, ktime_ns): (u32, u64),
    ) -> Vec<McpAlert> {
        let pinned = self.pins.stored(at.0).ok().flatten();
        tools
            .iter()
            .map(|(t, approved)| {
                let learnt = pinned.as_ref().and_then(|p| p.tools.get(&t.name)).cloned();
                alerts::blocked_rug_pull_alert(at, t, (learnt, approved.as_deref()), pid, ktime_ns)
            })
            .collect()
    }

    /// Pins a manifest ships for `server` (its `pins` field): they replace the
    /// pin file as the baseline of that server's tools.
    pub fn expect_pins(&mut self, server: &str, pins: ExpectedPins) {
        self.pins.expect(server, pins);
    }

    /// Every server's manifest pins, by server name (start-up, reload, a new
    /// server): servers left out have none (their pin file is the baseline).
    /// A live server whose baseline changed has its last listing checked
    /// again at once: shipped pins that do not match what it serves are
    /// alerted now, not at its next `tools/list`.
    pub fn set_expected_pins(&mut self, mut all: BTreeMap<String, ExpectedPins>, ktime_ns: u64) -> Vec<Output> {
        let mut names: Vec<String> = self.pins.expected_servers().map(str::to_owned).collect();
        names.extend(all.keys().cloned());
        names.sort_unstable();
        names.dedup();
        let mut out = Vec::new();
        for name in names {
            if !self.pins.set_expected(&name, all.remove(&name)) {
                continue;
            }
            let live: Vec<u32> = self
                .listed
                .iter()
                .filter(|(_, l)| l.name == name)
                .map(|(id, _)| *id)
                .collect();
            for server in live {
                let Some(l) = self.listed.remove(&server) else { continue };
                let at = At {
                    name: &name,
                    server,
                    pid: l.pid,
                    ktime_ns,
                };
                self.check_pins(at, &l.tools, false, &mut out);
                self.listed.insert(server, l);
            }
        }
        out
    }

    /// The tool call a server's events are attributed to now.
    pub fn current_call(&self, server: u32) -> Option<CallTag> {
        self.calls.current(server)
    }

    /// The tools of `server`'s calls in flight (the policy judges activity
    /// during overlapping calls against all of their grants).
    pub fn tools_in_flight(&self, server: u32) -> Vec<String> {
        self.calls.tools_in_flight(server)
    }

    /// Counts a kernel event of `server` against its current call; returns the call.
    pub fn note_activity(&mut self, server: u32, kind: ActivityKind) -> Option<CallTag> {
        self.calls.note_activity(server, kind)
    }

    /// Per (server id, tool) counters of completed calls.
    pub fn tool_counters(&self) -> impl Iterator<Item = (u32, &str, &ToolCounters)> {
        self.calls.tool_counters()
    }

    pub fn stats(&self) -> McpTotals {
        McpTotals {
            calls_in_flight: self.calls.in_flight() as u64,
            buffered_bytes: self.reassembler.buffered() as u64,
            ..self.stats
        }
    }

    /// A process exited: its unfinished lines go, reported as cut, and the
    /// calls it had not answered are closed (audited as unanswered).
    pub fn on_exit(&mut self, pid: u32, ktime_ns: u64) -> Vec<Output> {
        for (server, dir, bytes) in self.reassembler.forget_pid(pid) {
            self.stats.cut += 1;
            let t = self.trouble.entry((server, pid, dir)).or_default();
            t.cut += 1;
            t.cut_reason = CutReason::Unterminated.as_str();
            t.cut_bytes += bytes as u64;
            t.ktime_ns = ktime_ns;
        }
        self.listed.retain(|_, l| l.pid != pid);
        let gone = self.calls.abandon_pid(pid);
        self.abandoned(gone, ktime_ns)
    }

    /// Audit lines for calls given up.
    fn abandoned(&self, calls: Vec<(u32, calls::Call)>, ktime_ns: u64) -> Vec<Output> {
        if !self.audit {
            return Vec::new();
        }
        calls
            .into_iter()
            .map(|(server, call)| {
                let tag = (call.tool.clone(), call.id.display());
                line(
                    "tool_call",
                    server,
                    call.pid,
                    ktime_ns,
                    Some(tag),
                    audit::abandoned_fields(&call),
                )
            })
            .collect()
    }

    /// One captured chunk of `server` (named `server_name`).
    pub fn on_chunk(&mut self, server_name: &str, chunk: &StdioChunk) -> Vec<Output> {
        let mut out = Vec::new();
        let Some(dir) = Direction::from_fd(chunk.fd) else {
            return out;
        };
        let h = &chunk.header;
        let at = At {
            name: server_name,
            server: h.server,
            pid: h.pid,
            ktime_ns: h.ktime_ns,
        };
        for frame in self.reassembler.push(chunk) {
            match frame {
                Frame::Cut { reason, seen, lost } => {
                    self.stats.cut += 1;
                    self.stats.lost_bytes += lost;
                    let t = self.trouble.entry((h.server, h.pid, dir)).or_default();
                    t.cut += 1;
                    t.cut_reason = reason.as_str();
                    t.cut_bytes += seen;
                    t.lost_bytes += lost;
                    t.ktime_ns = h.ktime_ns;
                }
                Frame::Whole(line) => {
                    let parsed = jsonrpc::parse(&line);
                    if let Some(g) = parsed.garbage.last() {
                        self.stats.garbage += parsed.garbage.len() as u64;
                        let t = self.trouble.entry((h.server, h.pid, dir)).or_default();
                        t.garbage += parsed.garbage.len() as u64;
                        t.garbage_reason = g.to_string();
                        t.garbage_excerpt = jsonrpc::excerpt(&line, GARBAGE_EXCERPT);
                        t.ktime_ns = h.ktime_ns;
                    }
                    for m in parsed.messages {
                        self.stats.messages += 1;
                        match dir {
                            Direction::In => self.host_message(h.server, h.pid, h.ktime_ns, m, &mut out),
                            Direction::Out => self.server_message(at, m, &mut out),
                        }
                    }
                }
            }
        }
        out
    }

    /// Periodic work: garbage and cut reports per stream (one line each, not one
    /// per bad line: a server spewing noise must not flood the event stream),
    /// and calls given up.
    pub fn tick(&mut self, now_ns: u64) -> Vec<Output> {
        let mut out = Vec::new();
        for ((server, pid, dir), t) in std::mem::take(&mut self.trouble) {
            if t.garbage > 0 {
                let f = object(json!({
                    "fd": dir.fd(), "garbage": t.garbage, "reason": t.garbage_reason, "excerpt": t.garbage_excerpt,
                }));
                out.push(line("mcp_garbage", server, pid, t.ktime_ns, None, f));
            }
            if t.cut > 0 {
                let f = object(json!({
                    "fd": dir.fd(), "cut": t.cut, "reason": t.cut_reason,
                    "cut_bytes": t.cut_bytes, "lost_bytes": t.lost_bytes,
                }));
                out.push(line("mcp_cut", server, pid, t.ktime_ns, None, f));
            }
        }
        let expired = self.calls.expire(now_ns, CALL_TIMEOUT_NS);
        out.extend(self.abandoned(expired, now_ns));
        out
    }

    /// A message the server read (from the host).
    fn host_message(&mut self, server: u32, pid: u32, ktime_ns: u64, m: Message, out: &mut Vec<Output>) {
        match m {
            Message::Request { id, method, params } => {
                if method == "tools/list" && params.get("cursor").is_none_or(Value::is_null) {
                    self.listings.insert(server, Listing::default());
                }
                self.calls.request(server, pid, id, &method, &params, ktime_ns);
            }
            Message::Response {
                id,
                outcome: Outcome::Result(r),
            } if self.roots_asked.remove(&(server, id.display())) => {
                self.client_roots.push(roots::paths(&r));
            }
            Message::Notification { method, params } if method == "notifications/cancelled" => {
                let Some(id) = params.get("requestId").map(Value::to_string) else {
                    return;
                };
                if let Some(done) =
                    self.calls
                        .response_to_call(server, &Id::from(id.as_str()), Some("cancelled".into()), ktime_ns)
                {
                    self.audit_line(server, &done, ktime_ns, out);
                }
            }
            _ => {}
        }
    }

    /// A message the server wrote (to the host).
    fn server_message(&mut self, at: At<'_>, m: Message, out: &mut Vec<Output>) {
        let At {
            server, pid, ktime_ns, ..
        } = at;
        match m {
            Message::Response { id, outcome } => {
                let error = match &outcome {
                    Outcome::Error { code, message } => Some(format!("{code}: {message}")),
                    Outcome::Result(r) if r.get("isError").and_then(Value::as_bool) == Some(true) => {
                        Some("tool result isError".into())
                    }
                    Outcome::Result(_) => None,
                };
                if let Some(done) = self.calls.response_to_call(server, &id, error, ktime_ns) {
                    if let Outcome::Result(r) = &outcome {
                        self.scan_result(at, &done, r, out);
                    }
                    self.audit_line(server, &done, ktime_ns, out);
                    return;
                }
                let Outcome::Result(result) = outcome else { return };
                let pending = self.calls.response_to_request(server, &id);
                let is_listing = match &pending {
                    Some(p) => p.method == "tools/list",
                    // The request was not seen (capture started late): recognise the shape.
                    None => result.get("tools").and_then(Value::as_array).is_some_and(|t| {
                        t.iter()
                            .all(|t| t.get("name").is_some() && t.get("inputSchema").is_some())
                    }),
                };
                if is_listing {
                    self.listing_page(at, &result, out);
                }
            }
            Message::Request { id, method, .. } if method == "roots/list" => {
                if self.roots_asked.len() >= roots::ASKED_MAX {
                    self.roots_asked.clear();
                }
                self.roots_asked.insert((server, id.display()));
            }
            Message::Notification { method, .. } if method == "notifications/tools/list_changed" => {
                self.list_changed.insert(server, ktime_ns);
                out.push(line("mcp_list_changed", server, pid, ktime_ns, None, Map::new()));
            }
            _ => {}
        }
    }

    fn audit_line(&self, server: u32, done: &calls::Completed, ktime_ns: u64, out: &mut Vec<Output>) {
        if self.audit {
            let tag = (done.call.tool.clone(), done.call.id.display());
            out.push(line(
                "tool_call",
                server,
                done.call.pid,
                ktime_ns,
                Some(tag),
                audit::fields(done),
            ));
        }
    }

    fn scan_result(&self, at: At<'_>, done: &calls::Completed, result: &Value, out: &mut Vec<Output>) {
        let call = (done.call.tool.as_str(), Some(done.call.id.display()));
        for f in poison::scan_result(result) {
            let evidence = json!({ "finding": f });
            out.push(Output::Alert(poison_alert(
                at,
                "result of tool",
                call.clone(),
                f,
                evidence,
            )));
        }
        if !self.gated.contains(at.name) {
            out.extend(secret_alerts(at, call, result));
        }
    }
}

fn line(
    kind: &'static str,
    server: u32,
    pid: u32,
    ktime_ns: u64,
    tag: Option<(String, String)>,
    fields: Map<String, Value>,
) -> Output {
    let (tool, call_id) = tag.unzip();
    Output::Line(McpLine {
        kind,
        server,
        pid,
        ktime_ns,
        tool,
        call_id,
        fields,
    })
}

/// The map of a JSON object (`json!({..})` is always one).
fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests;
