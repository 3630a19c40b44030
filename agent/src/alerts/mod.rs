//! Alerts: what the agent reports when a watched server does something it
//! should not. Produced by the policy stage, delivered by the output stage
//! (the event stream, and sinks).

pub mod factory;
pub mod fold;
pub mod loss;
pub mod rules;

pub use factory::AlertFactory;
use rules::RuleId;

use serde::{Deserialize, Serialize};

/// How bad an alert is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A MITRE ATT&CK technique.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Mitre {
    /// e.g. `T1552.004`
    pub id: String,
    /// e.g. `Unsecured Credentials: Private Keys`
    pub name: String,
}

/// One ancestor of the offending process.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AlertAncestor {
    pub pid: u32,
    pub exe: String,
}

/// An alert, in the agent's own schema (sinks map it to theirs).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Alert {
    /// Unique id (host-local): `<boot ns of the event>-<sequence>`.
    pub id: String,
    /// When the triggering event happened (RFC 3339, UTC).
    pub ts: String,
    /// Kernel boot-time ns of the triggering event (for latency accounting).
    pub ktime_ns: u64,
    /// Rule id, dotted (`cred.ssh_key`, `exec.undeclared`...).
    pub rule: String,
    pub severity: Severity,
    /// One human-readable line.
    pub summary: String,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Manifest file the server was judged against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub exe: String,
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestry: Vec<AlertAncestor>,
    /// What was seen: path, address, hostname, program... (an object).
    pub evidence: serde_json::Value,
    /// What the manifest declared for that kind of access, when relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mitre: Option<Mitre>,
    /// MCP tool call in flight when it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// Audit mode: enforcement would have blocked this (see `layer`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub would_block: bool,
    /// The enforcement layer that blocked it (`enforce.denied`) or would have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<crate::enforce::Layer>,
    /// Occurrences this alert stands for (1, or the count of a deduplicated repeat).
    pub count: u64,
    /// For a repeat summary: the id of the first alert, sent in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_of: Option<String>,
}

/// This machine's host name, for alerts.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

impl Alert {
    /// An alert of `rule` with its catalogue severity and technique; the
    /// process, server and evidence fields are left empty for the caller.
    pub fn of_rule(rule: RuleId, id: String, ts: String, ktime_ns: u64, summary: String, host: String) -> Alert {
        Alert {
            id,
            ts,
            ktime_ns,
            rule: rule.id.into(),
            severity: rule.severity,
            summary,
            host,
            server: None,
            manifest: None,
            pid: 0,
            ppid: 0,
            uid: 0,
            exe: String::new(),
            argv: Vec::new(),
            ancestry: Vec::new(),
            evidence: serde_json::json!({}),
            declared: None,
            mitre: rule.mitre.map(|(id, name)| Mitre {
                id: id.into(),
                name: name.into(),
            }),
            tool: None,
            call_id: None,
            would_block: false,
            layer: None,
            count: 1,
            repeat_of: None,
        }
    }
}

/// The alert `mcpwatch test-alert` asks for: proves the delivery path to the
/// SIEM end to end without any server misbehaving.
pub fn test_alert(id: String, ts: String, ktime_ns: u64, requested_by: u32) -> Alert {
    let mut a = Alert::of_rule(
        &rules::AGENT_TEST,
        id,
        ts,
        ktime_ns,
        "mcpwatch test alert: delivery works".into(),
        hostname(),
    );
    a.pid = requested_by;
    a.evidence = serde_json::json!({ "requested_by_pid": requested_by });
    a
}
