//! Declared privileges: manifests + runtime baselines + built-in rules ->
//! alerts. The agent hands each activity of a watched process to [`Policy`]
//! and delivers the alerts it returns.
//!
//! `manifest` (the format), `glob`/`net` (path and host patterns), `baseline`
//! (what runtimes need to start), `catalog` (credential locations), `engine`
//! (the judgement, no I/O), `host` (what the engine needs looked up on the
//! host), `dedup` (repeats), `hostconfig` (Claude Desktop, VS Code, Cursor),
//! `reload` (sources, changes), `activity` (the input: the pipeline's typed
//! observations). Rule ids, severities and MITRE are in `alerts::rules`.

pub mod activity;
pub mod baseline;
pub mod catalog;
pub mod dedup;
pub mod engine;
pub mod glob;
pub mod host;
pub mod hostconfig;
mod kill;
pub mod manifest;
pub mod net;
pub mod reload;

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use serde_json::json;

use crate::alerts::rules::{self, Rule};
use crate::{
    alerts::{Alert, AlertFactory, fold::OperationFold},
    mcp::pins::ExpectedPins,
    output::events::Clock,
};
use activity::{Activity, PathFacts, ProcContext};
use dedup::Dedup;
use engine::{Engine, Finding};
use hostconfig::HostServer;
use manifest::{Manifest, ManifestError};
use reload::Sources;

/// Test helper: an argv from string slices.
#[cfg(test)]
pub(crate) fn test_argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

pub struct Policy {
    sources: Sources,
    snapshot: BTreeMap<PathBuf, Option<(u64, i128, u64)>>,
    loaded: BTreeMap<PathBuf, Arc<Manifest>>,
    hosts: Vec<HostServer>,
    engine: Engine,
    dedup: Dedup,
    /// Alerts held until the package manager run that raised them ends.
    fold: OperationFold,
    alerts: AlertFactory,
    /// The kill layer does not work here (see [`Policy::set_kill_missing`]).
    kill_missing: bool,
    /// The credential catalogue's files by identity, at every home seen.
    cred_files: crate::enforce::identity::CredentialFiles,
    cred_homes: std::collections::BTreeSet<String>,
}

impl Policy {
    /// Loads the sources; returns the alerts for manifests that failed to load.
    pub fn new(sources: Sources, alerts: AlertFactory, limits: dedup::Limits) -> (Self, Vec<Alert>) {
        let mut p = Self {
            sources,
            snapshot: BTreeMap::new(),
            loaded: BTreeMap::new(),
            hosts: Vec::new(),
            engine: Engine::default(),
            dedup: Dedup::new(limits),
            fold: OperationFold::new(limits.window_ns),
            alerts,
            kill_missing: false,
            cred_files: Default::default(),
            cred_homes: Default::default(),
        };
        let alerts = p.reload();
        (p, alerts)
    }

    /// Reloads every source now, on the calling thread (start-up).
    pub fn reload(&mut self) -> Vec<Alert> {
        self.snapshot = self.sources.snapshot();
        let l = self.sources.load(&self.loaded);
        self.apply(l)
    }

    /// Watches the sources from now on off the caller's thread; what it
    /// loads is handed to [`Policy::apply`].
    pub fn reloader(&self) -> std::io::Result<reload::Reloader> {
        reload::Reloader::start(self.sources.clone(), self.snapshot.clone(), self.loaded.clone())
    }

    /// Swaps in what a load produced, in one step. Returns alerts for broken
    /// manifests (each keeps its last good version, if any).
    pub fn apply(&mut self, l: reload::Loaded) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for e in &l.errors {
            let kept = l.manifests.contains_key(&e.file);
            log::error!(
                "manifest rejected: {e}{}",
                if kept { " (keeping the last good version)" } else { "" }
            );
            alerts.push(self.manifest_alert(e, kept));
        }
        for m in l.manifests.values() {
            for w in &m.warnings {
                log::warn!("{}: {w}", m.file_label());
            }
        }
        for e in &l.host_errors {
            log::warn!("host configuration skipped: {e}");
        }
        for w in &l.dir_warnings {
            log::warn!("{w}");
        }
        self.loaded = l.manifests;
        self.hosts = l.hosts;
        self.engine.set_manifests(self.loaded.values().cloned().collect());
        // The declared kinds and the mode may have changed.
        let names: Vec<String> = self.engine.servers().map(|(n, _)| n.to_owned()).collect();
        for name in names {
            if let Some(homes) = self.engine.kill_homes(&name).map(<[String]>::to_vec) {
                self.compile_kill(&name, homes, None);
            }
        }
        log::info!(
            "policy: {} manifests ({}), {} servers from host configurations (loaded in {} ms)",
            self.loaded.len(),
            self.loaded
                .values()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            self.hosts.len(),
            l.took.as_millis()
        );
        alerts
    }

    /// Forgets a server whose processes all exited: set up afresh (and
    /// announced again when undeclared) if it runs again.
    pub fn forget_server(&mut self, name: &str) {
        self.engine.forget(name);
    }

    /// The roots `server`'s client gave it (`roots/list`): `${roots}` grants them.
    pub fn client_roots(&mut self, server: &str, roots: Vec<String>) {
        log::info!("server {server}: client roots {roots:?}");
        self.engine.client_roots(server, roots);
    }

    /// Whether exec events of unwatched processes must be looked at.
    pub fn discovers(&self) -> bool {
        self.hosts.iter().any(|h| !h.wrapped)
            || self
                .loaded
                .values()
                .any(|m| !m.match_exe.is_empty() || !m.match_argv.is_empty())
    }

    /// The server an unwatched process starts, from host configurations and
    /// manifests' `match` rules.
    pub fn discover(&self, exe: &str, argv: &[String]) -> Option<String> {
        self.hosts
            .iter()
            .find(|h| h.matches(exe, argv))
            .map(|h| h.name.clone())
            .or_else(|| {
                self.engine
                    .manifests()
                    .iter()
                    .find(|m| m.matches_process(exe, argv))
                    .map(|m| m.name.clone())
            })
    }

    /// A process was put under watch; its next exec is the server's launch.
    /// `wrapped`: registered by the wrapper, whose sandbox is its boundary
    /// (never the kill layer's, so no kill set is compiled for it).
    pub fn on_watch(&mut self, ctx: &ProcContext, wrapped: bool) -> Vec<Alert> {
        let (fresh, degraded) = self.watch(ctx, ctx.pid, wrapped);
        let mut out: Vec<Alert> = Vec::new();
        if fresh {
            out.extend(self.undeclared_alert(ctx));
        }
        if degraded {
            out.push(self.degraded_alert(ctx, &[crate::enforce::Layer::Kill], false));
        }
        out
    }

    /// Hands the engine a process put under watch (`pid` launches the
    /// server), with what the host says of it: the owner's home when the
    /// server is new, the paths on its command line. Returns true when the
    /// server is new and has no manifest, and whether it is in enforce mode
    /// with its kill layer missing (`enforce.degraded`).
    fn watch(&mut self, ctx: &ProcContext, pid: u32, wrapped: bool) -> (bool, bool) {
        let fresh = self.engine.server(&ctx.server).is_none() && self.engine.add_server(ctx, host::home_of(ctx.uid));
        let home = self
            .engine
            .server(&ctx.server)
            .map(|s| s.home().to_owned())
            .unwrap_or_default();
        let paths = host::path_facts(&ctx.argv, ctx.cwd.as_deref(), &home);
        self.engine.launching(ctx, pid, &paths);
        if self.engine.server(&ctx.server).is_some_and(|s| s.names_environment()) {
            let environ = crate::policy::manifest::env::read_environ(ctx.pid);
            for w in self.engine.bind_environ(&ctx.server, environ) {
                log::warn!("server {}: manifest: {w}", ctx.server);
            }
        }
        let mut degraded = false;
        self.note_homes(&[host::home_of(ctx.uid)]);
        if wrapped {
            self.engine.set_wrapped(&ctx.server);
        } else if self.engine.kill_homes(&ctx.server).is_none() {
            // Credentials as the kernel sees them: under the owner's home
            // and the `$HOME` the server was started with.
            let mut homes = vec![host::home_of(ctx.uid)];
            homes.extend(crate::enforce::kill::process_home(ctx.pid));
            homes.dedup();
            self.compile_kill(&ctx.server, homes, Some(&ctx.exe));
            degraded = self.kill_missing
                && self
                    .engine
                    .server(&ctx.server)
                    .is_some_and(|s| s.mode() == manifest::Mode::Enforce);
        }
        (fresh, degraded)
    }

    /// The kill layer does not work on this kernel (or is simulated
    /// missing): its findings only say what it would have blocked.
    pub fn set_kill_missing(&mut self, missing: bool) {
        self.kill_missing = missing;
    }

    /// `server` was launched by the wrapper: its sandbox is its boundary.
    pub fn set_wrapped(&mut self, server: &str) {
        self.engine.set_wrapped(server);
    }

    /// The kill policy of every server the kernel must kill for its violations.
    pub fn kill_policies(&self) -> Vec<(&str, &crate::enforce::kill::KillSet)> {
        self.engine.kill_policies()
    }

    /// Whether the kill layer of `server` (enforce mode, working) kills
    /// `act` from userspace (see [`KillSet::kills_from_userspace`]).
    ///
    /// [`KillSet::kills_from_userspace`]: crate::enforce::kill::KillSet::kills_from_userspace
    pub fn kills_from_userspace(&self, server: &str, act: &Activity) -> bool {
        let pty = |e: &activity::ExecActivity| {
            e.stdio
                .iter()
                .any(|s| matches!(s, Some(activity::StdioKind::NetworkPty(_))))
        };
        // Checked for every exec: the policies are looked up for a pty shell only.
        if !matches!(act, Activity::Exec(e) if pty(e)) {
            return false;
        }
        self.engine
            .kill_policies()
            .iter()
            .any(|(name, k)| *name == server && k.kills_from_userspace(act))
    }

    /// Whether an activity is judged at all (checked before the acting
    /// process's context is gathered): a failed access touched nothing, so
    /// only probing for credentials matters (most failed opens are library
    /// and module search paths).
    pub fn judges(&self, act: &Activity) -> bool {
        match act {
            // EACCES and EPERM may be a sandbox's refusal (`enforce.denied`);
            // the engine drops what they raise otherwise.
            Activity::File(f) => f.succeeded() || f.refused() || catalog::classify(&f.path).is_some(),
            _ => true,
        }
    }

    /// Judges one activity; returns the alerts to deliver now.
    pub fn evaluate(&mut self, ctx: &ProcContext, act: &Activity) -> Vec<Alert> {
        // A kill is reported whatever the activity: the kernel acted.
        if !ctx.killed && !self.judges(act) {
            return Vec::new();
        }
        let mut out = Vec::new();
        // A server never announced (its first event came first) is set up on the fly.
        if self.engine.server(&ctx.server).is_none() {
            let (fresh, degraded) = self.watch(ctx, 0, false);
            if fresh {
                out.extend(self.undeclared_alert(ctx));
            }
            if degraded {
                out.push(self.degraded_alert(ctx, &[crate::enforce::Layer::Kill], false));
            }
        }
        // A credential reached under another name is judged as itself.
        let aliased = self.same_file(act);
        let act = aliased.as_ref().unwrap_or(act);
        let paths = match act {
            Activity::Exec(e) if self.engine.needs_paths(ctx, act) => {
                let home = self
                    .engine
                    .server(&ctx.server)
                    .map(|s| s.home().to_owned())
                    .unwrap_or_default();
                host::path_facts(&e.argv, ctx.cwd.as_deref(), &home)
            }
            _ => PathFacts::default(),
        };
        let (findings, manifest) = self.engine.evaluate(ctx, act, &paths);
        let label = manifest.map(|m| m.file_label());
        for f in findings {
            let key = f.dedup_key.clone();
            let mut a = self.alert(f, ctx, label.clone());
            if let Some(op) = &ctx.operation {
                match self.fold.admit(a, op) {
                    Some(now) => a = now,
                    None => continue,
                }
            }
            let (emit, summary) = self.dedup.admit(&a, &key, ctx.ktime_ns);
            out.extend(summary);
            if emit {
                out.push(a);
            }
        }
        out
    }

    /// Repeat summaries of windows that ended, and what package manager
    /// runs held for a window.
    pub fn tick(&mut self, now_ktime: u64) -> Vec<Alert> {
        let mut out = self.dedup.flush(now_ktime);
        out.extend(self.fold.due(now_ktime));
        out
    }

    /// The alerts held for the package manager run of `pid` (it ended).
    pub fn end_operation(&mut self, server: &str, pid: u32) -> Vec<Alert> {
        self.fold.end(server, pid)
    }

    /// Every pending repeat summary and held alert (at shutdown).
    pub fn drain_repeats(&mut self) -> Vec<Alert> {
        let mut out = self.dedup.drain();
        out.extend(self.fold.drain());
        out
    }

    /// The tool pins manifests ship, by server name: under every name a
    /// manifest answers to (`name`, `match.server`), and under the name of
    /// every server bound to one (a host configuration's key, a `--watch`
    /// rule's name), which wins.
    pub fn expected_pins(&self) -> BTreeMap<String, ExpectedPins> {
        let mut out = BTreeMap::new();
        for m in self.loaded.values() {
            if let Some(p) = &m.pins {
                for name in std::iter::once(&m.name).chain(&m.match_servers) {
                    out.insert(name.clone(), p.clone());
                }
            }
        }
        for (name, s) in self.engine.servers() {
            match &s.manifest.pins {
                Some(p) => out.insert(name.to_owned(), p.clone()),
                None => out.remove(name),
            };
        }
        out
    }

    /// The gate of a watched server: its manifest's `gate` section (or the
    /// defaults, when `asked`), with the pins the manifest ships as
    /// approvals; `None` when neither asks for a gate.
    pub fn gate_of(&mut self, server: &str, asked: bool) -> Option<crate::mcp::gate::GateSpec> {
        let m = self.engine.server(server).map(|s| s.manifest.clone());
        let section = m.as_ref().and_then(|m| m.gate.as_ref());
        if section.is_none() && !asked {
            return None;
        }
        Some(crate::mcp::gate::GateSpec {
            unlisted: section.map(|g| g.unlisted).unwrap_or_default(),
            approved: m.as_ref().and_then(|m| m.pins.clone()).unwrap_or_default(),
            args: self.engine.gate_args(server),
            secrets: section.map(|g| g.secrets.clone()).unwrap_or_default(),
        })
    }

    /// The mode of manifests that set none.
    pub fn set_default_mode(&mut self, mode: manifest::Mode) {
        self.engine.set_default_mode(mode);
    }

    /// The sandbox of a wrapped server about to run `command` in `cwd`,
    /// and its mode; `None` for a server not set up (not watched).
    pub fn sandbox(
        &mut self,
        server: &str,
        command: &[String],
        cwd: Option<&str>,
    ) -> Option<(crate::enforce::sandbox::Sandbox, manifest::Mode)> {
        let home = self.engine.server(server)?.home().to_owned();
        let paths = host::path_facts(command, cwd, &home);
        let sb = self.engine.compile_sandbox(server, command, cwd, &paths)?;
        let mode = self.engine.server(server)?.mode();
        Some((sb, mode))
    }

    pub fn set_sandbox(&mut self, server: &str, sb: &crate::enforce::sandbox::Sandbox) {
        self.engine.set_sandbox(server, sb);
    }

    /// `enforce.degraded`: a server in enforce mode starts (or is refused)
    /// without layers this kernel lacks.
    pub fn degraded_alert(&mut self, ctx: &ProcContext, missing: &[crate::enforce::Layer], refused: bool) -> Alert {
        let names: Vec<&str> = missing.iter().map(|l| l.name()).collect();
        let what = if refused { "refused" } else { "started without" };
        let mut a = self.base(
            &rules::ENFORCE_DEGRADED,
            format!(
                "{} is in enforce mode: {what} {} (not enforced by this kernel); the monitor still reports",
                ctx.server,
                names.join(", ")
            ),
            ctx,
        );
        a.manifest = self.manifest_of(&ctx.server).map(|(m, _)| m);
        a.evidence = json!({ "missing": names, "refused": refused });
        a.layer = missing.first().copied();
        a
    }

    /// The manifest a server is judged against (file label) and whether it is undeclared.
    pub fn manifest_of(&self, server: &str) -> Option<(String, bool)> {
        self.engine
            .server(server)
            .map(|s| (s.manifest.file_label(), s.undeclared))
    }

    /// How a server is judged, for people: `audit`, `enforce`, or `undeclared` (no manifest).
    pub fn mode_label(&self, server: &str) -> &'static str {
        match self.engine.server(server) {
            Some(s) if s.undeclared => "undeclared",
            Some(s) if s.mode() == manifest::Mode::Enforce => "enforce",
            _ => "audit",
        }
    }

    fn base(&mut self, rule: &'static Rule, summary: String, ctx: &ProcContext) -> Alert {
        self.alerts.raise_about(rule, summary, ctx)
    }

    fn alert(&mut self, f: Finding, ctx: &ProcContext, manifest: Option<String>) -> Alert {
        let mut a = self.base(f.rule, f.summary, ctx);
        a.manifest = manifest;
        a.evidence = f.evidence;
        a.declared = f.declared;
        if let Some(l) = f.would_block {
            a.layer = Some(l);
            a.would_block = f.rule.id != rules::ENFORCE_DENIED.id;
        }
        a
    }

    fn undeclared_alert(&mut self, ctx: &ProcContext) -> Option<Alert> {
        let mut a = self.base(
            &rules::SERVER_UNDECLARED,
            format!(
                "server {} has no manifest: judged against the built-in least-privilege manifest",
                ctx.server
            ),
            ctx,
        );
        a.manifest = Some(Manifest::least_privilege(&ctx.server).file_label());
        a.evidence = json!({ "exe": ctx.exe, "argv": ctx.argv });
        let (emit, _) = self.dedup.admit(&a, "", ctx.ktime_ns);
        emit.then_some(a)
    }

    fn manifest_alert(&mut self, e: &ManifestError, kept: bool) -> Alert {
        let now = Clock::now_ktime();
        let ctx = ProcContext {
            ktime_ns: now,
            pid: std::process::id(),
            ..Default::default()
        };
        let mut a = self.base(&rules::MANIFEST_INVALID, e.to_string(), &ctx);
        a.server = None;
        a.manifest = Some(e.file.display().to_string());
        a.evidence = json!({
            "file": e.file,
            "line": e.line,
            "column": e.column,
            "field": e.field,
            "error": e.what,
            "kept_last_good_version": kept,
        });
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_pins_follow_the_names_a_manifest_answers_to_and_its_bindings() {
        let d = std::env::temp_dir().join(format!("mcpwatch-policy-pins-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let pin = format!("sha256:{}", "a".repeat(64));
        std::fs::write(
            d.join("calc.json"),
            format!(r#"{{"match": {{"server": ["calculator"], "argv": ["calc\\.py"]}}, "pins": {{"add": "{pin}"}}}}"#),
        )
        .unwrap();
        std::fs::write(d.join("plain.json"), "{}").unwrap();
        let sources = Sources {
            manifest_dirs: vec![d.clone()],
            ..Default::default()
        };
        let (mut p, errors) = Policy::new(sources, AlertFactory::new(Clock::new()), dedup::Limits::default());
        assert!(errors.is_empty());
        let names = |p: &Policy| p.expected_pins().into_keys().collect::<Vec<_>>();
        assert_eq!(names(&p), ["calc", "calculator"]);
        // A host configuration's name, bound by the command line.
        let ctx = ProcContext {
            server: "my-calc".into(),
            exe: "/usr/bin/python3".into(),
            argv: test_argv(&["python3", "calc.py"]),
            ..Default::default()
        };
        p.on_watch(&ctx, false);
        assert_eq!(names(&p), ["calc", "calculator", "my-calc"]);
        assert_eq!(p.expected_pins()["my-calc"]["add"], pin);
        // A reload without pins takes them away.
        std::fs::write(d.join("calc.json"), r#"{"match": {"argv": ["calc\\.py"]}}"#).unwrap();
        p.reload();
        assert!(p.expected_pins().is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_host_resolves_a_launchs_relative_arguments_before_the_engine_binds_them() {
        let d = std::env::temp_dir().join(format!("mcpwatch-policy-host-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("manifests")).unwrap();
        std::fs::create_dir_all(d.join("real")).unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("link")).unwrap();
        std::fs::write(
            d.join("manifests/srv.json"),
            r#"{"args": {"roots": {"from": "index\\.js$"}}, "read": ["${roots}"]}"#,
        )
        .unwrap();
        let sources = Sources {
            manifest_dirs: vec![d.join("manifests")],
            ..Default::default()
        };
        let (mut p, errors) = Policy::new(sources, AlertFactory::new(Clock::new()), dedup::Limits::default());
        assert!(errors.is_empty(), "{errors:?}");
        let ctx = ProcContext {
            server: "srv".into(),
            pid: 10,
            uid: 0,
            exe: "/usr/bin/node".into(),
            argv: test_argv(&["node", "/srv/index.js", "link"]),
            cwd: Some(d.to_string_lossy().into_owned()),
            ..Default::default()
        };
        assert!(p.on_watch(&ctx, false).is_empty());
        let real = std::fs::canonicalize(d.join("real")).unwrap();
        let open = |path: String| {
            Activity::File(activity::FileActivity {
                op: activity::FileOp::Open,
                path,
                path2: None,
                access: activity::Access {
                    read: true,
                    ..Default::default()
                },
                result: 3,
                path_truncated: false,
                proc_path: None,
                via: None,
                identity: None,
                same_as: None,
            })
        };
        let rules_of = |alerts: Vec<Alert>| alerts.into_iter().map(|a| a.rule).collect::<Vec<_>>();
        let inside = open(format!("{}/a.txt", real.display()));
        assert!(
            rules_of(p.evaluate(&ctx, &inside)).is_empty(),
            "`link` bound as the kernel reports it"
        );
        let outside = open(format!("{}/b.txt", d.display()));
        assert_eq!(rules_of(p.evaluate(&ctx, &outside)), ["file.read_undeclared"]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
