//! Requests in flight per server, and `tools/call` attribution.
//!
//! A `tools/call` read on a server's stdin opens a call; the response with the
//! same id written on its stdout closes it. Between the two, every kernel event
//! of the server is attributed to the call ([`Calls::current`]).
//!
//! Attribution rule when several calls of one server are in flight: the most
//! recently started one wins. Hosts mostly serialise calls to a server; when
//! they do not, nothing the kernel sees ties a syscall to one request (a Node or
//! asyncio server runs them all on one thread), and the newest call is the one
//! whose work is most likely under way. Events carry `calls_in_flight` so a
//! reader knows when the attribution was a choice.

use foldhash::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::{jsonrpc::Id, redact};

/// Requests remembered per server at most (a host that never gets answers
/// cannot grow the agent without bound).
pub const MAX_PENDING: usize = 4096;
/// Bytes of redacted arguments kept as a call's summary.
pub const ARGS_SUMMARY_MAX: usize = 256;

/// OS activity caused by a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Activity {
    pub files: u64,
    pub connects: u64,
    pub execs: u64,
    /// Every kernel event attributed to the call.
    pub events: u64,
}

/// A kind of OS activity a kernel event stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivityKind {
    File,
    Connect,
    Exec,
    Other,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub id: Id,
    pub tool: String,
    /// Arguments with secrets redacted.
    pub args: Value,
    pub args_summary: String,
    pub started_ns: u64,
    /// The process that read the request.
    pub pid: u32,
    pub activity: Activity,
}

/// A call and how it ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Completed {
    pub call: Call,
    pub duration_ns: u64,
    /// JSON-RPC error message, or `isError` of the tool result.
    pub error: Option<String>,
}

/// The call an event is attributed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallTag {
    pub tool: String,
    pub call_id: String,
    /// Calls of the server in flight at the time (more than 1: see the module's rule).
    pub in_flight: usize,
}

/// A request other than `tools/call` waiting for its response.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub method: String,
    pub params: Value,
    pub started_ns: u64,
}

/// Per-tool counters (for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ToolCounters {
    pub calls: u64,
    pub errors: u64,
    pub duration_ns: u64,
}

#[derive(Debug, Default)]
struct ServerCalls {
    /// In start order.
    in_flight: Vec<Call>,
    pending: HashMap<Id, Pending>,
}

#[derive(Debug, Default)]
pub struct Calls {
    servers: HashMap<u32, ServerCalls>,
    counters: HashMap<(u32, String), ToolCounters>,
}

impl Calls {
    /// A request read by a server. `tools/call` opens a call; other methods are
    /// remembered so their responses can be recognised.
    pub fn request(&mut self, server: u32, pid: u32, id: Id, method: &str, params: &Value, ktime_ns: u64) {
        let s = self.servers.entry(server).or_default();
        if method == "tools/call" {
            let tool = params.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
            let raw = params.get("arguments").cloned().unwrap_or(Value::Null);
            if s.in_flight.len() >= MAX_PENDING {
                s.in_flight.remove(0);
            }
            s.in_flight.retain(|c| c.id != id);
            s.in_flight.push(Call {
                id,
                tool,
                args: redact::redact(&raw),
                args_summary: redact::summary(&raw, ARGS_SUMMARY_MAX),
                started_ns: ktime_ns,
                pid,
                activity: Activity::default(),
            });
            return;
        }
        if s.pending.len() >= MAX_PENDING
            && let Some(oldest) = s
                .pending
                .iter()
                .min_by_key(|(_, p)| p.started_ns)
                .map(|(id, _)| id.clone())
        {
            s.pending.remove(&oldest);
        }
        s.pending.insert(
            id,
            Pending {
                method: method.to_owned(),
                params: params.clone(),
                started_ns: ktime_ns,
            },
        );
    }

    /// A response written by a server: closes the call it answers, if any.
    pub fn response_to_call(
        &mut self,
        server: u32,
        id: &Id,
        error: Option<String>,
        ktime_ns: u64,
    ) -> Option<Completed> {
        let s = self.servers.get_mut(&server)?;
        let i = s.in_flight.iter().position(|c| &c.id == id)?;
        let call = s.in_flight.remove(i);
        let duration_ns = ktime_ns.saturating_sub(call.started_ns);
        let c = self.counters.entry((server, call.tool.clone())).or_default();
        c.calls += 1;
        c.duration_ns += duration_ns;
        if error.is_some() {
            c.errors += 1;
        }
        Some(Completed {
            call,
            duration_ns,
            error,
        })
    }

    /// The non-call request a response answers, if one was pending.
    pub fn response_to_request(&mut self, server: u32, id: &Id) -> Option<Pending> {
        self.servers.get_mut(&server)?.pending.remove(id)
    }

    /// The call the server's events are attributed to now.
    pub fn current(&self, server: u32) -> Option<CallTag> {
        let s = self.servers.get(&server)?;
        let c = s.in_flight.last()?;
        Some(CallTag {
            tool: c.tool.clone(),
            call_id: c.id.display(),
            in_flight: s.in_flight.len(),
        })
    }

    /// The tools of the server's calls in flight, oldest first.
    pub fn tools_in_flight(&self, server: u32) -> Vec<String> {
        self.servers
            .get(&server)
            .map(|s| s.in_flight.iter().map(|c| c.tool.clone()).collect())
            .unwrap_or_default()
    }

    /// Counts a kernel event against the current call; returns its tag.
    pub fn note_activity(&mut self, server: u32, kind: ActivityKind) -> Option<CallTag> {
        let tag = self.current(server)?;
        let c = self.servers.get_mut(&server)?.in_flight.last_mut()?;
        c.activity.events += 1;
        match kind {
            ActivityKind::File => c.activity.files += 1,
            ActivityKind::Connect => c.activity.connects += 1,
            ActivityKind::Exec => c.activity.execs += 1,
            ActivityKind::Other => {}
        }
        Some(tag)
    }

    /// Drops the calls a process read and will never answer (it exited), so
    /// they cannot claim the events of a server restarted under the same name.
    pub fn abandon_pid(&mut self, pid: u32) -> Vec<(u32, Call)> {
        let mut gone = Vec::new();
        for (&server, s) in self.servers.iter_mut() {
            let (old, keep): (Vec<Call>, Vec<Call>) =
                std::mem::take(&mut s.in_flight).into_iter().partition(|c| c.pid == pid);
            s.in_flight = keep;
            gone.extend(old.into_iter().map(|c| (server, c)));
        }
        gone
    }

    /// Drops calls and requests older than `max_age_ns` (their response was cut
    /// or never came). Returns the calls dropped, with their server.
    pub fn expire(&mut self, now_ns: u64, max_age_ns: u64) -> Vec<(u32, Call)> {
        let mut gone = Vec::new();
        for (&server, s) in self.servers.iter_mut() {
            let (old, keep): (Vec<Call>, Vec<Call>) = std::mem::take(&mut s.in_flight)
                .into_iter()
                .partition(|c| now_ns.saturating_sub(c.started_ns) > max_age_ns);
            s.in_flight = keep;
            gone.extend(old.into_iter().map(|c| (server, c)));
            s.pending
                .retain(|_, p| now_ns.saturating_sub(p.started_ns) <= max_age_ns);
        }
        gone
    }

    /// Calls in flight, all servers.
    pub fn in_flight(&self) -> usize {
        self.servers.values().map(|s| s.in_flight.len()).sum()
    }

    /// Forgets a server whose processes all exited.
    pub fn forget_server(&mut self, server: u32) {
        self.servers.remove(&server);
        self.counters.retain(|(s, _), _| *s != server);
    }

    /// Per (server id, tool) counters of completed calls.
    pub fn tool_counters(&self) -> impl Iterator<Item = (u32, &str, &ToolCounters)> {
        self.counters.iter().map(|((s, t), c)| (*s, t.as_str(), c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(calls: &mut Calls, id: &str, tool: &str, t: u64) {
        calls.request(
            1,
            10,
            Id::from(id),
            "tools/call",
            &json!({"name": tool, "arguments": {"path": "/x", "token": "s"}}),
            t,
        );
    }

    #[test]
    fn a_call_is_open_between_request_and_response() {
        let mut c = Calls::default();
        assert_eq!(c.current(1), None);
        call(&mut c, "7", "read_file", 100);
        let tag = c.current(1).unwrap();
        assert_eq!(
            (tag.tool.as_str(), tag.call_id.as_str(), tag.in_flight),
            ("read_file", "7", 1)
        );
        assert_eq!(c.current(2), None, "other servers are not attributed");
        c.note_activity(1, ActivityKind::File);
        c.note_activity(1, ActivityKind::Exec);
        let done = c.response_to_call(1, &Id::from("7"), None, 350).unwrap();
        assert_eq!(done.duration_ns, 250);
        assert_eq!(done.call.args, json!({"path": "/x", "token": "[REDACTED]"}));
        assert_eq!(
            done.call.activity,
            Activity {
                files: 1,
                connects: 0,
                execs: 1,
                events: 2
            }
        );
        assert_eq!(c.current(1), None);
        assert_eq!(c.response_to_call(1, &Id::from("7"), None, 400), None);
        let counters: Vec<_> = c.tool_counters().collect();
        assert_eq!(
            counters,
            [(
                1,
                "read_file",
                &ToolCounters {
                    calls: 1,
                    errors: 0,
                    duration_ns: 250
                }
            )]
        );
    }

    #[test]
    fn the_newest_call_in_flight_gets_the_events() {
        let mut c = Calls::default();
        call(&mut c, "1", "slow", 100);
        call(&mut c, "\"b\"", "fast", 200);
        let tag = c.current(1).unwrap();
        assert_eq!(
            (tag.tool.as_str(), tag.call_id.as_str(), tag.in_flight),
            ("fast", "b", 2)
        );
        c.response_to_call(1, &Id::from("\"b\""), Some("boom".into()), 300)
            .unwrap();
        assert_eq!(c.current(1).unwrap().tool, "slow");
        let errors: u64 = c.tool_counters().map(|(_, _, k)| k.errors).sum();
        assert_eq!(errors, 1);
    }

    #[test]
    fn other_requests_are_matched_and_everything_expires() {
        let mut c = Calls::default();
        c.request(1, 10, Id::from("2"), "tools/list", &Value::Null, 50);
        call(&mut c, "3", "t", 60);
        assert_eq!(c.response_to_request(1, &Id::from("2")).unwrap().method, "tools/list");
        assert_eq!(c.response_to_request(1, &Id::from("2")), None);
        c.request(1, 10, Id::from("4"), "prompts/list", &Value::Null, 70);
        let gone = c.expire(10_000, 1_000);
        assert_eq!(gone.len(), 1);
        assert_eq!(c.in_flight(), 0);
        assert_eq!(c.response_to_request(1, &Id::from("4")), None);
    }

    #[test]
    fn pending_requests_are_bounded() {
        let mut c = Calls::default();
        for i in 0..(MAX_PENDING as u64 + 10) {
            c.request(1, 10, Id::from(i.to_string().as_str()), "ping", &Value::Null, i);
            call(&mut c, &format!("\"c{i}\""), "t", i);
        }
        assert_eq!(c.servers[&1].pending.len(), MAX_PENDING);
        assert_eq!(c.in_flight(), MAX_PENDING);
        assert_eq!(c.response_to_request(1, &Id::from("0")), None, "the oldest went first");
    }
}
