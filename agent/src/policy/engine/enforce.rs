//! A server's grants as a sandbox for the wrapper, and which findings the
//! sandbox blocks: in audit mode they carry `would_block` and the layer; in
//! enforce mode an attempt the sandbox refused becomes `enforce.denied`.

use serde_json::json;

use super::{Finding, ServerPolicy};
use crate::{
    alerts::rules,
    enforce::{
        Layer,
        allowlist::NetAllow,
        kill::KillSet,
        sandbox::{BIN_DIRS, LIB_DIRS, Sandbox, hierarchy, push_unique, runtime_trees, under},
    },
    policy::{
        activity::{Activity, FileActivity, NetOp, PathFacts, ProcContext, Proto, RiskyOp},
        baseline::Runtime,
        manifest::{ExePattern, Mode},
    },
};

/// EACCES and EPERM, as syscalls return them: what Landlock answers.
const EACCES: i64 = -13;
const EPERM: i64 = -1;

impl ServerPolicy {
    /// The mode the server runs in.
    pub fn mode(&self) -> Mode {
        self.manifest.mode.unwrap_or(self.default_mode)
    }

    /// The sandbox for the server about to run `command` (program resolved
    /// by the wrapper) in `cwd`; remembered to judge what it would block.
    pub(super) fn compile_sandbox(&mut self, command: &[String], cwd: Option<&str>, paths: &PathFacts) -> Sandbox {
        if let Some(program) = command.first() {
            self.learn(program, command, cwd, paths);
            self.learn_code_dir(command, cwd, paths);
        }
        self.resolved(None);
        let p = self.paths.as_ref().expect("resolved above");
        let mut sb = Sandbox::default();
        let grant = |list: &mut Vec<String>, text: &str| {
            if let Some((dir, _)) = hierarchy(text) {
                push_unique(list, dir);
            }
        };
        for g in p.server.read.iter().chain(&p.server.write).chain(&p.base_read) {
            grant(&mut sb.read, &g.text);
        }
        for g in p.server.write.iter().chain(&p.base_write) {
            grant(&mut sb.write, &g.text);
        }
        let launched = command.iter().filter(|a| a.starts_with('/')).chain(&self.code_dirs);
        for a in launched {
            for t in runtime_trees(a) {
                push_unique(&mut sb.read, t);
            }
        }
        for d in LIB_DIRS {
            push_unique(&mut sb.exec, (*d).to_owned());
        }
        if let Some(program) = command.first().filter(|p| p.starts_with('/')) {
            push_unique(&mut sb.exec, program.clone());
            push_unique(&mut sb.read, program.clone());
        }
        for e in &self.manifest.exec {
            match e {
                ExePattern::Path(g) => grant(&mut sb.exec, &g.text),
                ExePattern::Name(n) if n.contains(['*', '?', '[', '{']) => {
                    for d in BIN_DIRS {
                        push_unique(&mut sb.exec, (*d).to_owned());
                    }
                }
                ExePattern::Name(n) => {
                    for d in BIN_DIRS {
                        push_unique(&mut sb.exec, format!("{d}/{n}"));
                    }
                }
            }
        }
        let ob = &self.manifest.outbound;
        sb.connect_tcp = (!ob.all)
            .then(|| {
                let mut ports = Vec::new();
                for h in &ob.hosts {
                    match h.port {
                        Some(p) => ports.push(p),
                        None if ob.ports.is_empty() => return None,
                        None => ports.extend(&ob.ports),
                    }
                }
                // The package registries the runtimes fetch from.
                if self.runtimes.contains(&Runtime::Npx) || self.runtimes.contains(&Runtime::Uv) {
                    ports.push(443);
                }
                ports.sort_unstable();
                ports.dedup();
                Some(ports)
            })
            .flatten();
        sb.bind_tcp = self.manifest.listen.iter().map(|l| l.port).collect();
        let registries: &[(&str, u16)] = if self.runtimes.contains(&Runtime::Npx) {
            &[("registry.npmjs.org", 443)]
        } else if self.runtimes.contains(&Runtime::Uv) {
            &[("pypi.org", 443), ("files.pythonhosted.org", 443)]
        } else {
            &[]
        };
        sb.net = Some(NetAllow::compile(ob, &self.manifest.listen, registries));
        self.sandbox = Some(sb.clone());
        sb
    }

    /// The kill layer's policy, when it is the server's boundary: not
    /// launched by the wrapper (no sandbox) and compiled.
    pub fn kill_set(&self) -> Option<&KillSet> {
        if self.wrapped || self.sandbox.is_some() {
            return None;
        }
        self.kill.as_ref()
    }

    /// The layer that blocks `act` (none: no layer applies, or it allows
    /// it): the wrapper's sandbox, or the kill layer for a server the agent
    /// did not launch.
    fn blocking_layer(&self, act: &Activity) -> Option<Layer> {
        let Some(sb) = self.sandbox.as_ref() else {
            return self.kill_set().is_some_and(|k| k.blocks(act)).then_some(Layer::Kill);
        };
        let blocked = match act {
            Activity::File(f) if f.writes() => !under(&f.path, &sb.write),
            Activity::File(f) => !under(&f.path, &sb.read) && !under(&f.path, &sb.write),
            Activity::Exec(e) => !under(&e.filename, &sb.exec),
            Activity::Net(n) if n.proto == Proto::Tcp && n.op == NetOp::Connect && sb.net.is_none() => {
                sb.connect_tcp.as_ref().is_some_and(|p| !p.contains(&n.port))
            }
            Activity::Net(n) if n.proto == Proto::Tcp && n.op == NetOp::Bind && sb.net.is_none() => {
                sb.bind_tcp.as_ref().is_some_and(|p| !p.contains(&n.port))
            }
            // The cgroup layer judges addresses, ports and names of TCP and UDP alike.
            Activity::Net(n) => {
                return sb.net.as_ref().is_some_and(|a| !a.allows(n)).then_some(Layer::Cgroup);
            }
            Activity::Risky(r) => {
                return match r.op {
                    RiskyOp::CompatSyscall(_) => Some(Layer::Seccomp),
                    op => sb.seccomp_deny.iter().any(|d| d == op.name()).then_some(Layer::Seccomp),
                };
            }
        };
        blocked.then_some(Layer::Landlock)
    }

    /// An exec the sandbox refused: Landlock answers EACCES for a program
    /// outside the `exec` grants, and the exec never becomes a process, so
    /// the failing syscall is all there is. Nothing in audit mode or for
    /// another failure: a failed exec ran nothing.
    pub(super) fn refused_exec(&self, ctx: &ProcContext, f: &FileActivity) -> Option<Finding> {
        let sb = self.sandbox.as_ref()?;
        if self.mode() != Mode::Enforce
            || sb.missing.contains(&Layer::Landlock)
            || !f.refused()
            || under(&f.path, &sb.exec)
        {
            return None;
        }
        let scopes = self.scopes(ctx);
        let during = ctx.tool.as_deref().map(|t| format!(" during {t}")).unwrap_or_default();
        Some(Finding {
            rule: &rules::ENFORCE_DENIED,
            summary: format!("{}: landlock denied exec of {}{during}", ctx.server, f.path),
            evidence: json!({
                "layer": Layer::Landlock,
                "op": "exec",
                "target": f.path,
                "rules": [rules::EXEC_UNDECLARED.id],
            }),
            declared: Some(self.declared_of(&scopes, ctx, &["exec"])),
            dedup_key: format!("landlock:exec:{}", f.path),
            would_block: Some(Layer::Landlock),
        })
    }

    /// Whether `layer` is missing on this kernel for this server (its
    /// findings then only say what it would have blocked).
    fn layer_missing(&self, layer: Layer) -> bool {
        match (&self.sandbox, layer) {
            (_, Layer::Kill) => self.kill.as_ref().is_some_and(|k| k.missing),
            (Some(sb), l) => sb.missing.contains(&l),
            (None, _) => true,
        }
    }

    /// Marks what the sandbox or the kill layer would block (audit) or
    /// turns what it blocked into `enforce.denied` (enforce). A kill the
    /// kernel reports is a denial whatever the findings: the kernel acted.
    pub(super) fn enforcement(&self, ctx: &ProcContext, act: &Activity, findings: &mut Vec<Finding>) {
        let layer = if ctx.killed {
            Layer::Kill
        } else {
            if findings.is_empty() {
                return;
            }
            let Some(layer) = self.blocking_layer(act) else {
                return;
            };
            if self.mode() == Mode::Audit || self.layer_missing(layer) {
                for f in findings.iter_mut() {
                    f.would_block = Some(layer);
                }
                return;
            }
            let refused = match act {
                Activity::File(f) => f.result == EACCES || f.result == EPERM,
                Activity::Net(n) => n.result == EACCES || n.result == EPERM,
                // The filter denies these unconditionally: a call seen is a call refused.
                Activity::Risky(_) => layer == Layer::Seccomp,
                // A refused exec never becomes a process: nothing to see here.
                Activity::Exec(_) => false,
            };
            // The kill layer's denials are the kernel's kills (`ctx.killed`).
            if !refused || layer == Layer::Kill {
                return;
            }
            layer
        };
        let (op, target) = match act {
            Activity::File(f) => (
                format!("{} ({})", f.op.name(), if f.writes() { "write" } else { "read" }),
                f.path.clone(),
            ),
            Activity::Net(n) => (
                format!(
                    "{} {}",
                    n.op.name(),
                    match n.proto {
                        Proto::Tcp => "tcp",
                        Proto::Udp => "udp",
                        Proto::Other => "other",
                    }
                ),
                format!("{}:{}", n.addr.map(|a| a.to_string()).unwrap_or_default(), n.port),
            ),
            Activity::Risky(r) => (
                r.op.name().to_owned(),
                r.target_pid.map(|p| p.to_string()).unwrap_or_default(),
            ),
            Activity::Exec(e) => ("exec".to_owned(), e.filename.clone()),
        };
        let would_have_been: Vec<&str> = findings.iter().map(|f| f.rule.id).collect();
        let declared = findings.iter().find_map(|f| f.declared.clone());
        let during = ctx.tool.as_deref().map(|t| format!(" during {t}")).unwrap_or_default();
        let summary = if layer == Layer::Kill {
            format!(
                "{}: kill layer killed pid {} at {op} of {target}{during}",
                ctx.server, ctx.pid
            )
        } else {
            format!("{}: {} denied {op} of {target}{during}", ctx.server, layer.name())
        };
        *findings = vec![Finding {
            rule: &rules::ENFORCE_DENIED,
            summary,
            evidence: json!({
                "layer": layer,
                "op": op,
                "target": target,
                "rules": would_have_been,
            }),
            declared,
            dedup_key: format!("{}:{op}:{target}", layer.name()),
            would_block: Some(layer),
        }];
    }
}

/// The kill layer's side of the engine: what each server is killed for.
impl super::Engine {
    /// Marks `server` as launched by the wrapper (never the kill layer's).
    pub fn set_wrapped(&mut self, server: &str) {
        if let Some(s) = self.servers.get_mut(server) {
            s.wrapped = true;
        }
    }

    /// The homes the kill set of `server` was compiled for (none: not yet).
    pub fn kill_homes(&self, server: &str) -> Option<&[String]> {
        let s = self.servers.get(server)?;
        s.kill.as_ref().map(|_| s.kill_homes.as_slice())
    }

    pub fn set_kill(&mut self, server: &str, homes: Vec<String>, kill: KillSet) {
        if let Some(s) = self.servers.get_mut(server) {
            s.kill = Some(kill);
            s.kill_homes = homes;
        }
    }

    /// The servers the kernel must kill for their violations: in enforce
    /// mode, not launched by the wrapper, the layer not missing.
    pub fn kill_policies(&self) -> Vec<(&str, &KillSet)> {
        self.servers
            .iter()
            .filter(|(_, s)| s.mode() == Mode::Enforce)
            .filter_map(|(n, s)| s.kill_set().filter(|k| !k.missing).map(|k| (n.as_str(), k)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::policy::activity::{Activity, PathFacts, RiskyActivity, RiskyOp};

    const FS: &str = r#"{"args": {"roots": {"from": "server-filesystem/dist/index\\.js$"}},
                         "read": ["${roots}"], "write": ["${roots}"], "mode": "MODE"}"#;

    /// A filesystem server launched by the wrapper, its sandbox compiled.
    fn sandboxed(mode: &str) -> (ServerPolicy, ProcContext) {
        let (mut s, ctx) = server(&FS.replace("MODE", mode), NODE);
        let launch: Vec<String> = NODE.iter().map(|a| a.to_string()).collect();
        let mut cmd = vec!["/usr/bin/node".to_owned()];
        cmd.extend(launch[1..].iter().cloned());
        let mut sb = s.compile_sandbox(&cmd, None, &PathFacts::default());
        sb.seccomp_deny = vec!["ptrace".into()];
        s.sandbox = Some(sb);
        (s, ctx)
    }

    #[test]
    fn the_sandbox_grants_the_roots_the_runtime_tree_and_the_launch_program() {
        let (s, _) = sandboxed("enforce");
        let sb = s.sandbox().unwrap();
        assert!(sb.read.contains(&"/data/projects".to_owned()), "{sb:?}");
        assert!(sb.write.contains(&"/data/projects".to_owned()), "{sb:?}");
        assert!(sb.read.contains(&"/srv/node_modules".to_owned()), "{sb:?}");
        assert!(sb.exec.contains(&"/usr/bin/node".to_owned()), "{sb:?}");
        assert!(!sb.read.iter().any(|d| d == "/" || d == "/data"), "{sb:?}");
        assert_eq!(sb.connect_tcp, Some(vec![]), "no outbound grant: no TCP port");
        assert_eq!(sb.bind_tcp, Some(vec![]));
    }

    #[test]
    fn a_refused_read_in_enforce_mode_is_a_denial_naming_the_tool() {
        let (mut s, ctx) = sandboxed("enforce");
        let during = during(&ctx, "read_text_file", "5");
        let f = s.evaluate(&during, &open("/etc/secret.txt", false, -13));
        assert_eq!(rules(&f), ["enforce.denied"]);
        assert_eq!(f[0].would_block, Some(crate::enforce::Layer::Landlock));
        assert!(f[0].summary.contains("during read_text_file"), "{}", f[0].summary);
        // A failure that is no refusal raises nothing; inside the roots nothing either.
        assert!(s.evaluate(&ctx, &open("/etc/missing", false, -2)).is_empty());
        assert!(s.evaluate(&ctx, &open("/data/projects/a", false, 3)).is_empty());
        let ptrace = Activity::Risky(RiskyActivity {
            op: RiskyOp::Ptrace,
            target_pid: Some(PID),
        });
        assert_eq!(rules(&s.evaluate(&ctx, &ptrace)), ["enforce.denied"]);
    }

    /// A refused exec of `path` with `result`.
    fn exec_attempt(path: &str, result: i64) -> Activity {
        let Activity::File(f) = open(path, false, result) else {
            unreachable!()
        };
        Activity::File(crate::policy::activity::FileActivity {
            op: crate::policy::activity::FileOp::Exec,
            access: Default::default(),
            ..f
        })
    }

    #[test]
    fn an_exec_landlock_refused_is_a_denial_and_any_other_failed_exec_nothing() {
        let (mut s, ctx) = sandboxed("enforce");
        let during = during(&ctx, "run", "7");
        let f = s.evaluate(&during, &exec_attempt("/usr/bin/id", -13));
        assert_eq!(rules(&f), ["enforce.denied"]);
        assert_eq!(f[0].would_block, Some(crate::enforce::Layer::Landlock));
        assert_eq!(f[0].evidence["op"], "exec");
        assert!(
            f[0].summary.contains("exec of /usr/bin/id during run"),
            "{}",
            f[0].summary
        );
        // Granted (the launch program), or failed for another reason: nothing.
        assert!(s.evaluate(&ctx, &exec_attempt("/usr/bin/node", -13)).is_empty());
        assert!(s.evaluate(&ctx, &exec_attempt("/usr/bin/id", -8)).is_empty());
        let (mut audit, ctx) = sandboxed("audit");
        assert!(audit.evaluate(&ctx, &exec_attempt("/usr/bin/id", -13)).is_empty());
    }

    #[test]
    fn a_dns_query_steered_to_the_servers_resolver_is_no_undeclared_connect() {
        let (mut s, ctx) = sandboxed("enforce");
        let udp = |port| {
            let Activity::Net(n) = connect("127.0.0.1", port, None) else {
                unreachable!()
            };
            Activity::Net(crate::policy::activity::NetActivity {
                proto: crate::policy::activity::Proto::Udp,
                ..n
            })
        };
        assert!(!s.evaluate(&ctx, &udp(40000)).is_empty(), "no resolver yet: undeclared");
        s.sandbox.as_mut().unwrap().resolver_port = Some(40000);
        assert!(s.evaluate(&ctx, &udp(40000)).is_empty());
        assert!(
            !s.evaluate(&ctx, &udp(40001)).is_empty(),
            "another port is not the resolver"
        );
    }

    #[test]
    fn audit_mode_marks_what_the_sandbox_would_block_and_nothing_else() {
        let (mut s, ctx) = sandboxed("audit");
        let f = s.evaluate(&ctx, &open("/etc/secret.txt", false, 3));
        assert_eq!(rules(&f), ["file.read_undeclared"]);
        assert_eq!(f[0].would_block, Some(crate::enforce::Layer::Landlock));
        // A refused read in audit mode is no sandbox's doing: nothing.
        assert!(s.evaluate(&ctx, &open("/etc/other", false, -13)).is_empty());
        // The network is the cgroup layer's (by address, not only port).
        let f = s.evaluate(&ctx, &connect("10.0.0.1", 443, None));
        assert_eq!(f[0].would_block, Some(crate::enforce::Layer::Cgroup));
    }

    /// A server the agent did not launch (no sandbox), with its kill set.
    fn discovered(mode: &str) -> (ServerPolicy, ProcContext) {
        let (mut s, ctx) = server(&format!(r#"{{"mode": "{mode}"}}"#), NODE);
        s.kill = Some(crate::enforce::kill::KillSet::compile(&s.manifest, &["/h".to_owned()]));
        (s, ctx)
    }

    #[test]
    fn the_kill_layer_marks_audit_findings_and_reports_the_kernels_kills_as_denials() {
        use crate::enforce::Layer;
        let (mut s, ctx) = discovered("audit");
        let f = s.evaluate(&ctx, &open("/h/.ssh/id_rsa", false, 3));
        assert_eq!(rules(&f), ["cred.ssh"]);
        assert_eq!(f[0].would_block, Some(Layer::Kill));

        let (mut s, ctx) = discovered("enforce");
        assert_eq!(s.kill_set().map(|k| k.credentials.is_empty()), Some(false));
        let killed = ProcContext {
            killed: true,
            ..during(&ctx, "read_key", "7")
        };
        let f = s.evaluate(&killed, &open("/h/.ssh/id_rsa", false, 3));
        assert_eq!(rules(&f), ["enforce.denied"]);
        assert_eq!(f[0].would_block, Some(Layer::Kill));
        assert_eq!(f[0].evidence["rules"], serde_json::json!(["cred.ssh"]));
        assert!(f[0].summary.contains("during read_key"), "{}", f[0].summary);
        // Not killed (the kernel did not decide it): reported as it is.
        let f = s.evaluate(&ctx, &open("/h/.ssh/id_ed25519", false, 3));
        assert_eq!(f[0].would_block, None);

        // A wrapped server's boundary is its sandbox, never the kill layer.
        s.wrapped = true;
        assert!(s.kill_set().is_none());
    }
}
