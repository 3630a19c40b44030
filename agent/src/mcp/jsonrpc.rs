//! JSON-RPC 2.0 messages, as MCP sends them: one per line, or a batch (an
//! array). Anything else is garbage: described, never fatal.

use serde_json::Value;

/// A request id as sent (number or string), kept as its JSON text so `3` and
/// `"3"` stay distinct.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Number(_) | Value::String(_) => Some(Self(v.to_string())),
            _ => None,
        }
    }

    /// The id as a reader knows it: `3` for 3, `abc` for "abc".
    pub fn display(&self) -> String {
        match serde_json::from_str::<Value>(&self.0) {
            Ok(Value::String(s)) => s,
            _ => self.0.clone(),
        }
    }
}

impl From<&str> for Id {
    /// The id of a JSON text (`"7"` is the number 7, `"\"a\""` the string a).
    fn from(json: &str) -> Self {
        Self(json.to_owned())
    }
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Result(Value),
    Error { code: i64, message: String },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    Request { id: Id, method: String, params: Value },
    Notification { method: String, params: Value },
    Response { id: Id, outcome: Outcome },
}

/// Why a line is not JSON-RPC.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Garbage {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a JSON-RPC 2.0 message: {0}")]
    NotJsonRpc(&'static str),
    #[error("empty batch")]
    EmptyBatch,
}

/// What one line holds: its messages, and garbage found in a batch.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    pub messages: Vec<Message>,
    pub garbage: Vec<Garbage>,
}

/// Parses one line. A batch yields its valid members and a garbage entry per invalid one.
pub fn parse(line: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            out.garbage.push(Garbage::NotJson(e.to_string()));
            return out;
        }
    };
    match value {
        Value::Array(items) if items.is_empty() => out.garbage.push(Garbage::EmptyBatch),
        Value::Array(items) => {
            for item in items {
                match message(item) {
                    Ok(m) => out.messages.push(m),
                    Err(g) => out.garbage.push(g),
                }
            }
        }
        v => match message(v) {
            Ok(m) => out.messages.push(m),
            Err(g) => out.garbage.push(g),
        },
    }
    out
}

fn message(v: Value) -> Result<Message, Garbage> {
    let Value::Object(mut o) = v else {
        return Err(Garbage::NotJsonRpc("not an object"));
    };
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(Garbage::NotJsonRpc("no \"jsonrpc\": \"2.0\""));
    }
    let id = o.get("id").filter(|v| !v.is_null()).cloned();
    if let Some(method) = o.get("method") {
        let method = method
            .as_str()
            .ok_or(Garbage::NotJsonRpc("method is not a string"))?
            .to_owned();
        let params = o.remove("params").unwrap_or(Value::Null);
        return Ok(match id {
            Some(id) => Message::Request {
                id: Id::from_value(&id).ok_or(Garbage::NotJsonRpc("id is neither number nor string"))?,
                method,
                params,
            },
            None => Message::Notification { method, params },
        });
    }
    let id = id
        .as_ref()
        .and_then(Id::from_value)
        .ok_or(Garbage::NotJsonRpc("response without a usable id"))?;
    let outcome = if let Some(result) = o.remove("result") {
        Outcome::Result(result)
    } else if let Some(err) = o.get("error") {
        Outcome::Error {
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: err.get("message").and_then(Value::as_str).unwrap_or("").to_owned(),
        }
    } else {
        return Err(Garbage::NotJsonRpc("neither method, result nor error"));
    };
    Ok(Message::Response { id, outcome })
}

/// A short, printable excerpt of a line, for reports.
pub fn excerpt(line: &[u8], max: usize) -> String {
    let head = &line[..line.len().min(max)];
    let mut s: String = String::from_utf8_lossy(head).escape_debug().collect();
    if line.len() > max {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_notifications_and_responses() {
        let p = parse(br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"}}"#);
        assert_eq!(
            p.messages,
            [Message::Request {
                id: Id::from("3"),
                method: "tools/call".into(),
                params: json!({"name": "echo"})
            }]
        );
        let p = parse(br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#);
        assert!(
            matches!(&p.messages[0], Message::Notification { method, .. } if method == "notifications/tools/list_changed")
        );
        let p = parse(br#"{"jsonrpc":"2.0","id":"a-1","result":{"tools":[]}}"#);
        let Message::Response { id, outcome } = &p.messages[0] else {
            panic!()
        };
        assert_eq!(id.display(), "a-1");
        assert_eq!(outcome, &Outcome::Result(json!({"tools": []})));
        let p = parse(br#"{"jsonrpc":"2.0","id":4,"error":{"code":-32601,"message":"nope"}}"#);
        assert!(matches!(
            &p.messages[0],
            Message::Response {
                outcome: Outcome::Error { code: -32601, .. },
                ..
            }
        ));
        assert!(p.garbage.is_empty());
    }

    #[test]
    fn ids_keep_their_type() {
        assert_ne!(Id::from("3"), Id::from("\"3\""));
        assert_eq!(Id::from("\"3\"").display(), "3");
    }

    #[test]
    fn batches_keep_valid_members() {
        let p = parse(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"nope":1},{"jsonrpc":"2.0","method":"n"}]"#);
        assert_eq!(p.messages.len(), 2);
        assert_eq!(p.garbage, [Garbage::NotJsonRpc("no \"jsonrpc\": \"2.0\"")]);
        assert_eq!(parse(b"[]").garbage, [Garbage::EmptyBatch]);
    }

    #[test]
    fn garbage_is_described_never_fatal() {
        for line in [
            &b"\xff\xfe\x00garbage"[..],
            b"{\"jsonrpc\":\"2.0\"",
            b"42",
            b"{\"jsonrpc\":\"2.0\",\"id\":{}}",
        ] {
            let p = parse(line);
            assert!(p.messages.is_empty() && p.garbage.len() == 1, "{p:?}");
        }
        let p = parse(br#"{"jsonrpc":"2.0","id":[1],"method":"x"}"#);
        assert_eq!(p.garbage, [Garbage::NotJsonRpc("id is neither number nor string")]);
        assert_eq!(excerpt(b"ab\n\xffcdef", 4), "ab\\n\u{fffd}…");
    }
}
