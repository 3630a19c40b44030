//! Whose grants an activity is judged against, resolved: the server's, or
//! those of the tools whose calls are in flight when the manifest narrows
//! them; paths expanded (`~`, `${arg}`) and joined with the baseline.

use std::{borrow::Cow, collections::HashMap};

use serde_json::{Value, json};

use super::ServerPolicy;
use crate::policy::{
    activity::ProcContext,
    baseline::{self, BaselinePaths, Runtime},
    glob::{GlobSet, PathGlob},
    manifest::{ExePattern, Outbound, ToolGrant, expand, siblings::with_siblings},
    net::HostPattern,
};

/// How many path verdicts a grant remembers before it starts over.
const VERDICTS_MAX: usize = 4096;

/// Whose grants an activity is judged against: the server's (`None`), or a
/// tool's (a call of a tool the manifest narrows is in flight).
pub(super) type Scope<'a> = Option<&'a str>;

/// Baseline, server-wide and per-tool paths, `~` and `${arg}` expanded.
pub(super) struct Paths {
    pub(super) base_read: Vec<PathGlob>,
    pub(super) base_write: Vec<PathGlob>,
    pub(super) server: Resolved,
    /// Tools that narrow `read` or `write`, built at their first call.
    tools: HashMap<String, Resolved>,
}

/// One grant's paths with the baseline.
pub(super) struct Resolved {
    pub(super) read: Vec<PathGlob>,
    pub(super) write: Vec<PathGlob>,
    /// Everything readable (declared reads and writes, baseline), in one set.
    readable: GlobSet,
    /// Everything writable (declared writes, baseline), in one set.
    writable: GlobSet,
    /// Whether a path is declared (readable, or writable when the flag is
    /// set), for the paths seen since the declaration was last resolved.
    verdicts: HashMap<(String, bool), bool>,
}

impl Resolved {
    fn new(read: Vec<PathGlob>, write: Vec<PathGlob>, base_read: &[PathGlob], base_write: &[PathGlob]) -> Self {
        Self {
            readable: GlobSet::new(read.iter().chain(&write).chain(base_read).chain(base_write)),
            writable: GlobSet::new(write.iter().chain(base_write)),
            read,
            write,
            verdicts: HashMap::new(),
        }
    }

    /// A directory above a declared path (listing on the way to it).
    pub(super) fn is_ancestor_of_declared(&self, dir: &str) -> bool {
        let dir = dir.trim_end_matches('/');
        let prefix = format!("{dir}/");
        self.read
            .iter()
            .chain(self.write.iter())
            .any(|g| dir.is_empty() || g.text.starts_with(&prefix) || g.text == dir)
    }
}

impl ServerPolicy {
    /// Path patterns expanded with the owner's home, the bound arguments and
    /// environment variables; a declared file brings its siblings.
    pub(super) fn globs(&self, list: &[String]) -> Vec<PathGlob> {
        let (bindings, roots) = (&self.bindings, &self.client_roots);
        // The client's roots stand in for `${roots}` only when the launch
        // named no directory: a server started on its own directories keeps
        // them as its grant even when its client names more (the filesystem
        // server trusts `roots/list` over its argv; the manifest does not).
        let values = |n: &str| -> Vec<String> {
            match bindings.get(n) {
                Some(bound) if !bound.is_empty() => bound.iter().cloned().collect(),
                _ if n == super::ROOTS => roots.iter().cloned().collect(),
                _ => Vec::new(),
            }
        };
        list.iter()
            .flat_map(|p| expand(p, &self.home, &values))
            .flat_map(with_siblings)
            .filter_map(|p| PathGlob::new(&p).ok())
            .collect()
    }

    /// The paths of a scope: the server's, or a tool's when it narrows
    /// `read` or `write` (the other falls back to the server's).
    pub(super) fn resolved(&mut self, scope: Scope<'_>) -> &mut Resolved {
        if self.paths.is_none() {
            let runtimes: Vec<Runtime> = self.runtimes.iter().copied().collect();
            let mut base = BaselinePaths::build(&runtimes, &self.home);
            base.read
                .extend(self.code_dirs.iter().filter_map(|d| PathGlob::new(d).ok()));
            let (read, write) = (self.globs(&self.manifest.read), self.globs(&self.manifest.write));
            self.paths = Some(Paths {
                server: Resolved::new(read, write, &base.read, &base.write),
                base_read: base.read,
                base_write: base.write,
                tools: HashMap::new(),
            });
        }
        let narrowed = scope.filter(|t| {
            self.manifest
                .tools
                .get(*t)
                .is_some_and(|g| g.read.is_some() || g.write.is_some())
        });
        let Some(tool) = narrowed else {
            return &mut self.paths.as_mut().expect("built").server;
        };
        if !self.paths.as_ref().expect("built").tools.contains_key(tool) {
            let m = self.manifest.clone();
            let g = &m.tools[tool];
            let read = self.globs(g.read.as_deref().unwrap_or(&m.read));
            let write = self.globs(g.write.as_deref().unwrap_or(&m.write));
            let p = self.paths.as_mut().expect("built");
            let r = Resolved::new(read, write, &p.base_read, &p.base_write);
            p.tools.insert(tool.to_owned(), r);
        }
        self.paths
            .as_mut()
            .expect("built")
            .tools
            .get_mut(tool)
            .expect("inserted")
    }

    /// The grants `ctx`'s activity is judged against: `[None]` (server-wide)
    /// outside tool calls and during calls of tools the manifest does not
    /// narrow; else the tool of the call, or of every call in flight when
    /// there are several (the activity may belong to any of them, so it is
    /// allowed when one of their grants allows it).
    pub(super) fn scopes<'c>(&self, ctx: &'c ProcContext) -> Cow<'c, [Scope<'c>]> {
        // Every event of a watched process comes here: no allocation unless a narrowed tool's call is in flight.
        const SERVER_WIDE: &[Scope<'static>] = &[None];
        let Some(tool) = ctx.tool.as_deref() else {
            return Cow::Borrowed(SERVER_WIDE);
        };
        if self.manifest.tools.is_empty() {
            return Cow::Borrowed(SERVER_WIDE);
        }
        let mut tools: Vec<&str> = if ctx.tools_in_flight.is_empty() {
            vec![tool]
        } else {
            ctx.tools_in_flight.iter().map(String::as_str).collect()
        };
        tools.sort_unstable();
        tools.dedup();
        if tools.iter().any(|t| !self.manifest.tools.contains_key(*t)) {
            return Cow::Borrowed(SERVER_WIDE);
        }
        Cow::Owned(tools.into_iter().map(Some).collect())
    }

    fn tool_grant(&self, scope: Scope<'_>) -> Option<&ToolGrant> {
        scope.and_then(|t| self.manifest.tools.get(t))
    }

    pub(super) fn exec_grant(&self, scope: Scope<'_>) -> &[ExePattern] {
        self.tool_grant(scope)
            .and_then(|g| g.exec.as_deref())
            .unwrap_or(&self.manifest.exec)
    }

    pub(super) fn outbound_grant(&self, scope: Scope<'_>) -> &Outbound {
        self.tool_grant(scope)
            .and_then(|g| g.outbound.as_ref())
            .unwrap_or(&self.manifest.outbound)
    }

    pub(super) fn inbound_grant(&self, scope: Scope<'_>) -> &[HostPattern] {
        self.tool_grant(scope)
            .and_then(|g| g.inbound.as_deref())
            .unwrap_or(&self.manifest.inbound)
    }

    /// `declared` of an alert: the grant that applied, as written, naming
    /// the tool when it was a tool's (`fields` of the manifest to show).
    pub(super) fn declared_of(&self, scopes: &[Scope<'_>], ctx: &ProcContext, fields: &[&str]) -> Value {
        let tool = scopes[0].and(ctx.tool.as_deref());
        let spec = tool.and_then(|t| self.manifest.raw.tools.get(t));
        let raw = &self.manifest.raw;
        let mut out = serde_json::Map::new();
        for f in fields {
            let v = match *f {
                "read" => json!(spec.and_then(|s| s.read.as_ref()).unwrap_or(&raw.read)),
                "write" => json!(spec.and_then(|s| s.write.as_ref()).unwrap_or(&raw.write)),
                "network" => {
                    let net = spec.and_then(|s| s.network.as_ref());
                    json!({
                        "outbound": net.and_then(|n| n.outbound.as_ref()).unwrap_or(&raw.network.outbound),
                        "inbound": net.and_then(|n| n.inbound.as_ref()).unwrap_or(&raw.network.inbound),
                    })
                }
                "listen" => json!(raw.listen),
                "exec" => {
                    let runtimes: Vec<Runtime> = self.runtimes.iter().copied().collect();
                    json!(baseline::describe_exec(self.exec_grant(tool), &runtimes))
                }
                _ => continue,
            };
            out.insert((*f).to_owned(), v);
        }
        if let Some(t) = tool {
            out.insert("tool".into(), json!(t));
        }
        Value::Object(out)
    }

    /// Whether a scope's grant and the baseline cover `path` (for writing, or reading).
    pub(super) fn declares(&mut self, scope: Scope<'_>, path: &str, writes: bool) -> bool {
        let r = self.resolved(scope);
        if let Some(v) = r.verdicts.get(&(path.to_owned(), writes)) {
            return *v;
        }
        let v = if writes {
            r.writable.matches(path)
        } else {
            r.readable.matches(path)
        };
        if r.verdicts.len() >= VERDICTS_MAX {
            r.verdicts.clear();
        }
        r.verdicts.insert((path.to_owned(), writes), v);
        v
    }

    /// Whether a scope's grant names a credential location explicitly
    /// (a broad `~/**` does not declare `~/.ssh`).
    pub(super) fn names_credential(&mut self, scope: Scope<'_>, path: &str, markers: &[&str]) -> bool {
        let r = self.resolved(scope);
        r.read
            .iter()
            .chain(r.write.iter())
            .any(|g| g.matches(path) && markers.iter().any(|m| g.text.contains(m)))
    }
}

/// What makes a repeat of a tool rule the same alert: the tool too (the same
/// path read outside two tools' grants is two findings).
pub(super) fn tool_key(ctx: &ProcContext, key: &str) -> String {
    format!("{}\u{0}{key}", ctx.tool.as_deref().unwrap_or(""))
}

/// "tool `x`'s grant", or "the grants of tools `x`, `y` (calls in flight)".
pub(super) fn grant_words(scopes: &[Scope<'_>]) -> String {
    let tools: Vec<String> = scopes.iter().flatten().map(|t| format!("`{t}`")).collect();
    match tools.as_slice() {
        [one] => format!("tool {one}'s grant"),
        many => format!("the grants of tools {} (calls in flight)", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_support::*;
    use crate::policy::activity::{Activity, NetActivity, NetOp, Proto};

    #[test]
    fn a_tools_narrowed_exec_and_network_grants() {
        let (mut s, ctx) = server(NARROWED, &["/v/bin/python", "-m", "mcp_server_git"]);
        let git = |a: &[&str]| exec("/usr/bin/git", &argv(a));
        let status = during(&ctx, "status", "3");
        let f = s.evaluate(&status, &git(&["git", "status"]));
        assert_eq!(rules(&f), ["tool.exec_outside_grant"]);
        assert_eq!(
            f[0].summary,
            "srv ran a program outside tool `status`'s grant: /usr/bin/git"
        );
        assert_eq!(f[0].declared.as_ref().unwrap()["tool"], "status");
        assert!(s.evaluate(&during(&ctx, "peek", "4"), &git(&["git", "log"])).is_empty());
        assert!(s.evaluate(&ctx, &git(&["git", "log"])).is_empty());
        assert_eq!(
            rules(&s.evaluate(&status, &exec("/bin/sh", &argv(&["sh", "-c", "id"])))),
            ["exec.shell"],
            "undeclared everywhere: the usual rule"
        );
        let search = during(&ctx, "search", "5");
        assert!(
            s.evaluate(&search, &connect("140.82.112.3", 443, Some("api.github.com")))
                .is_empty()
        );
        let f = s.evaluate(&search, &connect("127.0.0.1", 5432, None));
        assert_eq!(rules(&f), ["tool.net_outside_grant"]);
        assert_eq!(
            f[0].summary,
            "srv connected outside tool `search`'s grant: 127.0.0.1:5432"
        );
        assert_eq!(
            f[0].declared.as_ref().unwrap()["network"]["outbound"]["allow_host"],
            json!(["api.github.com:443"])
        );
        assert!(s.evaluate(&ctx, &connect("127.0.0.1", 5432, None)).is_empty());
        assert_eq!(
            rules(&s.evaluate(&search, &connect("1.2.3.4", 80, None))),
            ["net.connect_undeclared"]
        );
        let accept = |addr: &str| {
            Activity::Net(NetActivity {
                op: NetOp::Accept,
                proto: Proto::Tcp,
                addr: Some(addr.parse().unwrap()),
                port: 40000,
                unix_path: None,
                hostname: None,
                exposed: false,
                result: 0,
                via: None,
            })
        };
        assert!(s.evaluate(&search, &accept("127.0.0.1")).is_empty());
        assert_eq!(
            rules(&s.evaluate(&search, &accept("10.0.0.1"))),
            ["tool.net_outside_grant"]
        );
        assert!(
            s.evaluate(&ctx, &accept("10.0.0.1")).is_empty(),
            "server-wide: any peer"
        );
    }

    #[test]
    fn overlapping_calls_are_judged_against_every_grant_in_flight() {
        let (mut s, ctx) = server(NARROWED, NODE);
        let both = |tools: &[&str]| ProcContext {
            tools_in_flight: tools.iter().map(|t| t.to_string()).collect(),
            ..during(&ctx, tools[tools.len() - 1], "2")
        };
        // The most recent call is peek's, but read_file's (server-wide read) may have read it.
        assert!(
            s.evaluate(&both(&["read_file", "peek"]), &open("/data/secret.txt", false, 3))
                .is_empty()
        );
        // A tool the manifest does not narrow: the server's grant.
        assert!(
            s.evaluate(&both(&["other", "peek"]), &open("/data/secret.txt", false, 3))
                .is_empty()
        );
        let f = s.evaluate(&both(&["notes", "peek"]), &open("/data/secret.txt", false, 3));
        assert_eq!(rules(&f), ["tool.read_outside_grant"]);
        assert_eq!(
            f[0].summary,
            "srv read outside the grants of tools `notes`, `peek` (calls in flight): /data/secret.txt"
        );
        assert_eq!(f[0].declared.as_ref().unwrap()["tool"], "peek", "the attributed call's");
    }
}
