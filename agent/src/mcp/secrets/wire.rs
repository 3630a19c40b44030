//! The gate's scanning: after `decide` has judged a line, the calls it lets
//! through have their arguments scanned, and the server's results to them
//! are scanned before they reach the host. A `redact` finding rewrites the
//! message, a `block` one answers the sender with a JSON-RPC error instead;
//! each finding is a [`GateEvent::Secret`].

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher as _, RandomState},
    sync::Arc,
};

use serde_json::{Value, json};

use super::{Finding, Place, Settings, scan};
use crate::mcp::gate::{
    GateEvent,
    decide::{Verdict, display_id, to_line},
};

/// JSON-RPC error code of a message blocked for what it held.
pub const CODE_BLOCKED: i64 = -32003;
/// Calls in flight remembered at most (a host that never reads its
/// results cannot grow the gate); past it the oldest is forgotten and its
/// result passes unscanned (counted in [`Wire::forgotten`]).
pub const MAX_IN_FLIGHT: usize = 4096;
/// Tool names remembered at most (a server lists far fewer; a host calling
/// more, in `unlisted: "allow"` mode, has the others' results reported as
/// [`UNNAMED`]'s).
const MAX_TOOLS: usize = 1024;
/// The name reported for a tool past [`MAX_TOOLS`].
const UNNAMED: &str = "(unnamed: past the gate's 1,024 tool names)";
/// Findings of one message reported at most (the rest are counted in the last).
pub const MAX_REPORTED: usize = 16;

/// A call's id (its JSON text) hashed with this process's random keys: a
/// server cannot aim an id at another call's, and a key takes 8 bytes, not an
/// allocation (4,096 calls in flight: 0.5 MiB less).
type CallKey = u64;

pub struct Wire {
    settings: Settings,
    /// The key of each call in flight -> its tool (an index of `tools`) and
    /// its place in `order`: 16 bytes, so that 4,096 calls in flight take a
    /// table of 136 KiB (268 KiB with the name in each entry, and an
    /// allocation each for the name besides).
    calls: HashMap<CallKey, (u32, u32)>,
    /// The names of the tools called, each once, at most [`MAX_TOOLS`]
    /// (past them a call's tool is [`UNNAMED`]).
    tools: Vec<Arc<str>>,
    tool_ids: HashMap<Arc<str>, u32>,
    /// Calls in the order they were made, answered ones included until
    /// trimmed (removing them at each answer would cost a scan of the queue).
    order: VecDeque<(CallKey, u32)>,
    keys: RandomState,
    /// Calls remembered so far (the stamp of the next).
    made: u32,
    pub forgotten: u64,
}

impl Wire {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            calls: HashMap::new(),
            tools: Vec::new(),
            tool_ids: HashMap::new(),
            order: VecDeque::new(),
            keys: RandomState::new(),
            made: 0,
            forgotten: 0,
        }
    }

    /// A result is awaited: server lines must be held whole to be scanned.
    pub fn awaiting(&self) -> bool {
        !self.calls.is_empty()
    }

    /// Whether the call with this id (JSON text) awaits its result.
    pub fn awaits(&self, key: &str) -> bool {
        self.calls.contains_key(&self.key(key))
    }

    fn key(&self, id_text: &str) -> CallKey {
        self.keys.hash_one(id_text)
    }

    /// What `decide` made of a host line, after the calls it forwards were scanned.
    pub fn host(&mut self, server: &str, line: &[u8], verdict: Verdict, events: &mut Vec<GateEvent>) -> Verdict {
        let (forward, answer) = match &verdict {
            Verdict::Forward => (line, None),
            Verdict::Rewrite(b) => (b.as_slice(), None),
            Verdict::Answer {
                forward: Some(f),
                answer,
            } => (f.as_slice(), answer.as_deref()),
            Verdict::Answer { forward: None, .. } | Verdict::Probe(_) => return verdict,
        };
        // Only a line naming a call can hold one (the gate parsed it already, cheaply found).
        if !forward.windows(4).any(|w| w == b"call") {
            return verdict;
        }
        let Ok(mut v) = serde_json::from_slice::<Value>(forward.trim_ascii()) else {
            return verdict;
        };
        let mut answers = Vec::new();
        let changed = match &mut v {
            Value::Array(items) => {
                let mut changed = false;
                items.retain_mut(|item| match self.call(server, item, events) {
                    Ok(c) => {
                        changed |= c;
                        true
                    }
                    Err(a) => {
                        changed = true;
                        answers.extend(a);
                        false
                    }
                });
                changed
            }
            item => match self.call(server, item, events) {
                Ok(c) => c,
                Err(a) => {
                    answers.extend(a);
                    v = Value::Null;
                    true
                }
            },
        };
        if !changed {
            return verdict;
        }
        let batch = v.is_array() || answer.is_some_and(|a| a.trim_ascii().starts_with(b"["));
        let forward = match &v {
            Value::Null => None,
            Value::Array(a) if a.is_empty() => None,
            v => Some(to_line(v)),
        };
        if let Some(prev) = answer.and_then(|a| serde_json::from_slice::<Value>(a.trim_ascii()).ok()) {
            match prev {
                Value::Array(a) => answers.splice(0..0, a).for_each(drop),
                p => answers.insert(0, p),
            }
        }
        let answer = match answers.len() {
            0 => None,
            1 if !batch => answers.pop().map(|a| to_line(&a)),
            _ => Some(to_line(&Value::Array(answers))),
        };
        match (forward, answer) {
            (Some(f), None) => Verdict::Rewrite(f),
            (forward, answer) => Verdict::Answer { forward, answer },
        }
    }

    /// What `decide` made of a server line, after a result to a call in flight was scanned.
    pub fn server(&mut self, server: &str, line: &[u8], verdict: Verdict, events: &mut Vec<GateEvent>) -> Verdict {
        if self.calls.is_empty() {
            return verdict;
        }
        let bytes = match &verdict {
            Verdict::Forward => line,
            Verdict::Rewrite(b) => b.as_slice(),
            Verdict::Answer { .. } | Verdict::Probe(_) => return verdict,
        };
        let Ok(mut v) = serde_json::from_slice::<Value>(bytes.trim_ascii()) else {
            return verdict;
        };
        let changed = match &mut v {
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |c, item| self.result(server, item, events) | c),
            item => self.result(server, item, events),
        };
        if changed {
            Verdict::Rewrite(to_line(&v))
        } else {
            verdict
        }
    }

    /// One host message: a call is remembered and its arguments scanned;
    /// `Ok(changed)`, or `Err` with the answer when it is refused.
    pub(crate) fn call(
        &mut self,
        server: &str,
        m: &mut Value,
        events: &mut Vec<GateEvent>,
    ) -> Result<bool, Option<Value>> {
        if m.get("method").and_then(Value::as_str) != Some("tools/call") {
            return Ok(false);
        }
        let tool = m
            .pointer("/params/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let id = m.get("id").filter(|i| !i.is_null()).cloned();
        let Some(args) = m.pointer_mut("/params/arguments") else {
            self.remember(id.as_ref(), &tool);
            return Ok(false);
        };
        let found = scan::find(args, Place::Arguments, &self.settings);
        report(&tool, id.as_ref(), Place::Arguments, &found, events);
        if let Some(b) = found.blocked() {
            let message = blocked(&tool, server, Place::Arguments, b);
            return Err(id.map(|id| error(id, &message)));
        }
        self.remember(id.as_ref(), &tool);
        if found.redacts() {
            scan::redact(args, Place::Arguments, &found.findings);
            return Ok(true);
        }
        Ok(false)
    }

    /// One server message: the result of a call in flight is scanned; true
    /// when it was rewritten or replaced.
    fn result(&mut self, server: &str, m: &mut Value, events: &mut Vec<GateEvent>) -> bool {
        if m.get("method").is_some() {
            return false;
        }
        let Some(id) = m.get("id").cloned() else { return false };
        let key = self.key(&id.to_string());
        let Some((tool, _)) = self.calls.remove(&key) else {
            return false;
        };
        let tool = self.tools.get(tool as usize).cloned().unwrap_or_else(|| UNNAMED.into());
        let Some(result) = m.get_mut("result") else {
            return false;
        };
        let found = scan::find(result, Place::Result, &self.settings);
        report(&tool, Some(&id), Place::Result, &found, events);
        if let Some(b) = found.blocked() {
            *m = error(id, &blocked(&tool, server, Place::Result, b));
            return true;
        }
        if found.redacts() {
            scan::redact(result, Place::Result, &found.findings);
            return true;
        }
        false
    }

    fn remember(&mut self, id: Option<&Value>, tool: &str) {
        let Some(id) = id else { return };
        let key = self.key(&id.to_string());
        // (A stamp wraps after 2^32 calls; `order` holds none that old.)
        self.made = self.made.wrapping_add(1);
        let tool = match self.tool_ids.get(tool) {
            Some(i) => *i,
            None if self.tools.len() < MAX_TOOLS => {
                let name: Arc<str> = tool.into();
                let i = self.tools.len() as u32;
                self.tools.push(name.clone());
                self.tool_ids.insert(name, i);
                i
            }
            None => u32::MAX,
        };
        self.calls.insert(key, (tool, self.made));
        self.order.push_back((key, self.made));
        // Answered calls leave the queue here, in one pass when they fill it twice over.
        if self.order.len() > 2 * MAX_IN_FLIGHT {
            let calls = &self.calls;
            self.order.retain(|(k, n)| calls.get(k).is_some_and(|(_, m)| m == n));
        }
        while self.calls.len() > MAX_IN_FLIGHT {
            let Some((old, n)) = self.order.pop_front() else { break };
            if self.calls.get(&old).is_some_and(|(_, m)| *m == n) {
                self.calls.remove(&old);
                self.forgotten += 1;
            }
        }
    }
}

/// One event per finding (at most [`MAX_REPORTED`]; the last counts the rest).
fn report(tool: &str, id: Option<&Value>, place: Place, found: &scan::Scanned, events: &mut Vec<GateEvent>) {
    let call_id = id.map(display_id);
    let findings: Vec<&Finding> = found.reported().collect();
    let reported = findings.len().min(MAX_REPORTED);
    for (i, f) in findings.iter().take(reported).enumerate() {
        events.push(GateEvent::Secret {
            tool: tool.to_owned(),
            call_id: call_id.clone(),
            place,
            finding: (*f).clone(),
            more: if i + 1 == reported {
                findings.len() - reported
            } else {
                0
            },
        });
    }
}

/// The message of a blocked call or result (the model and the user read it).
pub fn blocked(tool: &str, server: &str, place: Place, f: &Finding) -> String {
    let what = match place {
        Place::Arguments => "the call",
        Place::Result => "the result",
    };
    format!(
        "{what} of tool '{tool}' of server '{server}' was blocked by mcpwatch: {} holds a {} (rule {}, bytes {}..{})",
        f.field,
        if f.is_poison() { "poisoning indicator" } else { "secret" },
        f.rule,
        f.span.start,
        f.span.end
    )
}

fn error(id: Value, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": CODE_BLOCKED, "message": message}})
}
