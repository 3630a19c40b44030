//! Finding secrets in the string values of a JSON message (never in its
//! raw bytes: an escaped `\n` inside a key is a newline of the text the
//! model reads), and redacting them in place.

use std::{
    collections::{HashMap, HashSet},
    hash::{Hash as _, Hasher as _},
};

use serde_json::Value;

use super::{Action, Finding, Place, Settings, Span, poison_in_result, rules};

/// Shorter strings hold no rule's match.
const MIN_TEXT: usize = 16;

/// What a message held.
#[derive(Debug, Default)]
pub struct Scanned {
    /// In the order met, spans in the field's text as it came.
    pub findings: Vec<Finding>,
}

impl Scanned {
    /// The findings to report: each (rule, text) once.
    pub fn reported(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| !f.repeat)
    }

    /// A finding asks for the message to be refused.
    pub fn blocked(&self) -> Option<&Finding> {
        self.findings.iter().find(|f| f.action == Action::Block)
    }

    /// A finding asks for its span to be replaced.
    pub fn redacts(&self) -> bool {
        self.findings.iter().any(|f| f.action == Action::Redact)
    }
}

/// The findings in `v` (a call's `arguments` or its `result`) under `settings`.
pub fn find(v: &Value, place: Place, settings: &Settings) -> Scanned {
    let mut poison: HashMap<String, Vec<Finding>> = HashMap::new();
    if place == Place::Result {
        for f in poison_in_result(v, settings) {
            poison.entry(f.field.clone()).or_default().push(f);
        }
    }
    let mut out = Scanned::default();
    // (rule, hash of the text found): a repeat is marked, not reported twice.
    let mut seen: HashSet<(String, u64)> = HashSet::new();
    walk(v, &mut root(place), &mut |field, text| {
        let mut hits = secrets_in(field, text, settings);
        hits.extend(poison.remove(field).unwrap_or_default());
        for mut h in without_overlaps(hits) {
            let found = text.get(h.span.start..h.span.end).unwrap_or("");
            let mut hasher = std::hash::DefaultHasher::new();
            found.hash(&mut hasher);
            h.repeat = !seen.insert((h.rule.clone(), hasher.finish()));
            out.findings.push(h);
        }
    });
    out
}

/// Replaces the spans of `redact` findings in `v` by `[REDACTED:<rule>]`.
pub fn redact(v: &mut Value, place: Place, findings: &[Finding]) {
    let mut by_field: HashMap<&str, Vec<&Finding>> = HashMap::new();
    for f in findings.iter().filter(|f| f.action == Action::Redact) {
        by_field.entry(f.field.as_str()).or_default().push(f);
    }
    if by_field.is_empty() {
        return;
    }
    walk_mut(v, &mut root(place), &mut |field, text| {
        let Some(fs) = by_field.get_mut(field) else { return };
        fs.sort_by_key(|f| std::cmp::Reverse(f.span.start));
        for f in fs.iter() {
            let (a, b) = (f.span.start.min(text.len()), f.span.end.min(text.len()));
            if text.is_char_boundary(a) && text.is_char_boundary(b) {
                text.replace_range(a..b, &format!("[REDACTED:{}]", f.rule));
            }
        }
    });
}

fn root(place: Place) -> String {
    match place {
        Place::Arguments => "arguments".into(),
        Place::Result => "result".into(),
    }
}

/// The secret rules' matches in one text.
fn secrets_in(field: &str, text: &str, settings: &Settings) -> Vec<Finding> {
    let mut hits = Vec::new();
    if text.len() < MIN_TEXT {
        return hits;
    }
    for (rule, near) in rules::candidates(text) {
        let action = settings.action(rule.id);
        if action == Action::Off {
            continue;
        }
        hits.extend(rule.secrets(text, &near).into_iter().map(|r| Finding {
            rule: rule.id.to_owned(),
            field: field.to_owned(),
            span: Span {
                start: r.start,
                end: r.end,
            },
            action,
            repeat: false,
        }));
    }
    hits
}

/// The hits that do not overlap an earlier one (catalogue order first,
/// then poisoning), in text order.
fn without_overlaps(hits: Vec<Finding>) -> Vec<Finding> {
    let mut kept: Vec<Finding> = Vec::with_capacity(hits.len());
    for h in hits {
        if !kept
            .iter()
            .any(|k| h.span.start < k.span.end && k.span.start < h.span.end)
        {
            kept.push(h);
        }
    }
    kept.sort_by_key(|f| f.span.start);
    kept
}

/// Binary payloads (base64 of images, audio, blobs): not text anyone reads.
fn binary(o: &serde_json::Map<String, Value>, key: &str) -> bool {
    key == "blob"
        || (key == "data"
            && o.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| matches!(t, "image" | "audio")))
}

fn walk(v: &Value, path: &mut String, f: &mut impl FnMut(&str, &str)) {
    match v {
        Value::String(s) => f(path, s),
        Value::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, f);
                path.truncate(len);
            }
        }
        Value::Object(o) => {
            for (k, item) in o {
                if binary(o, k) {
                    continue;
                }
                let len = path.len();
                path.push('.');
                path.push_str(k);
                walk(item, path, f);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

fn walk_mut(v: &mut Value, path: &mut String, f: &mut impl FnMut(&str, &mut String)) {
    match v {
        Value::String(s) => f(path, s),
        Value::Array(a) => {
            for (i, item) in a.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk_mut(item, path, f);
                path.truncate(len);
            }
        }
        Value::Object(o) => {
            let skip: Vec<String> = o.keys().filter(|k| binary(o, k)).cloned().collect();
            for (k, item) in o.iter_mut() {
                if skip.contains(k) {
                    continue;
                }
                let len = path.len();
                path.push('.');
                path.push_str(k);
                walk_mut(item, path, f);
                path.truncate(len);
            }
        }
        _ => {}
    }
}
