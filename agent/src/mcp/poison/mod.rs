//! Poisoning indicators in tool descriptions (and in tool results): text
//! written for the model rather than the user. Each rule has an id and reports
//! the offending span (byte offsets in the field's UTF-8 text) with an excerpt.

mod patterns;

use regex::Regex;
use serde::Serialize;
use serde_json::Value;

use crate::alerts::rules::{self, RuleId};

use super::{pins::Tool, redact};
use patterns::{CREDENTIAL, DIRECTIVE, HIDDEN_MARKER, SECRECY, UNRELATED_ACTION};

/// Descriptions longer than this (in chars) are flagged: room to hide
/// instructions. Measured: the 117 tools of 17 reference and popular servers
/// (`tests/data/listings`) have a median of 52, a 95th percentile of 457 and
/// a longest of 2,781 (sequential-thinking); 2,000 flagged two of them. The
/// longest seen with room to spare (about 1.4 times) for servers not measured.
pub const LONG_DESCRIPTION: usize = 4000;
/// Findings per rule and field at most (a description full of zero-width spaces is one problem).
const MAX_PER_RULE: usize = 4;
/// Context shown either side of a span (descriptions: public metadata).
const CONTEXT: usize = 40;
/// Bytes of a span in a tool result shown at most (no context: results are data).
const RESULT_EXCERPT: usize = 256;

// The rules (ids, severities, techniques) live in the catalogue.
pub const HIDDEN_INSTRUCTION: RuleId = &rules::MCP_POISON_HIDDEN_INSTRUCTION;
pub const MODEL_DIRECTIVE: RuleId = &rules::MCP_POISON_MODEL_DIRECTIVE;
pub const INVISIBLE_UNICODE: RuleId = &rules::MCP_POISON_INVISIBLE_UNICODE;
pub const LONG_DESCRIPTION_RULE: RuleId = &rules::MCP_POISON_LONG_DESCRIPTION;
pub const CREDENTIAL_REFERENCE: RuleId = &rules::MCP_POISON_CREDENTIAL_REFERENCE;
pub const TOOL_SHADOWING: RuleId = &rules::MCP_POISON_TOOL_SHADOWING;
pub const SECRECY_DIRECTIVE: RuleId = &rules::MCP_POISON_SECRECY_DIRECTIVE;
pub const UNRELATED_ACTION_RULE: RuleId = &rules::MCP_POISON_UNRELATED_ACTION;

/// Byte offsets `[start, end)` in the scanned text.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Serialized as its id.
    pub rule: RuleId,
    /// `description`, `inputSchema.properties.x.description`, `result`...
    pub field: String,
    pub span: Span,
    /// The span with some context, invisible characters escaped.
    pub excerpt: String,
    /// Rule-specific: the hidden text tag characters spell, the tool shadowed...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Characters a reader cannot see but a model reads: zero-width and format
/// characters, bidi controls, tag characters, variation selectors (supplement).
pub fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180E
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0x3164 | 0xFEFF | 0xFFA0 | 0xE0000..=0xE007F | 0xE0100..=0xE01EF)
}

/// The ASCII text tag characters (U+E0020..U+E007E) spell, if any.
fn tag_text(s: &str) -> Option<String> {
    let t: String = s
        .chars()
        .filter_map(|c| match c as u32 {
            v @ 0xE0020..=0xE007E => char::from_u32(v - 0xE0000),
            _ => None,
        })
        .collect();
    (!t.is_empty()).then_some(t)
}

/// `text[start..end]` with context, invisible characters escaped.
fn excerpt(text: &str, start: usize, end: usize, context: usize) -> String {
    let mut a = start.saturating_sub(context);
    while !text.is_char_boundary(a) {
        a -= 1;
    }
    let mut b = (end + context).min(text.len());
    while !text.is_char_boundary(b) {
        b += 1;
    }
    let mut out = String::new();
    if a > 0 {
        out.push('…');
    }
    for c in text[a..b].chars() {
        if is_invisible(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else if c == '\n' {
            out.push_str("\\n");
        } else {
            out.push(c);
        }
    }
    if b < text.len() {
        out.push('…');
    }
    out
}

fn finding(rule: RuleId, field: &str, text: &str, start: usize, end: usize) -> Finding {
    Finding {
        rule,
        field: field.to_owned(),
        span: Span { start, end },
        excerpt: excerpt(text, start, end, CONTEXT),
        detail: None,
    }
}

fn regex_findings(re: &Regex, rule: RuleId, field: &str, text: &str) -> Vec<Finding> {
    re.find_iter(text)
        .take(MAX_PER_RULE)
        .map(|m| finding(rule, field, text, m.start(), m.end()))
        .collect()
}

/// Hidden-instruction markers; a tag's span runs to its closing tag when there is one.
fn hidden_instructions(field: &str, text: &str) -> Vec<Finding> {
    let lower = text.to_ascii_lowercase();
    HIDDEN_MARKER
        .captures_iter(text)
        .take(MAX_PER_RULE)
        .map(|c| {
            let m = c.get(0).expect("whole match");
            let end = c
                .get(1)
                .and_then(|tag| {
                    let close = format!("</{}", tag.as_str().to_ascii_lowercase());
                    lower[m.end()..]
                        .find(&close)
                        .and_then(|i| lower[m.end() + i..].find('>').map(|j| m.end() + i + j + 1))
                })
                .unwrap_or(m.end());
            finding(HIDDEN_INSTRUCTION, field, text, m.start(), end)
        })
        .collect()
}

/// Runs of invisible characters.
fn invisible_unicode(field: &str, text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut run: Option<(usize, usize)> = None;
    let flush = |run: &mut Option<(usize, usize)>, out: &mut Vec<Finding>| {
        if let Some((s, e)) = run.take()
            && out.len() < MAX_PER_RULE
        {
            let mut f = finding(INVISIBLE_UNICODE, field, text, s, e);
            let chars = text[s..e].chars().count();
            f.detail = Some(match tag_text(&text[s..e]) {
                Some(hidden) => format!("{chars} invisible characters; tag characters spell {hidden:?}"),
                None => format!("{chars} invisible characters"),
            });
            out.push(f);
        }
    };
    for (i, c) in text.char_indices() {
        if is_invisible(c) {
            let end = i + c.len_utf8();
            run = Some(run.map_or((i, end), |(s, _)| (s, end)));
        } else {
            flush(&mut run, &mut out);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// A tool name unlikely to be an ordinary word (`send_email`, `getWeather`,
/// `kubernetes`), so that mentioning it means the tool. `read` or `search` are not.
fn distinctive(name: &str) -> bool {
    name.len() >= 8
        || (name.len() >= 4 && (name.contains(['_', '-', '.']) || name.chars().skip(1).any(|c| c.is_ascii_uppercase())))
}

/// Mentions of tools of other servers (`tool_shadowing`): one finding per
/// tool named, naming every other server that exposes it.
fn shadowing(field: &str, text: &str, own: &str, others: &[(String, String)]) -> Vec<Finding> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let bytes = text.as_bytes();
    // Tool name -> the servers exposing it, in the order first seen.
    let mut by_tool: Vec<(&str, Vec<&str>)> = Vec::new();
    for (server, tool) in others {
        match by_tool.iter_mut().find(|(t, _)| t == tool) {
            Some((_, servers)) if !servers.contains(&server.as_str()) => servers.push(server),
            Some(_) => {}
            None => by_tool.push((tool, vec![server])),
        }
    }
    let mut out = Vec::new();
    for (tool, servers) in by_tool {
        if !distinctive(tool) || tool == own {
            continue;
        }
        let Some(i) = text.match_indices(tool).map(|(i, _)| i).find(|&i| {
            let end = i + tool.len();
            (i == 0 || !word(bytes[i - 1])) && (end == bytes.len() || !word(bytes[end]))
        }) else {
            continue;
        };
        let mut f = finding(TOOL_SHADOWING, field, text, i, i + tool.len());
        let names: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
        f.detail = Some(match names.as_slice() {
            [one] => format!("names tool {tool:?} of server {one}"),
            many => format!("names tool {tool:?} of servers {}", many.join(", ")),
        });
        out.push(f);
        if out.len() >= MAX_PER_RULE {
            break;
        }
    }
    out
}

/// What a text is, for the rules that apply to it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A description, title or other string of a tool definition.
    Definition,
    /// A parameter's name: credential-like names only (`content_of_id_rsa`).
    ParameterName,
    /// A tool result: data, where credential names and actions are ordinary.
    Result,
}

/// Every rule that applies to one text.
fn scan_text(field: &str, text: &str, own: &str, others: &[(String, String)], kind: Kind) -> Vec<Finding> {
    if kind == Kind::ParameterName {
        let mut out = invisible_unicode(field, text);
        out.extend(regex_findings(&CREDENTIAL, CREDENTIAL_REFERENCE, field, text));
        return out;
    }
    let mut out = hidden_instructions(field, text);
    out.extend(regex_findings(&DIRECTIVE, MODEL_DIRECTIVE, field, text));
    out.extend(regex_findings(&SECRECY, SECRECY_DIRECTIVE, field, text));
    out.extend(invisible_unicode(field, text));
    if kind == Kind::Definition {
        out.extend(regex_findings(&UNRELATED_ACTION, UNRELATED_ACTION_RULE, field, text));
        out.extend(regex_findings(&CREDENTIAL, CREDENTIAL_REFERENCE, field, text));
        out.extend(shadowing(field, text, own, others));
        let chars = text.chars().count();
        if chars > LONG_DESCRIPTION {
            let start = text.char_indices().nth(LONG_DESCRIPTION).map_or(text.len(), |(i, _)| i);
            let mut f = finding(LONG_DESCRIPTION_RULE, field, text, start, text.len());
            f.excerpt = excerpt(text, start, start, CONTEXT);
            f.detail = Some(format!("{chars} characters (threshold {LONG_DESCRIPTION})"));
            out.push(f);
        }
    }
    out
}

/// Schema keys whose strings are machine syntax, not text the model reads.
const SCHEMA_SYNTAX: &[&str] = &[
    "type",
    "format",
    "pattern",
    "$schema",
    "$ref",
    "$id",
    "$anchor",
    "required",
    "contentEncoding",
    "contentMediaType",
];

/// Texts of a schema that reach the model, by JSON path: every string
/// (descriptions, titles, enum values, defaults, examples) but its syntax,
/// and every parameter's name (`properties.NAME` as `...properties.NAME (name)`).
fn schema_texts(v: &Value, path: &str, out: &mut Vec<(String, String, Kind)>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                let p = format!("{path}.{k}");
                if k == "properties"
                    && let Value::Object(props) = v
                {
                    for name in props.keys() {
                        out.push((format!("{p}.{name} (name)"), name.clone(), Kind::ParameterName));
                    }
                }
                match v {
                    Value::String(s) if !SCHEMA_SYNTAX.contains(&k.as_str()) => {
                        out.push((p, s.clone(), Kind::Definition))
                    }
                    _ if SCHEMA_SYNTAX.contains(&k.as_str()) => {}
                    _ => schema_texts(v, &p, out),
                }
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                schema_texts(v, &format!("{path}[{i}]"), out);
            }
        }
        Value::String(s) => out.push((path.to_owned(), s.clone(), Kind::Definition)),
        _ => {}
    }
}

/// Scans a tool's name, description and input schema (its texts, enum
/// values and parameter names). `others`: (server, tool) of other servers.
pub fn scan_tool(tool: &Tool, others: &[(String, String)]) -> Vec<Finding> {
    let mut out = scan_text("name", &tool.name, &tool.name, others, Kind::ParameterName);
    out.extend(scan_text(
        "description",
        &tool.description,
        &tool.name,
        others,
        Kind::Definition,
    ));
    let mut texts = Vec::new();
    schema_texts(&tool.input_schema, "inputSchema", &mut texts);
    for (field, text, kind) in texts {
        out.extend(scan_text(&field, &text, &tool.name, others, kind));
    }
    out
}

/// Scans the text content of a tool result (instructions injected through data).
pub fn scan_result(result: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(content) = result.get("content").and_then(Value::as_array) else {
        return out;
    };
    for (i, c) in content.iter().enumerate() {
        if let Some(text) = c.get("text").and_then(Value::as_str) {
            // Results are data, maybe secret: the span alone, capped and redacted.
            out.extend(
                scan_text(&format!("result.content[{i}].text"), text, "", &[], Kind::Result)
                    .into_iter()
                    .map(|mut f| {
                        let end = f.span.end.min(f.span.start + RESULT_EXCERPT);
                        let mut end = end;
                        while !text.is_char_boundary(end) {
                            end -= 1;
                        }
                        f.excerpt = redact::redact_str(&excerpt(text, f.span.start, end, 0));
                        f
                    }),
            );
        }
    }
    out
}

#[cfg(test)]
mod corpus;
#[cfg(test)]
mod tests;
