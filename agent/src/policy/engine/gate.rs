//! A server's argument rules for its gate (`gate.tools.NAME.args`),
//! resolved as its grants are: path patterns with `~` and `${args}`
//! expanded, `"grants"` as the tool's read and write grants, `"hosts"` as
//! its declared outbound hosts.

use std::collections::BTreeMap;

use super::ServerPolicy;
use crate::{
    mcp::gate::args::{ArgRule, ToolArgs},
    policy::manifest::gate::{ArgRuleSpec, Within},
};

impl ServerPolicy {
    pub(super) fn gate_args(&mut self) -> BTreeMap<String, ToolArgs> {
        let m = self.manifest.clone();
        let Some(section) = &m.gate else {
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for (tool, t) in &section.tools {
            let mut args = ToolArgs::new();
            for (arg, spec) in &t.args {
                args.insert(arg.clone(), self.arg_rule(tool, spec));
            }
            out.insert(tool.clone(), args);
        }
        out
    }

    fn arg_rule(&mut self, tool: &str, spec: &ArgRuleSpec) -> ArgRule {
        let paths = spec.paths.as_ref().map(|w| match w {
            Within::Given(ps) => self.globs(ps).into_iter().map(|g| g.text).collect(),
            Within::Declared(_) => {
                let r = self.resolved(Some(tool));
                r.read.iter().chain(&r.write).map(|g| g.text.clone()).collect()
            }
        });
        let hosts = spec.urls.as_ref().map(|w| match w {
            Within::Given(hs) => hs.clone(),
            Within::Declared(_) => self.declared_hosts(tool),
        });
        ArgRule {
            paths,
            hosts,
            one_of: spec.one_of.clone(),
            regex: spec.regex.clone(),
            max_bytes: spec.max_bytes,
        }
    }

    /// The tool's outbound hosts as written (its own, or the server's), each
    /// host without a port taking the declared `allow_port`s.
    fn declared_hosts(&self, tool: &str) -> Vec<String> {
        let raw = &self.manifest.raw;
        let o = raw
            .tools
            .get(tool)
            .and_then(|t| t.network.as_ref())
            .and_then(|n| n.outbound.as_ref())
            .unwrap_or(&raw.network.outbound);
        if o.insecure_allow_all {
            return vec!["*".into()];
        }
        let mut out = Vec::new();
        for h in &o.allow_host {
            let has_port = crate::policy::net::HostPattern::parse(h).is_ok_and(|p| p.port.is_some());
            if has_port || o.allow_port.is_empty() {
                out.push(h.to_string());
                continue;
            }
            // `host:port` of an IPv6 address needs brackets.
            let base = if h.contains(':') && !h.contains('/') {
                format!("[{h}]")
            } else {
                h.to_string()
            };
            out.extend(o.allow_port.iter().map(|p| format!("{base}:{p}")));
        }
        out
    }
}
