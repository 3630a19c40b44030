//! Secrets and poisoning on the wire: tool results and tool-call arguments
//! scanned for credentials (`rules`, a catalogue of the gitleaks kind) and,
//! in results, for the poisoning indicators of `poison`.
//!
//! `scan` finds them in the string values of a JSON message and applies each
//! rule's action (`redact`, `block`, `alert`); `wire` is the gate's use of
//! it (calls in flight, rewritten messages); the kernel capture's use
//! (audit mode, no gate) is [`audit_findings`]. A finding names its rule,
//! the field and the span, never the secret.

mod matcher;
pub mod rules;
pub mod scan;
pub mod wire;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::poison;
use crate::alerts::rules::{self as alert_rules, RuleId};

/// What the gate does with a finding.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The span is replaced by `[REDACTED:<rule>]`.
    Redact,
    /// The whole message is replaced by a JSON-RPC error (a call is refused).
    Block,
    /// Passed as it is, and alerted.
    Alert,
    /// The rule is not applied.
    Off,
}

/// Where a finding was.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// The `arguments` of a `tools/call` from the host.
    Arguments,
    /// The `result` of a `tools/call` from the server.
    Result,
}

/// The manifest's `gate.secrets`: rule id (a secret rule, a poisoning rule
/// applied to results, or `*` for every secret rule) -> action. Rules not
/// named keep their default.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct Settings(pub BTreeMap<String, Action>);

/// Poisoning rules applied to results on the wire, with their default
/// action: a hidden instruction is taken out; the others are left to the
/// capture's alerts (they are too often a benign sentence to cut).
pub const POISON_DEFAULTS: &[(&str, Action)] = &[
    ("mcp.poison.hidden_instruction", Action::Redact),
    ("mcp.poison.model_directive", Action::Alert),
    ("mcp.poison.invisible_unicode", Action::Alert),
];

impl Settings {
    /// The action of rule `id`.
    pub fn action(&self, id: &str) -> Action {
        if let Some(a) = self.0.get(id) {
            return *a;
        }
        if let Some(r) = rules::rule(id) {
            return self.0.get("*").copied().unwrap_or(r.default);
        }
        POISON_DEFAULTS
            .iter()
            .find(|(p, _)| *p == id)
            .map_or(Action::Off, |(_, a)| *a)
    }

    /// The ids this section may name, or why one cannot be.
    pub fn check(&self) -> Result<(), String> {
        for id in self.0.keys() {
            if id != "*" && rules::rule(id).is_none() && !POISON_DEFAULTS.iter().any(|(p, _)| p == id) {
                let known: Vec<&str> = rules::RULES
                    .iter()
                    .map(|r| r.id)
                    .chain(POISON_DEFAULTS.iter().map(|(p, _)| *p))
                    .collect();
                return Err(format!("unknown secret rule {id:?} (known: *, {})", known.join(", ")));
            }
        }
        Ok(())
    }
}

/// Byte offsets `[start, end)` in the field's text.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// One secret (or poisoning indicator) found: never the text itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// A secret rule's id (`private-key`) or a poisoning rule's (`mcp.poison.hidden_instruction`).
    pub rule: String,
    /// `result.content[0].text`, `arguments.note`...
    pub field: String,
    pub span: Span,
    pub action: Action,
    /// The same text was found by the same rule earlier in the message (the
    /// SDKs repeat a text result in `structuredContent`): redacted, not reported.
    #[serde(skip)]
    pub repeat: bool,
}

impl Finding {
    /// Whether the rule is a poisoning indicator (else a secret).
    pub fn is_poison(&self) -> bool {
        self.rule.starts_with("mcp.poison.")
    }
}

/// The secrets in a tool result the kernel capture reassembled (audit mode:
/// nothing is changed, every rule that is not `off` by default counts).
pub fn audit_findings(result: &Value) -> scan::Scanned {
    scan::find(result, Place::Result, &AUDIT)
}

/// Audit mode's settings: every secret rule alerts (the capture changes
/// nothing); poisoning is `poison`'s own alerts there.
static AUDIT: std::sync::LazyLock<Settings> = std::sync::LazyLock::new(|| {
    let mut m: BTreeMap<String, Action> = rules::RULES.iter().map(|r| (r.id.to_owned(), Action::Alert)).collect();
    for (p, _) in POISON_DEFAULTS {
        m.insert((*p).to_owned(), Action::Off);
    }
    Settings(m)
});

/// Poisoning findings of a result, by field, with their actions (those
/// `off` left out).
fn poison_in_result(result: &Value, settings: &Settings) -> Vec<Finding> {
    poison::scan_result(result)
        .into_iter()
        .filter_map(|f| {
            let action = settings.action(f.rule.id);
            (action != Action::Off).then(|| Finding {
                rule: f.rule.id.to_owned(),
                field: f.field,
                span: Span {
                    start: f.span.start,
                    end: f.span.end,
                },
                action,
                repeat: false,
            })
        })
        .collect()
}

/// The alert rule of a finding: a secret's by where it was, a poisoning
/// indicator's own.
pub fn rule_of(place: Place, f: &Finding) -> RuleId {
    if f.is_poison()
        && let Some(r) = alert_rules::ALL.iter().copied().find(|r| r.id == f.rule)
    {
        return r;
    }
    match place {
        Place::Arguments => &alert_rules::MCP_SECRET_IN_ARGUMENTS,
        Place::Result => &alert_rules::MCP_SECRET_IN_RESULT,
    }
}

/// An alert's summary: the rule, the field and the span, never the text.
pub fn summary(
    server: &str,
    tool: &str,
    call_id: Option<&str>,
    place: Place,
    f: &Finding,
    more: usize,
    by: &str,
) -> String {
    let what = match place {
        Place::Arguments => "arguments of a call",
        Place::Result => "result",
    };
    let call = call_id.map(|c| format!(" (call {c})")).unwrap_or_default();
    let kind = if f.is_poison() { "poisoning indicator" } else { "secret" };
    let done = match f.action {
        Action::Redact => "redacted by",
        Action::Block => "blocked by",
        Action::Alert | Action::Off => "passed, alerted by",
    };
    let more = if more > 0 {
        format!(" (and {more} more finding(s) in this message)")
    } else {
        String::new()
    };
    format!(
        "{what} of tool {tool}{call} of server {server}: {kind} {} in {} at bytes {}..{}, {done} {by}{more}",
        f.rule, f.field, f.span.start, f.span.end
    )
}

#[cfg(test)]
mod tests;
