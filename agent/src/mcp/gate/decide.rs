//! The gate's decisions, message by message.
//!
//! Only two kinds of message are judged: a `tools/call` from the host (its
//! tool must be approved, with the definition it was approved with) and the
//! server's response to a `tools/list` the host sent (unapproved tools are
//! removed). Everything else is passed as it came, unparsed when possible:
//! server lines are not even parsed while no `tools/list` is pending.
//!
//! A call of a tool whose definition the gate has not seen in this session
//! first has the gate list the server's tools itself (`probe`).
//!
//! Lines are first read for their method (or id) only, borrowing from the
//! line: a message the gate does not judge costs no tree of values.
//!
//! What the gate cannot read is handled by one rule: from the host it is
//! refused (a JSON-RPC error with a null id, as a server answers a parse
//! error; a lenient server could read a `tools/call` the gate could not),
//! from the server it is passed, unless a `tools/list` response is awaited
//! (it could be that listing, unfiltered), when it is replaced by an error.

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
};

use serde::{Deserialize, de::IgnoredAny};
use serde_json::{Value, json};

use super::{
    Decision, GateEvent, GateSpec, Outcome, Unapproved, Unlisted, WithheldTool,
    args::Rules,
    probe::{Probe, Step},
};
use crate::mcp::{pins::Tool, reassembly::MAX_MESSAGE, secrets::wire::Wire};

/// JSON-RPC error code of a refused call (implementation-defined range).
pub const CODE_REFUSED: i64 = -32001;
/// A server line longer than this is streamed, not held (unless a listing is awaited).
pub const STREAM_ABOVE: usize = 1 << 20;
/// The longest line held whole: a host message, or a server line while a listing is awaited.
pub const HOLD_MAX: usize = MAX_MESSAGE;

/// What to do with one line.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Pass it as it came.
    Forward,
    /// Pass this instead (a line, newline included).
    Rewrite(Vec<u8>),
    /// Pass `forward` on (nothing when `None`) and send `answer` back to the sender.
    Answer {
        forward: Option<Vec<u8>>,
        answer: Option<Vec<u8>>,
    },
    /// (Host lines only.) Send this request (the gate's own `tools/list`)
    /// to the server, follow [`Gate::probe_step`] until it is done, then
    /// judge the line again with [`Gate::from_host_probed`].
    Probe(Vec<u8>),
}

/// The method of a message, borrowed from its line (an escaped one is copied).
#[derive(Deserialize)]
struct HostHead<'a> {
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
}

/// What tells a server message's kind: a request or notification has a
/// method, a response an id.
#[derive(Deserialize)]
struct ServerHead {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<IgnoredAny>,
}

/// Asks for the current approvals (the agent may know of newer ones).
pub type Refresh = Box<dyn FnMut() -> Option<GateSpec> + Send>;

pub struct Gate {
    server: String,
    spec: GateSpec,
    /// Ids (as JSON text) of the host's tools/list requests awaiting their response.
    lists: HashSet<String>,
    /// Each tool's definition hash as last listed.
    listed: HashMap<String, String>,
    refresh: Refresh,
    /// The spec's argument rules, compiled.
    rules: Rules,
    /// Decisions not yet reported.
    events: Vec<GateEvent>,
    /// Secrets and poisoning in the calls' arguments and results.
    wire: Wire,
    /// The gate's own listing in flight, and how many it started.
    probe: Option<Probe>,
    probes: u64,
    /// Judging a line again after the gate's listing: a tool it did not hold is not listed.
    after_probe: bool,
}

impl Gate {
    pub fn new(server: &str, spec: GateSpec, refresh: Refresh) -> Self {
        Self {
            server: server.to_owned(),
            wire: Wire::new(spec.secrets.clone()),
            rules: Rules::new(&spec.args),
            spec,
            lists: HashSet::new(),
            listed: HashMap::new(),
            refresh,
            events: Vec::new(),
            probe: None,
            probes: 0,
            after_probe: false,
        }
    }

    /// Stamps the decisions not yet stamped with the time the gate added
    /// to the message they were about (measured by the relay).
    pub fn stamp_latency(&mut self, ns: u64) {
        for e in self.events.iter_mut().rev() {
            match e {
                GateEvent::Call(d) if d.latency_ns == 0 => d.latency_ns = ns.max(1),
                GateEvent::Call(_) => break,
                _ => {}
            }
        }
    }

    /// The decisions made since the last call, to report.
    pub fn take_events(&mut self) -> Vec<GateEvent> {
        std::mem::take(&mut self.events)
    }

    /// The same for the server side's thread: only up to the first call
    /// decision the host side's relay has not stamped yet, so that a host
    /// call's decision is never reported without the latency the gate added
    /// (the host thread stamps it and reports it right after).
    pub fn take_stamped_events(&mut self) -> Vec<GateEvent> {
        let cut = self
            .events
            .iter()
            .position(|e| matches!(e, GateEvent::Call(d) if d.latency_ns == 0))
            .unwrap_or(self.events.len());
        let rest = self.events.split_off(cut);
        std::mem::replace(&mut self.events, rest)
    }

    /// The longest server line to hold whole now.
    pub fn server_limit(&self) -> usize {
        if self.lists.is_empty() && self.probe.is_none() && !self.wire.awaiting() {
            STREAM_ABOVE
        } else {
            HOLD_MAX
        }
    }

    /// A line from the host, for the server.
    pub fn from_host(&mut self, line: &[u8]) -> Verdict {
        let text = line.trim_ascii();
        if text.is_empty() {
            return Verdict::Forward;
        }
        // Most messages are not judged: their method is all that is read.
        // (A line this cannot read, a batch or a repeated key, is read whole.)
        if let Ok(head) = serde_json::from_slice::<HostHead>(text) {
            match head.method.as_deref() {
                Some("tools/call") => return self.host_call(text),
                Some("tools/list") => {}
                _ => return Verdict::Forward,
            }
        }
        let verdict = self.judge_host(text);
        self.wire.host(&self.server, line, verdict, &mut self.events)
    }

    /// The line of a [`Verdict::Probe`] again, once the gate's listing is done.
    pub fn from_host_probed(&mut self, line: &[u8]) -> Verdict {
        self.after_probe = true;
        let v = self.from_host(line);
        self.after_probe = false;
        self.probe = None;
        v
    }

    /// What the relay does next for the gate's listing in flight.
    pub fn probe_step(&mut self) -> Step {
        self.probe.as_mut().map_or(Step::Done, Probe::step)
    }

    /// The gate's listing will get no answer (`why`): the held call is refused.
    pub fn probe_failed(&mut self, why: &str) {
        if let Some(p) = &mut self.probe {
            p.fail(why);
        }
    }

    /// A single `tools/call`: parsed once, judged, its arguments scanned.
    fn host_call(&mut self, text: &[u8]) -> Verdict {
        let mut v: Value = match serde_json::from_slice(text) {
            Ok(v) => v,
            Err(e) => return self.refuse_host(-32700, format!("not JSON: {e}")),
        };
        if let Some(request) = self.needs_probe(&v) {
            return request;
        }
        if let Err(answer) = self.host_message(&v) {
            return Verdict::Answer {
                forward: None,
                answer: answer.map(|a| to_line(&a)),
            };
        }
        match self.wire.call(&self.server, &mut v, &mut self.events) {
            Ok(false) => Verdict::Forward,
            Ok(true) => Verdict::Rewrite(to_line(&v)),
            Err(answer) => Verdict::Answer {
                forward: None,
                answer: answer.map(|a| to_line(&a)),
            },
        }
    }

    /// The gate's listing to start when `m` (or a member of a batch) calls
    /// a tool whose definition this session has not shown. In `allow` mode
    /// nothing waits: the call passes, and is alerted when unapproved.
    fn needs_probe(&mut self, m: &Value) -> Option<Verdict> {
        if self.after_probe || self.spec.unlisted == Unlisted::Allow {
            return None;
        }
        let unseen = |m: &Value| {
            m.get("method").and_then(Value::as_str) == Some("tools/call")
                && m.pointer("/params/name")
                    .and_then(Value::as_str)
                    .is_some_and(|t| !self.listed.contains_key(t))
        };
        let any = match m {
            Value::Array(items) => items.iter().any(unseen),
            m => unseen(m),
        };
        if !any {
            return None;
        }
        self.probes += 1;
        let (probe, request) = Probe::start(self.probes);
        self.probe = Some(probe);
        Some(Verdict::Probe(request))
    }

    fn judge_host(&mut self, text: &[u8]) -> Verdict {
        let v: Value = match serde_json::from_slice(text) {
            Ok(v) => v,
            Err(e) => return self.refuse_host(-32700, format!("not JSON: {e}")),
        };
        if let Some(request) = self.needs_probe(&v) {
            return request;
        }
        match v {
            Value::Object(_) => match self.host_message(&v) {
                Ok(()) => Verdict::Forward,
                Err(answer) => Verdict::Answer {
                    forward: None,
                    answer: answer.map(|a| to_line(&a)),
                },
            },
            Value::Array(items) => {
                let mut keep = Vec::new();
                let mut answers = Vec::new();
                let mut refused = false;
                for item in items {
                    match self.host_message(&item) {
                        Ok(()) => keep.push(item),
                        Err(a) => {
                            refused = true;
                            answers.extend(a);
                        }
                    }
                }
                if !refused {
                    return Verdict::Forward;
                }
                Verdict::Answer {
                    forward: (!keep.is_empty()).then(|| to_line(&Value::Array(keep))),
                    answer: (!answers.is_empty()).then(|| to_line(&Value::Array(answers))),
                }
            }
            // Not a request at all: the server answers it as it would.
            _ => Verdict::Forward,
        }
    }

    /// A host line longer than [`HOLD_MAX`]: refused (its head is all the gate saw).
    pub fn long_from_host(&mut self) -> Vec<u8> {
        let answer = self.refuse_host(-32600, format!("message longer than {HOLD_MAX} bytes"));
        match answer {
            Verdict::Answer { answer: Some(a), .. } => a,
            _ => unreachable!("refuse_host answers"),
        }
    }

    /// A server line longer than [`Gate::server_limit`]: `None` to stream it
    /// through, or the line to send instead (a listing is awaited).
    pub fn long_from_server(&mut self) -> Option<Vec<u8>> {
        if self.lists.is_empty() {
            // (Were it the gate's own listing, the held call is refused when it times out.)
            return None;
        }
        Some(self.refuse_server(format!(
            "message longer than {HOLD_MAX} bytes while a tools/list was pending"
        )))
    }

    /// A line from the server, for the host.
    pub fn from_server(&mut self, line: &[u8]) -> Verdict {
        if self.lists.is_empty() && self.probe.is_none() && !self.wire.awaiting() {
            return Verdict::Forward;
        }
        let text = line.trim_ascii();
        if text.is_empty() {
            return Verdict::Forward;
        }
        // Only the answer to a request the gate follows is read whole.
        if let Ok(head) = serde_json::from_slice::<ServerHead>(text) {
            let awaited = head.method.is_none() && head.id.is_some_and(|id| self.awaits(&id.to_string()));
            if !awaited {
                return Verdict::Forward;
            }
        }
        let verdict = self.judge_server(text);
        self.wire.server(&self.server, line, verdict, &mut self.events)
    }

    /// Whether the response with this id (JSON text) is one the gate reads.
    fn awaits(&self, key: &str) -> bool {
        self.lists.contains(key) || self.probe.as_ref().is_some_and(|p| p.key == key) || self.wire.awaits(key)
    }

    fn judge_server(&mut self, text: &[u8]) -> Verdict {
        if self.lists.is_empty() && self.probe.is_none() {
            return Verdict::Forward;
        }
        let mut v: Value = match serde_json::from_slice(text) {
            Ok(v) => v,
            Err(_) if self.lists.is_empty() => return Verdict::Forward,
            Err(e) => {
                return Verdict::Rewrite(self.refuse_server(format!("not JSON while a tools/list was pending: {e}")));
            }
        };
        let mut refreshed = false;
        let changed = match &mut v {
            Value::Array(items) => {
                let before = items.len();
                items.retain(|m| !self.probe_answer(m));
                if items.is_empty() {
                    return Verdict::Answer {
                        forward: None,
                        answer: None,
                    };
                }
                let mut changed = items.len() != before;
                for item in items {
                    changed |= self.server_message(item, &mut refreshed);
                }
                changed
            }
            // The gate's own listing's answer is the gate's: not passed on.
            v if self.probe_answer(v) => {
                return Verdict::Answer {
                    forward: None,
                    answer: None,
                };
            }
            v => self.server_message(v, &mut refreshed),
        };
        if changed {
            Verdict::Rewrite(to_line(&v))
        } else {
            Verdict::Forward
        }
    }

    /// Judges one host message; `Err` carries the answer (none for a notification).
    fn host_message(&mut self, v: &Value) -> Result<(), Option<Value>> {
        let id = v.get("id").filter(|i| !i.is_null());
        match v.get("method").and_then(Value::as_str) {
            Some("tools/list") => {
                if let Some(id) = id {
                    self.lists.insert(id.to_string());
                }
                Ok(())
            }
            Some("tools/call") => {
                // A name that is not a string names no approved tool.
                let tool = v.pointer("/params/name").and_then(Value::as_str).unwrap_or("");
                let mut refreshed = false;
                let judged = match self.judge(tool, None, &mut refreshed) {
                    Ok(None) => Ok("approved".to_owned()),
                    Ok(Some(_)) => Ok("unlisted_allow".to_owned()),
                    Err(why) => Err((why.rule().to_owned(), refusal(tool, &self.server, why), None)),
                };
                let judged = judged.and_then(|rule| match self.rules.check(tool, v.pointer("/params/arguments")) {
                    Ok(()) => Ok(rule),
                    Err(bad) => {
                        let message = format!(
                            "argument '{}' of tool '{tool}' refused by the mcpwatch gate of server '{}' (rule {}): {}",
                            bad.arg, self.server, bad.rule, bad.reason
                        );
                        Err((bad.rule_id(), message, Some(bad.reason)))
                    }
                });
                let (outcome, rule, reason, answer) = match judged {
                    Ok(rule) => (Outcome::Allowed, rule, None, Ok(())),
                    Err((rule, message, reason)) => (
                        Outcome::Denied,
                        rule,
                        reason,
                        Err(id.map(|id| error(id.clone(), CODE_REFUSED, &message))),
                    ),
                };
                self.events.push(GateEvent::Call(Decision {
                    tool: tool.to_owned(),
                    call_id: id.map(display_id),
                    outcome,
                    rule,
                    reason,
                    latency_ns: 0,
                }));
                answer
            }
            _ => Ok(()),
        }
    }

    /// Takes the answer to the gate's own listing: its tools are what the
    /// session has shown. True when `m` was that answer.
    fn probe_answer(&mut self, m: &Value) -> bool {
        let seq = self.probes + 1;
        let Some(p) = &mut self.probe else { return false };
        if m.get("method").is_some() || m.get("id").map(Value::to_string).as_deref() != Some(p.key.as_str()) {
            return false;
        }
        let mut withheld = Vec::new();
        for t in p.answered(m, seq) {
            let Some(tool) = Tool::from_value(t) else { continue };
            let hash = tool.pin().hash;
            self.listed.insert(tool.name.clone(), hash.clone());
            // Reported as a listing's would be: `mcpwatch approve` shows
            // them, and a changed one is a rug pull blocked.
            if let Some(why) = self.why(&tool.name, Some(&hash))
                && self.spec.unlisted == Unlisted::Deny
            {
                withheld.push(WithheldTool {
                    name: tool.name,
                    hash,
                    why,
                    definition: t.clone(),
                });
            }
        }
        if !withheld.is_empty() {
            self.events.push(GateEvent::Withheld { tools: withheld });
        }
        self.probes = seq;
        true
    }

    /// Filters a response to a pending tools/list; true when it changed.
    fn server_message(&mut self, v: &mut Value, refreshed: &mut bool) -> bool {
        if v.get("method").is_some() {
            return false;
        }
        let Some(key) = v.get("id").map(Value::to_string) else {
            return false;
        };
        if !self.lists.remove(&key) {
            return false;
        }
        let Some(tools) = v.pointer_mut("/result/tools").and_then(Value::as_array_mut) else {
            return false;
        };
        let mut withheld = Vec::new();
        let mut kept = Vec::with_capacity(tools.len());
        for t in tools.drain(..) {
            let Some(tool) = Tool::from_value(&t) else {
                // Nameless: no host can call it; passed as listed.
                kept.push(t);
                continue;
            };
            let hash = tool.pin().hash;
            self.listed.insert(tool.name.clone(), hash.clone());
            match self.judge(&tool.name, Some(&hash), refreshed) {
                Ok(None) => kept.push(t),
                Ok(Some(why)) => {
                    self.events.push(GateEvent::AllowedUnlisted {
                        tool: tool.name,
                        call_id: None,
                        why,
                    });
                    kept.push(t);
                }
                Err(why) => withheld.push(WithheldTool {
                    name: tool.name,
                    hash,
                    why,
                    definition: t,
                }),
            }
        }
        *tools = kept;
        if withheld.is_empty() {
            return false;
        }
        self.events.push(GateEvent::Withheld { tools: withheld });
        true
    }

    /// Whether `tool` passes: `Ok(None)` approved, `Ok(Some(why))` not
    /// approved but allowed (`unlisted: allow`), `Err(why)` refused. The
    /// approvals are refreshed once before refusing.
    fn judge(
        &mut self,
        tool: &str,
        hash: Option<&str>,
        refreshed: &mut bool,
    ) -> Result<Option<Unapproved>, Unapproved> {
        let mut why = self.why(tool, hash);
        // Asked only before a refusal: in `allow` mode nothing waits on the agent.
        if why.is_some() && !*refreshed && self.spec.unlisted == Unlisted::Deny {
            *refreshed = true;
            if let Some(spec) = (self.refresh)() {
                if spec.args != self.spec.args {
                    self.rules = Rules::new(&spec.args);
                }
                self.spec = spec;
                why = self.why(tool, hash);
            }
        }
        match why {
            None => Ok(None),
            Some(w) if self.spec.unlisted == Unlisted::Allow => Ok(Some(w)),
            Some(w) => Err(w),
        }
    }

    fn why(&self, tool: &str, hash: Option<&str>) -> Option<Unapproved> {
        let listed = hash.or_else(|| self.listed.get(tool).map(String::as_str));
        match self.spec.approved.get(tool) {
            None => Some(Unapproved::NotApproved),
            Some(a) if listed.is_some_and(|h| !h.eq_ignore_ascii_case(a)) => Some(Unapproved::Changed),
            // The gate listed the tools itself and this one was not there.
            Some(_) if listed.is_none() && self.after_probe => Some(Unapproved::NotListed),
            Some(_) => None,
        }
    }

    fn refuse_host(&mut self, code: i64, reason: String) -> Verdict {
        let message = format!("refused by the mcpwatch gate of server '{}': {reason}", self.server);
        self.events.push(GateEvent::Refused {
            from: "host".into(),
            reason,
        });
        Verdict::Answer {
            forward: None,
            answer: Some(to_line(&error(Value::Null, code, &message))),
        }
    }

    fn refuse_server(&mut self, reason: String) -> Vec<u8> {
        let message = format!(
            "the server '{}' sent a message the mcpwatch gate refused: {reason}",
            self.server
        );
        self.events.push(GateEvent::Refused {
            from: "server".into(),
            reason,
        });
        to_line(&error(Value::Null, -32603, &message))
    }
}

/// The message of a refused call (the model and the user read it).
pub fn refusal(tool: &str, server: &str, why: Unapproved) -> String {
    let base = format!("tool '{tool}' is not approved for server '{server}' (mcpwatch)");
    match why {
        Unapproved::NotApproved => base,
        Unapproved::Changed => format!("{base}: its definition changed since it was approved"),
        Unapproved::NotListed => format!("{base}: the server does not list it"),
    }
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

pub(crate) fn display_id(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

pub(crate) fn to_line(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).expect("a Value serializes");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests;
