//! What a sink carries: alerts, and at `level = "summary"` the event lines
//! of that level too (one enum through queue, spool and destinations).

use serde_json::Value;

use crate::{
    alerts::Alert,
    config::Schema,
    output::format::{self, ecs, ocsf},
};

/// The spooled form of an event line: `{"event_line": {...}}`. Alerts are
/// spooled as plain alerts, so spools written before levels replay as is.
const LINE_KEY: &str = "event_line";

#[derive(Debug, Clone, PartialEq)]
pub enum SinkRecord {
    Alert(Box<Alert>),
    /// An event line as the events file writes it (`kind`, `ts`, ...).
    Line(Value),
}

impl From<Alert> for SinkRecord {
    fn from(a: Alert) -> Self {
        SinkRecord::Alert(Box::new(a))
    }
}

impl SinkRecord {
    /// The alert's id (what `test-alert` and the logs track), none for a line.
    pub fn alert_id(&self) -> Option<&str> {
        match self {
            SinkRecord::Alert(a) => Some(&a.id),
            SinkRecord::Line(_) => None,
        }
    }

    /// Names the record in logs: `alert 1-3`, `a tool_call line`.
    pub fn label(&self) -> String {
        match self {
            SinkRecord::Alert(a) => format!("alert {}", a.id),
            SinkRecord::Line(l) => format!("a {} line", l["kind"].as_str().unwrap_or("event")),
        }
    }

    /// RFC 3339 time of the alert or line.
    pub fn ts(&self) -> &str {
        match self {
            SinkRecord::Alert(a) => &a.ts,
            SinkRecord::Line(l) => l["ts"].as_str().unwrap_or_default(),
        }
    }

    pub fn host(&self) -> &str {
        match self {
            SinkRecord::Alert(a) => &a.host,
            SinkRecord::Line(_) => ocsf::host(),
        }
    }

    /// The JSON document under `schema`: an ECS `event.kind: "event"` or an
    /// OCSF activity class for a line (the events file's OCSF mapping).
    pub fn document(&self, schema: Schema) -> Value {
        match (self, schema) {
            (SinkRecord::Alert(a), _) => format::document(a, schema),
            (SinkRecord::Line(l), Schema::Ecs) => ecs::from_event(l, ocsf::host()),
            (SinkRecord::Line(l), Schema::Ocsf) => ocsf::from_event(l),
        }
    }

    /// One spool line (no newline).
    pub fn to_spooled(&self) -> serde_json::Result<Vec<u8>> {
        match self {
            SinkRecord::Alert(a) => serde_json::to_vec(a),
            SinkRecord::Line(l) => serde_json::to_vec(&serde_json::json!({ LINE_KEY: l })),
        }
    }

    pub fn from_spooled(line: &[u8]) -> serde_json::Result<Self> {
        let mut v: Value = serde_json::from_slice(line)?;
        if let Some(o) = v.as_object_mut()
            && o.len() == 1
            && let Some(l) = o.remove(LINE_KEY)
        {
            return Ok(SinkRecord::Line(l));
        }
        serde_json::from_value::<Alert>(v).map(SinkRecord::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spool written before levels existed holds plain alerts: they come
    /// back as alerts; lines come back as lines.
    #[test]
    fn plain_alert_spool_lines_replay_and_lines_round_trip() {
        let a = crate::alerts::test_alert("1-7".into(), "2026-11-21T17:00:00Z".into(), 1, 1);
        let old = serde_json::to_vec(&a).unwrap();
        assert_eq!(SinkRecord::from_spooled(&old).unwrap(), SinkRecord::from(a.clone()));
        assert_eq!(SinkRecord::from(a).to_spooled().unwrap(), old);
        let line = SinkRecord::Line(serde_json::json!({"kind": "tool_call", "ts": "t", "tool": "read_file"}));
        let back = SinkRecord::from_spooled(&line.to_spooled().unwrap()).unwrap();
        assert_eq!(back, line);
        assert_eq!(back.label(), "a tool_call line");
        assert!(SinkRecord::from_spooled(b"{\"event_line\":1,\"x\":2}").is_err());
    }
}
