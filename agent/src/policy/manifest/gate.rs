//! The manifest's `gate` section as written, and its checks: what the
//! wrapper's gate does with unapproved tools, and the argument rules of
//! each tool (`mcp::gate::args` applies them, as the agent resolves them
//! for one server in `policy::engine::gate`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{
    error::{EntryError, Failed},
    schema::unique_map,
};
use crate::policy::net::HostPattern;

/// The `gate` section: the wrapper relays the server and lets only approved tools through.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct GateSection {
    #[serde(default)]
    pub unlisted: crate::mcp::gate::Unlisted,
    /// Per tool: rules on its call's arguments.
    #[serde(default, deserialize_with = "unique_map")]
    pub tools: BTreeMap<String, GateTool>,
    /// Secret rule id (or `*`) -> `redact`, `block`, `alert` or `off`.
    #[serde(default)]
    pub secrets: crate::mcp::secrets::Settings,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct GateTool {
    /// Argument name -> its rule.
    #[serde(default, deserialize_with = "unique_map")]
    pub args: BTreeMap<String, ArgRuleSpec>,
}

/// One argument's rule as written: every constraint given must hold.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ArgRuleSpec {
    /// `"grants"` (the tool's `read` and `write` grants) or path patterns.
    #[serde(default)]
    pub paths: Option<Within>,
    /// `"hosts"` (the tool's declared outbound hosts) or host patterns.
    #[serde(default)]
    pub urls: Option<Within>,
    #[serde(default, rename = "enum")]
    pub one_of: Option<Vec<Value>>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// What a value must fall within: the declaration, or the patterns given.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Within {
    Declared(String),
    Given(Vec<String>),
}

/// The keyword of `paths` and `urls` that stands for the declaration.
pub const GRANTS: &str = "grants";
pub const HOSTS: &str = "hosts";

/// Checks every rule; `args` are the manifest's `args` names (for `${NAME}`).
pub(super) fn check(section: &GateSection, args: &[&str]) -> Result<(), Failed> {
    for (tool, t) in &section.tools {
        if tool.is_empty() {
            return Err(("gate.tools".into(), String::new(), EntryError::EmptyToolName));
        }
        for (arg, r) in &t.args {
            let at = format!("gate.tools.{tool}.args.{arg}");
            let bad = |field: &str, value: &str, what: String| {
                Err((format!("{at}.{field}"), value.to_owned(), EntryError::GateRule(what)))
            };
            if r.paths.is_none() && r.urls.is_none() && r.one_of.is_none() && r.regex.is_none() && r.max_bytes.is_none()
            {
                return bad(
                    "",
                    "",
                    "a rule constrains nothing (give paths, urls, enum, regex or max_bytes)".into(),
                );
            }
            match &r.paths {
                Some(Within::Declared(k)) if k != GRANTS => {
                    return bad("paths", k, format!("neither {GRANTS:?} nor a list of path patterns"));
                }
                Some(Within::Given(ps)) => {
                    for (i, p) in ps.iter().enumerate() {
                        super::compile::check_path(p, args).map_err(|e| (format!("{at}.paths[{i}]"), p.clone(), e))?;
                    }
                }
                _ => {}
            }
            match &r.urls {
                Some(Within::Declared(k)) if k != HOSTS => {
                    return bad("urls", k, format!("neither {HOSTS:?} nor a list of host patterns"));
                }
                Some(Within::Given(hs)) => {
                    for (i, h) in hs.iter().enumerate() {
                        HostPattern::parse(h).map_err(|e| (format!("{at}.urls[{i}]"), h.clone(), e.into()))?;
                    }
                }
                _ => {}
            }
            if let Some(re) = &r.regex {
                regex::Regex::new(re).map_err(|e| (format!("{at}.regex"), re.clone(), e.into()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;

    #[test]
    fn argument_rules_are_checked_where_they_are_written() {
        let ok = parse(
            r#"{"args": {"root": {"from": "srv"}}, "gate": {"tools": {"read": {"args": {
                "path": {"paths": "grants", "max_bytes": 4096},
                "dir": {"paths": ["${root}/pub", "~/x/**"]},
                "url": {"urls": "hosts"}, "to": {"urls": [".example.com:443"]},
                "mode": {"enum": ["r", 1]}, "name": {"regex": "[a-z]+"}}}}}}"#,
        )
        .unwrap();
        assert_eq!(ok.gate.unwrap().tools["read"].args.len(), 6);
        for (text, field, what) in [
            (
                r#"{"paths": "everything"}"#,
                "gate.tools.t.args.a.paths",
                "neither \"grants\"",
            ),
            (
                r#"{"paths": ["relative"]}"#,
                "gate.tools.t.args.a.paths[0]",
                "not absolute",
            ),
            (
                r#"{"paths": ["${nope}"]}"#,
                "gate.tools.t.args.a.paths[0]",
                "refers to no entry",
            ),
            (
                r#"{"urls": ["bad host!"]}"#,
                "gate.tools.t.args.a.urls[0]",
                "is not a host name",
            ),
            (
                r#"{"regex": "("}"#,
                "gate.tools.t.args.a.regex",
                "bad regular expression",
            ),
            (r#"{}"#, "gate.tools.t.args.a.", "constrains nothing"),
        ] {
            let m = format!(r#"{{"gate": {{"tools": {{"t": {{"args": {{"a": {text}}}}}}}}}}}"#);
            let e = parse(&m).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
            assert!(e.what.contains(what), "{text}: {e}");
        }
        let e = parse(r#"{"gate": {"tools": {"t": {"args": {"a": {"maxbytes": 1}}}}}}"#).unwrap_err();
        assert!(e.to_string().contains("maxbytes"), "{e}");
    }
}
