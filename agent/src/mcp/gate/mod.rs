//! The MCP gate: what `mcpwatch exec` decides on the wire when it relays a
//! gated server's stdio (`daemon/gate.rs` owns the pipes and the child).
//!
//! `frame` cuts each direction into lines without touching a byte,
//! `decide` judges the lines that matter (tools/list responses, tools/call
//! requests) against the approvals of `approvals` and passes everything else
//! through as it came. What the gate decided is a [`GateEvent`], which the
//! wrapper sends to the agent to become an alert.

pub mod approvals;
pub mod args;
pub mod decide;
pub mod frame;
pub mod probe;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the gate does with a tool that is not approved.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Unlisted {
    /// Withheld from listings, calls refused.
    #[default]
    Deny,
    /// Passed, and alerted (the audit path before switching to `deny`).
    Allow,
}

/// The gate's settings for one server, as the agent hands them to the
/// wrapper: the manifest's `gate` section and the approved tools (the
/// manifest's `pins` and this host's local approvals).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct GateSpec {
    #[serde(default)]
    pub unlisted: Unlisted,
    /// Tool name -> the `sha256:` hash of its approved definition
    /// (`mcp::pins::Tool::pin`).
    #[serde(default)]
    pub approved: BTreeMap<String, String>,
    /// The manifest's `gate.secrets`: actions per secret rule.
    #[serde(default)]
    pub secrets: crate::mcp::secrets::Settings,
    /// Tool name -> its argument rules, resolved for this server.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, args::ToolArgs>,
}

/// Why a tool is not approved.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Unapproved {
    /// No approval names it.
    NotApproved,
    /// Its definition (name, description or schema) differs from the approved one.
    Changed,
    /// Approved, but the server does not list it (the gate asked): its
    /// definition cannot be checked.
    NotListed,
}

impl Unapproved {
    /// The audit's rule id.
    pub fn rule(self) -> &'static str {
        match self {
            Self::NotApproved => "not_approved",
            Self::Changed => "changed",
            Self::NotListed => "not_listed",
        }
    }
}

/// What the gate did with a message it judged: the audit line's kind is
/// `gate.<outcome>`. (The result path's scanning adds its outcomes here.)
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Passed on to the server.
    Allowed,
    /// Answered by the gate with an error: the server never received it.
    Denied,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
        }
    }
}

/// One judged `tools/call`: the audit's record of it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Decision {
    pub tool: String,
    pub call_id: Option<String>,
    pub outcome: Outcome,
    /// What decided: `approved`, `unlisted_allow`, `not_approved`,
    /// `changed`, or an argument rule (`args.<argument>.<rule>`).
    pub rule: String,
    /// Why, in words, when a rule refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Nanoseconds the gate added to the message's way (from reading its
    /// last byte to writing it on, or writing the refusal back).
    #[serde(default)]
    pub latency_ns: u64,
}

/// One decision of the gate, reported to the agent (an audit line each;
/// refusals and what alerting asks for are alerts too).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum GateEvent {
    /// A tools/call judged: allowed (approved, or unlisted in `allow` mode) or denied.
    Call(Decision),
    /// Tools removed from a tools/list response: their definitions, for
    /// `mcpwatch approve` to show.
    Withheld { tools: Vec<WithheldTool> },
    /// An unapproved tool listed in `unlisted: "allow"` mode.
    AllowedUnlisted {
        tool: String,
        call_id: Option<String>,
        why: Unapproved,
    },
    /// A message the gate could not judge (not JSON, too long), refused;
    /// `from` is `host` or `server`.
    Refused { from: String, reason: String },
    /// A secret (or poisoning indicator) in a call's arguments or result;
    /// `more` counts the message's findings not reported.
    Secret {
        tool: String,
        call_id: Option<String>,
        place: crate::mcp::secrets::Place,
        finding: crate::mcp::secrets::Finding,
        more: usize,
    },
}

/// A withheld tool's definition as the server listed it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct WithheldTool {
    pub name: String,
    pub hash: String,
    pub why: Unapproved,
    /// The tool object as listed (name, description, inputSchema...).
    pub definition: Value,
}
