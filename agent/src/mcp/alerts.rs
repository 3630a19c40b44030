//! The MCP layer's alerts: a poisoning finding or a rug pull, in words, for
//! the agent to complete (process fields) and make through the one factory.

use serde_json::{Value, json};

use super::{At, McpAlert, Output, pins, pins::Change, poison, secrets};
use crate::alerts::rules::RuleId;

/// A poisoning finding about `subject` (`tool`, `result of tool`) of a tool, as an alert.
pub(super) fn poison_alert(
    at: At<'_>,
    subject: &str,
    (tool, call_id): (&str, Option<String>),
    f: poison::Finding,
    evidence: Value,
) -> McpAlert {
    McpAlert {
        rule: f.rule,
        server: at.server,
        shipped_pins: false,
        summary: format!(
            "{subject} {tool} of server {}: {} in {}: {}",
            at.name,
            rule_words(f.rule),
            f.field,
            f.excerpt
        ),
        evidence,
        tool: Some(tool.to_owned()),
        call_id,
        pid: at.pid,
        ktime_ns: at.ktime_ns,
    }
}

/// Secrets in a tool result the capture reassembled (audit mode): an alert
/// each (at most [`secrets::wire::MAX_REPORTED`], the last counting the rest).
pub(super) fn secret_alerts(at: At<'_>, (tool, call_id): (&str, Option<String>), result: &Value) -> Vec<Output> {
    let found = secrets::audit_findings(result);
    let found: Vec<&secrets::Finding> = found.reported().collect();
    let reported = found.len().min(secrets::wire::MAX_REPORTED);
    found
        .iter()
        .take(reported)
        .enumerate()
        .map(|(i, f)| {
            let more = if i + 1 == reported { found.len() - reported } else { 0 };
            Output::Alert(McpAlert {
                rule: secrets::rule_of(secrets::Place::Result, f),
                server: at.server,
                shipped_pins: false,
                summary: secrets::summary(
                    at.name,
                    tool,
                    call_id.as_deref(),
                    secrets::Place::Result,
                    f,
                    more,
                    "the capture (no gate)",
                ),
                evidence: json!({ "finding": f, "via": "capture", "more": more }),
                tool: Some(tool.to_owned()),
                call_id: call_id.clone(),
                pid: at.pid,
                ktime_ns: at.ktime_ns,
            })
        })
        .collect()
}

/// What a poisoning rule found, in words.
fn rule_words(rule: RuleId) -> &'static str {
    [
        (poison::HIDDEN_INSTRUCTION, "hidden instruction"),
        (poison::MODEL_DIRECTIVE, "instruction addressed to the model"),
        (poison::INVISIBLE_UNICODE, "invisible Unicode"),
        (poison::LONG_DESCRIPTION_RULE, "unusually long text"),
        (poison::CREDENTIAL_REFERENCE, "reference to a credential file"),
        (poison::TOOL_SHADOWING, "reference to another server's tool"),
    ]
    .into_iter()
    .find(|(r, _)| *r == rule)
    .map_or("poisoning indicator", |(_, w)| w)
}

/// A rug pull the gate stopped: the changed definition of `tool` was
/// withheld from the host's `tools/list` and its calls are refused until it
/// is approved again. The alert says so (`blocked` in the evidence, and in words).
pub(super) fn blocked_rug_pull_alert(
    (server, server_id): (&str, u32),
    tool: &super::gate::WithheldTool,
    (learnt, approved): (Option<pins::ToolPin>, Option<&str>),
    pid: u32,
    ktime_ns: u64,
) -> McpAlert {
    let new = pins::Tool::from_value(&tool.definition).map_or_else(
        || pins::ToolPin {
            hash: tool.hash.clone(),
            description_hash: String::new(),
            schema_hash: String::new(),
            description: String::new(),
        },
        |t| pins::Tool::pin(&t),
    );
    // The description approved here is the old one; a pin learnt from the
    // host's side of the wire only when no approval recorded one.
    let old = match (learnt, approved) {
        (Some(p), Some(d)) if p.description != d => Some(description_pin(d)),
        (None, Some(d)) => Some(description_pin(d)),
        (p, _) => p,
    };
    let fields = old.as_ref().map_or_else(Vec::new, |o| {
        [
            (o.description_hash != new.description_hash).then_some("description"),
            (!o.schema_hash.is_empty() && o.schema_hash != new.schema_hash).then_some("inputSchema"),
        ]
        .into_iter()
        .flatten()
        .collect()
    });
    let change = Change::Changed {
        tool: tool.name.clone(),
        old,
        new,
        fields,
    };
    let mut a = rug_pull_alert((server, server_id), &change, "gate", false, pid, ktime_ns);
    a.summary = format!(
        "{}; blocked: the mcpwatch gate withheld it from tools/list and refuses its calls until it is approved again (mcpwatch approve {server} {})",
        a.summary, tool.name
    );
    a.evidence["blocked"] = json!(true);
    a
}

/// What an approval records of a definition: its description only.
fn description_pin(d: &str) -> pins::ToolPin {
    pins::ToolPin {
        hash: String::new(),
        description_hash: pins::sha256(d),
        schema_hash: String::new(),
        description: d.to_owned(),
    }
}

pub(super) fn rug_pull_alert(
    (server, server_id): (&str, u32),
    c: &Change,
    baseline: &str,
    after_list_changed: bool,
    pid: u32,
    ktime_ns: u64,
) -> McpAlert {
    let when = if after_list_changed {
        " (after notifications/tools/list_changed)"
    } else {
        ""
    };
    // Against shipped pins nothing was "pinned" here: the listing is simply not the approved one.
    let shipped = baseline == "manifest";
    let (summary, evidence) = match c {
        Change::Changed { tool, old, new, fields } => {
            let diff = old.as_ref().map(|o| pins::word_diff(&o.description, &new.description));
            let what = if fields.is_empty() {
                "definition".to_owned()
            } else {
                fields.join(" and ")
            };
            let summary = if shipped {
                format!("tool {tool} of server {server} does not match the pin its manifest ships{when}")
            } else {
                format!("tool {tool} of server {server} changed its {what} since it was pinned{when}")
            };
            (
                summary,
                json!({
                    "changed": fields,
                    "old_hash": old.as_ref().map(|o| &o.hash),
                    "new_hash": new.hash,
                    "old_description": old.as_ref().map(|o| &o.description),
                    "new_description": new.description,
                    "diff": diff,
                }),
            )
        }
        Change::Added { tool, new } => (
            if shipped {
                format!("server {server} lists tool {tool}, which its manifest's pins do not approve{when}")
            } else {
                format!("server {server} added tool {tool}, which was not pinned{when}")
            },
            json!({"new_hash": new.hash, "new_description": new.description}),
        ),
        Change::Removed { tool, old } => (
            if shipped {
                format!("server {server} does not list tool {tool}, which its manifest pins{when}")
            } else {
                format!("server {server} no longer lists pinned tool {tool}{when}")
            },
            json!({
                "old_hash": old.as_ref().map(|o| &o.hash),
                "old_description": old.as_ref().map(|o| &o.description),
            }),
        ),
        Change::Renamed { from, to, new } => (
            format!("server {server} renamed pinned tool {from} to {to}{when}"),
            json!({"old_name": from, "new_hash": new.hash, "new_description": new.description}),
        ),
    };
    let mut evidence = evidence;
    evidence["baseline"] = json!(baseline);
    evidence["after_list_changed"] = json!(after_list_changed);
    McpAlert {
        rule: c.rule(),
        server: server_id,
        shipped_pins: shipped,
        summary,
        evidence,
        tool: Some(c.tool().to_owned()),
        call_id: None,
        pid,
        ktime_ns,
    }
}
