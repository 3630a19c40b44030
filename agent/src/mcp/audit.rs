//! The tool-call audit trail (`--audit-tool-calls`): one `tool_call` line per
//! completed call with its redacted arguments, duration, outcome and the OS
//! activity it caused.

use serde_json::{Map, Value, json};

use super::calls::{Call, Completed};

/// The fields of a `tool_call` line (besides the common ones and `tool`/`call_id`).
pub fn fields(c: &Completed) -> Map<String, Value> {
    let mut m = call_fields(&c.call);
    m.insert("duration_ns".into(), json!(c.duration_ns));
    m.insert("error".into(), json!(c.error.is_some()));
    if let Some(e) = &c.error {
        m.insert("error_message".into(), json!(e));
    }
    m
}

/// A call whose response never came (cut by the capture, or the server hung):
/// reported when it is given up.
pub fn abandoned_fields(call: &Call) -> Map<String, Value> {
    let mut m = call_fields(call);
    m.insert("error".into(), json!(true));
    m.insert("error_message".into(), json!("no response seen"));
    m
}

fn call_fields(call: &Call) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("arguments".into(), call.args.clone());
    m.insert("activity".into(), json!(call.activity));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::{calls::Activity, jsonrpc::Id};

    #[test]
    fn a_completed_call_carries_outcome_and_activity() {
        let c = Completed {
            call: Call {
                id: Id::from("5"),
                tool: "read_file".into(),
                args: json!({"path": "/etc/hosts", "token": "[REDACTED]"}),
                args_summary: String::new(),
                started_ns: 1,
                pid: 2,
                activity: Activity {
                    files: 3,
                    connects: 0,
                    execs: 1,
                    events: 4,
                },
            },
            duration_ns: 1500,
            error: Some("denied".into()),
        };
        let f = Value::Object(fields(&c));
        assert_eq!(f["arguments"]["token"], "[REDACTED]");
        assert_eq!(
            f["activity"],
            json!({"files": 3, "connects": 0, "execs": 1, "events": 4})
        );
        assert_eq!(
            (f["duration_ns"].as_u64(), f["error"].as_bool()),
            (Some(1500), Some(true))
        );
        assert_eq!(f["error_message"], "denied");
        assert_eq!(
            Value::Object(abandoned_fields(&c.call))["error_message"],
            "no response seen"
        );
    }
}
