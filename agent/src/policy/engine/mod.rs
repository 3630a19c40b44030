//! The engine: judges each activity of a watched process against its server's
//! manifest, the runtime baselines and the built-in rules; one state per
//! server. No I/O: what only the host knows (the owner's home, the real paths
//! on a command line) is looked up by the caller (`policy/host.rs`) and
//! passed in, so every verdict follows from the arguments and the state.
//!
//! `scope` (whose grants apply, resolved), one module per activity family:
//! `exec`, `file`, `net`, `risky`.

mod enforce;
mod exec;
mod gate;

pub use exec::runs_scripts;
mod file;
mod net;
mod risky;
mod scope;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use serde_json::Value;

use super::{
    activity::{Activity, FileOp, PathFacts, ProcContext},
    baseline::Runtime,
    manifest::{Manifest, Mode},
};
use crate::{
    alerts::rules::RuleId,
    enforce::{Layer, kill::KillSet, sandbox::Sandbox},
};
use scope::Paths;

/// What one rule found in one activity.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub rule: RuleId,
    pub summary: String,
    pub evidence: Value,
    pub declared: Option<Value>,
    /// What makes a repeat the same alert (rule and server are added).
    pub dedup_key: String,
    /// Audit mode: the enforcement layer that would have blocked it.
    pub would_block: Option<Layer>,
}

/// The command line of the process that identified a server, with what the
/// host said of its paths: bindings are redone from it on reload.
#[derive(Default)]
struct RootCommand {
    exe: String,
    argv: Vec<String>,
    cwd: Option<String>,
    paths: PathFacts,
    /// Its environment, when the manifest names a variable (`${env:NAME}`).
    environ: Vec<u8>,
}

/// `${roots}`: the roots the client gave (`roots/list`), with the values of
/// an `args` entry of that name.
pub(super) const ROOTS: &str = crate::policy::manifest::CLIENT_ROOTS;

/// What the engine knows of one server.
pub struct ServerPolicy {
    pub manifest: Arc<Manifest>,
    /// No manifest was found: judged against the least-privilege default.
    pub undeclared: bool,
    runtimes: BTreeSet<Runtime>,
    bindings: BTreeMap<String, BTreeSet<String>>,
    /// The roots its client gave it (`${roots}`), kept across reloads.
    client_roots: BTreeSet<String>,
    home: String,
    paths: Option<Paths>,
    /// Pids whose next exec is the server's own launch (wrapper, rule match).
    launching: HashSet<u32>,
    /// Directories of the code the server was launched to run (`python
    /// server.py`, `node dist/index.js`): its own package tree.
    code_dirs: Vec<String>,
    root: RootCommand,
    /// The mode of manifests that set none.
    default_mode: Mode,
    /// What the wrapper was told to apply (wrapped servers only).
    sandbox: Option<Sandbox>,
    /// Launched by the wrapper: its sandbox is its boundary, never the kill layer.
    wrapped: bool,
    /// What the kernel kills the server for (the kill layer), compiled for
    /// the homes in `kill_homes`; used when it is not wrapped.
    kill: Option<KillSet>,
    kill_homes: Vec<String>,
}

impl ServerPolicy {
    /// The owner's home (`~` in its manifest).
    pub fn home(&self) -> &str {
        &self.home
    }

    fn new(manifest: Arc<Manifest>, undeclared: bool, home: String) -> Self {
        Self {
            default_mode: Mode::Audit,
            sandbox: None,
            wrapped: false,
            kill: None,
            kill_homes: Vec::new(),
            manifest,
            undeclared,
            runtimes: BTreeSet::new(),
            bindings: BTreeMap::new(),
            client_roots: BTreeSet::new(),
            home,
            paths: None,
            launching: HashSet::new(),
            code_dirs: Vec::new(),
            root: RootCommand::default(),
        }
    }

    /// A new manifest (reload): runtimes and launches stay, bindings are redone
    /// from the root command line.
    fn set_manifest(&mut self, manifest: Arc<Manifest>, undeclared: bool) {
        self.manifest = manifest;
        self.undeclared = undeclared;
        self.bindings.clear();
        let root = std::mem::take(&mut self.root);
        self.learn(&root.exe, &root.argv, root.cwd.as_deref(), &root.paths);
        let environ = root.environ.clone();
        self.root = root;
        for w in self.bind_environ(environ) {
            log::warn!("manifest {}: {w}", self.manifest.file_label());
        }
        self.paths = None;
    }

    /// Whether the manifest names environment variables (`${env:NAME}`).
    pub fn names_environment(&self) -> bool {
        !crate::policy::manifest::env::refs(&self.manifest).is_empty()
    }

    /// Binds the `${env:NAME}` the manifest names to the server's
    /// environment (the first one given is kept across reloads). Returns
    /// a warning for each variable whose grants are dropped.
    pub fn bind_environ(&mut self, environ: Vec<u8>) -> Vec<String> {
        if self.root.environ.is_empty() {
            self.root.environ = environ;
        }
        let names = crate::policy::manifest::env::refs(&self.manifest);
        let (values, warnings) = crate::policy::manifest::env::bind(&names, &self.root.environ);
        for (k, v) in values {
            if self.bindings.entry(k).or_default().insert(v) {
                self.paths = None;
            }
        }
        warnings
    }

    /// `pid` was put under watch: its next exec launches the server.
    fn launching(&mut self, pid: u32, exe: &str, argv: &[String], cwd: Option<&str>, paths: &PathFacts) {
        self.launching.insert(pid);
        if self.root.exe.is_empty() {
            self.root = RootCommand {
                exe: exe.to_owned(),
                argv: argv.to_vec(),
                cwd: cwd.map(str::to_owned),
                paths: paths.clone(),
                environ: Vec::new(),
            };
        }
        self.learn(exe, argv, cwd, paths);
    }

    /// Runtimes and argument values a command line shows.
    fn learn(&mut self, exe: &str, argv: &[String], cwd: Option<&str>, paths: &PathFacts) {
        for r in Runtime::detect(exe, argv) {
            if self.runtimes.insert(r) {
                self.paths = None;
            }
        }
        for (k, v) in self.manifest.bind_args(argv, cwd, paths) {
            if self.bindings.entry(k).or_default().insert(v) {
                self.paths = None;
            }
        }
    }

    /// Judges one activity; `paths` are the host's answers for an exec's command line.
    fn judge(&mut self, ctx: &ProcContext, act: &Activity, paths: &PathFacts) -> Vec<Finding> {
        let mut findings = match act {
            Activity::Exec(e) => self.exec(ctx, e, paths).into_iter().collect(),
            // Never a process: only the sandbox's refusal is worth an alert.
            Activity::File(f) if f.op == FileOp::Exec => return self.refused_exec(ctx, f).into_iter().collect(),
            Activity::File(f) => self.file(ctx, f),
            Activity::Net(n) => self.net(ctx, n).into_iter().collect(),
            Activity::Risky(r) => risky::risky(ctx, r).into_iter().collect(),
        };
        self.enforcement(ctx, act, &mut findings);
        // A failed access touched nothing: only a sandbox's refusal and
        // probing for credentials are worth an alert.
        if let Activity::File(f) = act
            && !f.succeeded()
            && crate::policy::catalog::classify(&f.path).is_none()
            && f.same_as.is_none()
        {
            findings.retain(|f| f.rule.id == crate::alerts::rules::ENFORCE_DENIED.id);
        }
        findings
    }

    /// What the wrapper was told to apply, if it was.
    pub fn sandbox(&self) -> Option<&Sandbox> {
        self.sandbox.as_ref()
    }
}

/// Every server's state, and the manifests they are judged against.
#[derive(Default)]
pub struct Engine {
    manifests: Vec<Arc<Manifest>>,
    servers: HashMap<String, ServerPolicy>,
    /// The mode of manifests that set none (`enforce.default_mode`).
    default_mode: Mode,
    /// Sandboxes of servers not set up yet (a previous agent's enforced
    /// servers, taken over before their first event): given at set-up.
    pending_sandboxes: HashMap<String, Sandbox>,
}

impl Engine {
    /// The manifest for a server: by name (or `match.server`), else by the
    /// command line that identified it.
    fn find(&self, server: &str, exe: &str, argv: &[String]) -> Option<Arc<Manifest>> {
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
            let found = {
                let root = &self.servers[&name].root;
                self.find(&name, &root.exe, &root.argv)
            };
            let s = self.servers.get_mut(&name).expect("listed");
            match found {
                Some(m) => s.set_manifest(m, false),
                None => s.set_manifest(Arc::new(Manifest::least_privilege(&name)), true),
            }
        }
    }

    /// Sets up a server first seen as `ctx`'s process, whose owner's home is
    /// `home`. Returns true when it is new and has no manifest.
    pub fn add_server(&mut self, ctx: &ProcContext, home: String) -> bool {
        if self.servers.contains_key(&ctx.server) {
            return false;
        }
        let (m, undeclared) = match self.find(&ctx.server, &ctx.exe, &ctx.argv) {
            Some(m) => (m, false),
            None => (Arc::new(Manifest::least_privilege(&ctx.server)), true),
        };
        let mut s = ServerPolicy::new(m, undeclared, home);
        s.default_mode = self.default_mode;
        s.sandbox = self.pending_sandboxes.remove(&ctx.server);
        self.servers.insert(ctx.server.clone(), s);
        undeclared
    }

    pub fn set_default_mode(&mut self, mode: Mode) {
        self.default_mode = mode;
        for s in self.servers.values_mut() {
            s.default_mode = mode;
        }
    }

    /// The sandbox of `server` (set up by [`Engine::add_server`]) about to
    /// run `command` in `cwd`; `paths`: the host's answers for `command`.
    pub fn compile_sandbox(
        &mut self,
        server: &str,
        command: &[String],
        cwd: Option<&str>,
        paths: &PathFacts,
    ) -> Option<Sandbox> {
        let s = self.servers.get_mut(server)?;
        let mut sb = s.compile_sandbox(command, cwd, paths);
        sb.server = server.to_owned();
        Some(sb)
    }

    /// Completes the sandbox the wrapper is told to apply (seccomp list,
    /// agent pid, missing layers), remembered for judging.
    /// The sandbox `server` runs in; kept for its set-up when it has none yet.
    pub fn set_sandbox(&mut self, server: &str, sb: &Sandbox) {
        match self.servers.get_mut(server) {
            Some(s) => s.sandbox = Some(sb.clone()),
            None => {
                self.pending_sandboxes.insert(server.to_owned(), sb.clone());
            }
        }
    }

    /// `ctx`'s process was put under watch (wrapper, rule, scan): the next
    /// exec of `pid` is the server's launch. `paths`: the host's answers for
    /// `ctx.argv`.
    pub fn launching(&mut self, ctx: &ProcContext, pid: u32, paths: &PathFacts) {
        if let Some(s) = self.servers.get_mut(&ctx.server) {
            s.launching(pid, &ctx.exe, &ctx.argv, ctx.cwd.as_deref(), paths);
        }
    }

    /// The roots the client gave `server` (`roots/list`): added to `${roots}`.
    pub fn client_roots(&mut self, server: &str, roots: Vec<String>) {
        if let Some(s) = self.servers.get_mut(server) {
            for r in roots {
                if s.client_roots.insert(r) {
                    s.paths = None;
                }
            }
        }
    }

    /// The server's environment, for the `${env:NAME}` its manifest names;
    /// returns the warnings of the variables whose grants are dropped.
    pub fn bind_environ(&mut self, server: &str, environ: Vec<u8>) -> Vec<String> {
        self.servers
            .get_mut(server)
            .map(|s| s.bind_environ(environ))
            .unwrap_or_default()
    }

    /// Forgets a server whose processes all exited.
    pub fn forget(&mut self, name: &str) {
        self.servers.remove(name);
        self.pending_sandboxes.remove(name);
    }

    pub fn server(&self, name: &str) -> Option<&ServerPolicy> {
        self.servers.get(name)
    }

    /// The argument rules of a server's gate, resolved for it.
    pub fn gate_args(&mut self, server: &str) -> std::collections::BTreeMap<String, crate::mcp::gate::args::ToolArgs> {
        self.servers
            .get_mut(server)
            .map(ServerPolicy::gate_args)
            .unwrap_or_default()
    }

    /// Every server seen, with the manifest it is judged against.
    pub fn servers(&self) -> impl Iterator<Item = (&str, &ServerPolicy)> {
        self.servers.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// Whether judging `act` reads the host's answers for its command line:
    /// an exec that launches the server (its code directory), or any exec
    /// when the manifest binds `args`.
    pub fn needs_paths(&self, ctx: &ProcContext, act: &Activity) -> bool {
        matches!(act, Activity::Exec(_))
            && self
                .servers
                .get(&ctx.server)
                .is_some_and(|s| !s.manifest.args.is_empty() || s.launching.contains(&ctx.pid))
    }

    /// Judges one activity of a server set up with [`Engine::add_server`]
    /// (none of an unknown one); returns the findings and the manifest they
    /// are judged against.
    pub fn evaluate(
        &mut self,
        ctx: &ProcContext,
        act: &Activity,
        paths: &PathFacts,
    ) -> (Vec<Finding>, Option<Arc<Manifest>>) {
        match self.servers.get_mut(&ctx.server) {
            Some(s) => (s.judge(ctx, act, paths), Some(s.manifest.clone())),
            None => (Vec::new(), None),
        }
    }
}

/// Activities and servers for the engine's tests.
#[cfg(test)]
mod test_support {
    use std::path::Path;

    pub(super) use super::*;
    use crate::policy::activity::{Access, ExecActivity, FileActivity, FileOp, NetActivity, NetOp, ProcPath, Proto};
    pub(super) use crate::policy::test_argv as argv;

    /// The pid of the acting process in [`server`]'s context.
    pub const PID: u32 = 11;

    /// Judging with no command-line paths known to the host (most tests).
    pub trait Judge {
        fn evaluate(&mut self, ctx: &ProcContext, act: &Activity) -> Vec<Finding>;
    }

    impl Judge for ServerPolicy {
        fn evaluate(&mut self, ctx: &ProcContext, act: &Activity) -> Vec<Finding> {
            self.judge(ctx, act, &PathFacts::default())
        }
    }

    pub fn manifest(text: &str) -> Arc<Manifest> {
        Arc::new(Manifest::parse(Path::new("/m/srv.json"), text).expect("valid manifest"))
    }

    /// A server `srv` launched by the wrapper as `launch`, judged against
    /// `text`; `paths` is what the host says of the launch's command line.
    pub fn launched(text: &str, launch: &[&str], paths: &PathFacts) -> (ServerPolicy, ProcContext) {
        let mut s = ServerPolicy::new(manifest(text), false, "/home/u".into());
        let a = argv(launch);
        let wrapper = argv(&["mcpwatch", "exec", "--server", "srv", "--"]);
        s.launching(10, "/usr/local/bin/mcpwatch", &wrapper, None, &PathFacts::default());
        let ctx = ProcContext {
            server: "srv".into(),
            pid: 10,
            ppid: 1,
            uid: 1000,
            exe: a[0].clone(),
            argv: a.clone(),
            ..Default::default()
        };
        let launch = s.judge(&ctx, &exec(&a[0], &a), paths);
        assert!(launch.is_empty(), "the launch is the host's command: {launch:?}");
        (
            s,
            ProcContext {
                pid: PID,
                ppid: 10,
                ..ctx
            },
        )
    }

    /// [`launched`], the host knowing none of its paths.
    pub fn server(text: &str, launch: &[&str]) -> (ServerPolicy, ProcContext) {
        launched(text, launch, &PathFacts::default())
    }

    pub fn exec(path: &str, a: &[String]) -> Activity {
        Activity::Exec(ExecActivity {
            filename: path.into(),
            argv: a.to_vec(),
            ..Default::default()
        })
    }

    /// An open by [`PID`], its /proc target parsed as the pipeline does.
    pub fn open(path: &str, write: bool, result: i64) -> Activity {
        Activity::File(FileActivity {
            op: FileOp::Open,
            path: path.into(),
            path2: None,
            access: Access {
                read: !write,
                write,
                create: write,
                ..Default::default()
            },
            result,
            path_truncated: false,
            proc_path: ProcPath::parse(path, PID),
            via: None,
            identity: None,
            same_as: None,
        })
    }

    pub fn connect(addr: &str, port: u16, hostname: Option<&str>) -> Activity {
        Activity::Net(NetActivity {
            op: NetOp::Connect,
            proto: Proto::Tcp,
            addr: Some(addr.parse().unwrap()),
            port,
            unix_path: None,
            hostname: hostname.map(str::to_owned),
            exposed: false,
            result: 0,
            via: None,
        })
    }

    pub fn rules(f: &[Finding]) -> Vec<&'static str> {
        f.iter().map(|f| f.rule.id).collect()
    }

    pub const NODE: &[&str] = &[
        "node",
        "/srv/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js",
        "/data/projects",
    ];

    /// `ctx` during call `id` of `tool`.
    pub fn during(ctx: &ProcContext, tool: &str, id: &str) -> ProcContext {
        ProcContext {
            tool: Some(tool.into()),
            call_id: Some(id.into()),
            ..ctx.clone()
        }
    }

    pub const NARROWED: &str = r#"{
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
}

#[cfg(test)]
mod tests {
    use super::test_support::*;

    #[test]
    fn engine_binds_manifests_by_name_or_command_line_and_rebinds_on_reload() {
        let mut e = Engine::default();
        let git = manifest(r#"{"name": "git", "match": {"argv": ["mcp_server_git"]}, "exec": ["git"]}"#);
        e.set_manifests(vec![git]);
        let proc = |server: &str, exe: &str, a: &[&str]| ProcContext {
            server: server.into(),
            exe: exe.into(),
            argv: argv(a),
            ..Default::default()
        };
        let python = |server: &str| proc(server, "/v/bin/python", &["python", "-m", "mcp_server_git"]);
        assert!(!e.add_server(&python("git"), "/root".into()));
        assert!(!e.add_server(&python("my-git"), "/root".into()));
        let node = proc("other", "/usr/bin/node", &["node", "x.js"]);
        assert!(e.add_server(&node, "/root".into()), "undeclared");
        assert!(!e.add_server(&node, "/root".into()), "flagged once");
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

    #[test]
    fn a_reload_rebinds_arguments_where_the_root_command_line_resolved_them() {
        let text = r#"{"name": "srv", "args": {"roots": {"from": "index\\.js$"}}, "read": ["${roots}"]}"#;
        let mut e = Engine::default();
        e.set_manifests(vec![manifest(text)]);
        let root = ProcContext {
            server: "srv".into(),
            pid: 10,
            exe: "/usr/bin/node".into(),
            argv: argv(&["node", "/srv/index.js", "data"]),
            cwd: Some("/w".into()),
            ..Default::default()
        };
        let mut facts = PathFacts::default();
        facts.insert("/w/data".into(), "/real/data".into(), false);
        e.add_server(&root, "/home/u".into());
        e.launching(&root, 10, &facts);
        let read = open("/real/data/a.txt", false, 3);
        let judged = |e: &mut Engine| rules(&e.evaluate(&root, &read, &PathFacts::default()).0);
        assert!(judged(&mut e).is_empty(), "bound to the real path");
        e.set_manifests(vec![manifest(text)]);
        assert!(judged(&mut e).is_empty(), "the same binding after a reload");
        assert_eq!(
            rules(
                &e.evaluate(&root, &open("/w/elsewhere", false, 3), &PathFacts::default())
                    .0
            ),
            ["file.read_undeclared"]
        );
    }
}
