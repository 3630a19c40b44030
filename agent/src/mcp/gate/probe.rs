//! The gate's own `tools/list`: a call of a tool whose definition the gate
//! has not seen in this session (the host never listed it, or the listing
//! did not hold it) must not pass on its name alone: an approved name could
//! now stand for a changed definition. The gate lists the server's tools
//! itself (every page), the host's side waiting meanwhile, and judges the
//! call against what the server serves now.
//!
//! The listing is the gate's: its answers never reach the host. The relay
//! (`daemon/gate.rs`) sends the requests and waits, reading no more host
//! input in between, so the host's messages keep their order.

use serde_json::{Value, json};

/// The gate's listing in flight.
#[derive(Debug)]
pub struct Probe {
    /// Id of the page request awaited (as JSON text).
    pub key: String,
    /// The next page's request, for the relay to send.
    pub next: Option<Vec<u8>>,
    /// Why the listing ended without an answer (the calls are refused).
    pub failed: Option<String>,
    /// All pages answered (or failed).
    pub done: bool,
}

/// What the relay does next while a listing is in flight.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Wait for the server's answer.
    Wait,
    /// Send this request (the next page), then wait.
    Send(Vec<u8>),
    /// The listing is complete (or failed): judge the held line again.
    Done,
}

impl Probe {
    /// A listing's first page: the probe and its request.
    pub fn start(seq: u64) -> (Self, Vec<u8>) {
        let (key, request) = request(seq, None);
        (
            Self {
                key,
                next: None,
                failed: None,
                done: false,
            },
            request,
        )
    }

    /// The answer to the page awaited: its tools (`(name, definition)`),
    /// and the next page asked for when there is one.
    pub fn answered<'a>(&mut self, m: &'a Value, seq: u64) -> Vec<&'a Value> {
        let Some(result) = m.get("result") else {
            let why = m
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no result");
            self.failed = Some(format!(
                "the server answered the gate's tools/list with an error: {why}"
            ));
            self.done = true;
            return Vec::new();
        };
        let tools = result
            .get("tools")
            .and_then(Value::as_array)
            .map(|t| t.iter().collect())
            .unwrap_or_default();
        match result.get("nextCursor").filter(|c| !c.is_null()) {
            Some(cursor) => {
                let (key, request) = request(seq, Some(cursor));
                self.key = key;
                self.next = Some(request);
            }
            None => self.done = true,
        }
        tools
    }

    /// The server will not answer (its output ended, or it took too long).
    pub fn fail(&mut self, why: &str) {
        self.failed.get_or_insert_with(|| why.to_owned());
        self.done = true;
    }

    pub fn step(&mut self) -> Step {
        if self.done {
            return Step::Done;
        }
        match self.next.take() {
            Some(r) => Step::Send(r),
            None => Step::Wait,
        }
    }
}

/// A page request and its id's key.
fn request(seq: u64, cursor: Option<&Value>) -> (String, Vec<u8>) {
    let id = Value::String(format!("mcpwatch-gate-list-{seq}"));
    let mut m = json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"});
    if let Some(c) = cursor {
        m["params"] = json!({ "cursor": c });
    }
    (id.to_string(), super::decide::to_line(&m))
}
