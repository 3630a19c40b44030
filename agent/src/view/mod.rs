//! Reading the agent's output as a person: one readable line per event or
//! alert (`mcpwatch tail`), and per server what each tool did (`mcpwatch
//! report`), and the live agent on one screen (`mcpwatch top`, from the control
//! socket). `tail` and `report` read the events file the agent writes (`--events-out`, the
//! unit's /var/log/mcpwatch/events.jsonl) in its native JSON-lines format.

pub mod filter;
pub mod line;
pub mod report;
pub mod top;

use serde_json::Value;

/// Where the unit writes the events (`mcpwatch tail`'s and `report`'s default).
pub const DEFAULT_EVENTS: &str = "/var/log/mcpwatch/events.jsonl";

/// A string field, or "".
pub fn s<'a>(e: &'a Value, k: &str) -> &'a str {
    e.get(k).and_then(Value::as_str).unwrap_or("")
}
