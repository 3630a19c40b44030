//! File rules: credentials (declared only by name), reads and writes
//! outside the grants.

use serde_json::{Value, json};

use super::{
    Finding, ServerPolicy,
    exec::runs_script,
    scope::{Scope, grant_words, tool_key},
};
use crate::{
    alerts::rules,
    policy::{
        activity::{FileActivity, ProcContext, ProcPath},
        baseline, catalog,
    },
};

impl ServerPolicy {
    /// Whether a scope allows a successful file access.
    fn file_allowed(&mut self, scope: Scope<'_>, ctx: &ProcContext, f: &FileActivity, path: &str) -> bool {
        let writes = f.writes();
        self.declares(scope, path, writes)
            || (!writes
                && f.access.directory
                && (self.resolved(scope).is_ancestor_of_declared(path)
                    // Interpreters list their working directory, and the
                    // script's (Python's sys.path[0]): names, not contents.
                    || ctx.cwd.as_deref() == Some(path)
                    || self.code_dirs.iter().any(|c| c.strip_prefix(path).is_some_and(|r| r.starts_with('/')))))
    }

    pub(super) fn file(&mut self, ctx: &ProcContext, f: &FileActivity) -> Vec<Finding> {
        // The acting process's own /proc entries are its `/proc/self`;
        // another process's memory, environment or maps come as risky events.
        let path = match &f.proc_path {
            Some(p) if p.sensitive_file().is_some() => return Vec::new(),
            Some(ProcPath::Own { tail }) if tail.is_empty() => "/proc/self".to_owned(),
            Some(ProcPath::Own { tail }) => format!("/proc/self/{tail}"),
            _ => f.path.clone(),
        };
        let mut paths = vec![path];
        paths.extend(f.path2.iter().cloned());
        let writes = f.writes();
        let scopes = self.scopes(ctx);
        let narrowed = scopes[0].is_some();
        const FILE_GRANTS: &[&str] = &["read", "write"];
        let evidence = |path: &str| {
            let mut e = json!({
                "op": f.op.name(),
                "path": path,
                "path2": f.path2,
                "access": if writes { "write" } else { "read" },
                "result": f.result,
            });
            if let Some(via) = f.via {
                e["via"] = json!(via);
            }
            e
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
            would_block: None,
        };
        let mut out = Vec::new();
        for path in &paths {
            // A credential under another name (a hardlink, a bind mount, a
            // renamed directory) is judged as the file it is: by the path
            // it was found at, which no grant of the name used covers.
            let same_as = f.same_as.as_deref().filter(|_| *path == paths[0]);
            let known = catalog::classify(path).map(|k| (k, path.as_str()));
            if let Some((kind, cpath)) = known.or_else(|| same_as.and_then(|c| catalog::classify(c).map(|k| (k, c)))) {
                let explicit = scopes.iter().any(|s| self.names_credential(*s, cpath, kind.markers));
                if !explicit && !baseline::runtime_reads_credential(kind.rule, &ctx.exe, &ctx.argv) {
                    let mut e = evidence(path);
                    e["credential"] = json!(kind.what);
                    if cpath != path {
                        e["same_file_as"] = json!(cpath);
                    }
                    let declared = self.declared_of(&scopes, ctx, FILE_GRANTS);
                    if narrowed && self.names_credential(None, path, kind.markers) {
                        out.push(outside_tool(path, e, declared));
                    } else {
                        out.push(Finding {
                            rule: rules::credential(kind.rule),
                            summary: match cpath != path {
                                true => format!(
                                    "{} accessed {}: {path} (the same file as {cpath})",
                                    ctx.server, kind.what
                                ),
                                false => format!("{} accessed {}: {path}", ctx.server, kind.what),
                            },
                            evidence: e,
                            declared: Some(declared),
                            dedup_key: path.clone(),
                            would_block: None,
                        });
                    }
                }
                continue;
            }
            // A failed access touched nothing (probing credentials is the
            // exception, above), unless a sandbox refused it: judged so the
            // refusal can be named (the engine keeps only `enforce.denied`).
            if !f.succeeded() && !f.refused() {
                continue;
            }
            // A path longer than the kernel side reads (`PATH_MAX`) is only
            // its first part: matching it against grants would be a guess
            // either way, so it is reported as unknown, not undeclared.
            if f.path_truncated && *path == paths[0] {
                let mut e = evidence(path);
                e["path_truncated"] = json!(true);
                out.push(Finding {
                    rule: &rules::FILE_PATH_UNKNOWN,
                    summary: format!(
                        "{} {verb} a path too long to read whole (over 4 KiB), not judged: {}...",
                        ctx.server,
                        path.chars().take(120).collect::<String>()
                    ),
                    evidence: e,
                    declared: None,
                    dedup_key: path.clone(),
                    would_block: None,
                });
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
                would_block: None,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::test_support::*;
    use crate::policy::activity::Activity;

    #[test]
    fn client_roots_environment_and_siblings_are_granted_and_nothing_more() {
        let (mut s, ctx) = server(
            r#"{"read": ["${roots}", "${env:DB}"], "write": ["${roots}", "${env:DB}"]}"#,
            NODE,
        );
        let check = |s: &mut super::super::ServerPolicy, a: Activity| rules(&s.evaluate(&ctx, &a));
        assert_eq!(
            check(&mut s, open("/srv/docs/a.txt", false, 3)),
            ["file.read_undeclared"]
        );
        s.client_roots.insert("/srv/docs".into());
        s.paths = None;
        assert!(
            check(&mut s, open("/srv/docs/a.txt", true, 3)).is_empty(),
            "a client root"
        );
        assert_eq!(
            check(&mut s, open("/srv/other.txt", false, 3)),
            ["file.read_undeclared"]
        );
        let warnings = s.bind_environ(b"DB=/var/lib/app/app.db\0".to_vec());
        assert!(warnings.is_empty(), "{warnings:?}");
        for p in [
            "/var/lib/app/app.db",
            "/var/lib/app/app.db-journal",
            "/var/lib/app/app.db-wal",
        ] {
            assert!(check(&mut s, open(p, true, 3)).is_empty(), "{p}");
        }
        assert_eq!(
            check(&mut s, open("/var/lib/app/other.db", true, 3)),
            ["file.write_undeclared"]
        );
    }

    #[test]
    fn client_roots_do_not_widen_the_directories_the_launch_named() {
        // The filesystem server trusts `roots/list` over its argv; the grant
        // does not: a root the client adds beyond them is still undeclared.
        let (mut s, ctx) = server(
            r#"{"args": {"roots": {"from": "server-filesystem/dist/index\\.js$"}}, "read": ["${roots}"]}"#,
            NODE,
        );
        s.client_roots.insert("/srv/elsewhere".into());
        s.paths = None;
        let mut check = |a: Activity| rules(&s.evaluate(&ctx, &a));
        assert!(check(open("/data/projects/a/b.txt", false, 3)).is_empty());
        assert_eq!(
            check(open("/srv/elsewhere/secret.txt", false, 3)),
            ["file.read_undeclared"]
        );
    }

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
        let dir = match open("/data", false, 3) {
            Activity::File(mut f) => {
                f.access.directory = true;
                Activity::File(f)
            }
            _ => unreachable!(),
        };
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
        let dir = match open("/data", false, 3) {
            Activity::File(mut f) => {
                f.access.directory = true;
                Activity::File(f)
            }
            _ => unreachable!(),
        };
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
}
