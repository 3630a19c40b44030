//! The loaded manifest: what the engine evaluates, and its queries (which
//! process and server it is for, the argument values a command line binds).

use std::{collections::BTreeMap, path::PathBuf};

use regex::Regex;

use super::schema::{ManifestFile, Mode};
use crate::{
    mcp::pins::ExpectedPins,
    policy::{
        activity::PathFacts,
        glob::{GlobError, PathGlob},
        net::{HostPattern, ListenSpec},
    },
};

/// A manifest ready for evaluation.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub name: String,
    /// The file it came from (`None`: the built-in default).
    pub file: Option<PathBuf>,
    /// As written (`None`: the configuration's default mode).
    pub mode: Option<Mode>,
    pub match_servers: Vec<String>,
    pub match_exe: Vec<ExePattern>,
    pub match_argv: Vec<Regex>,
    pub args: Vec<(String, ArgBinding)>,
    /// Path patterns before `~` and `${arg}` expansion.
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub outbound: Outbound,
    /// Peers it may accept connections from (empty: any).
    pub inbound: Vec<HostPattern>,
    pub listen: Vec<ListenSpec>,
    pub exec: Vec<ExePattern>,
    /// Narrowed grants by tool name.
    pub tools: BTreeMap<String, ToolGrant>,
    /// Expected tool pins (normalised to lowercase hex).
    pub pins: Option<ExpectedPins>,
    /// The `gate` section, when the server is to be relayed through the gate.
    pub gate: Option<super::gate::GateSection>,
    /// What is valid but probably not meant (a tool grant wider than the
    /// server's...): logged at load, printed by `check-manifests`.
    pub warnings: Vec<String>,
    /// Patterns declared (counted against the caps of `limits`).
    pub patterns: usize,
    /// The declaration as written, for the `declared` field of alerts.
    pub raw: ManifestFile,
}

/// Outbound grants, compiled.
#[derive(Debug, Clone, Default)]
pub struct Outbound {
    /// `insecure_allow_all`.
    pub all: bool,
    pub hosts: Vec<HostPattern>,
    /// Ports allowed with every host that names none (empty: any port).
    pub ports: Vec<u16>,
    /// `tcp`, `udp` (empty: both).
    pub transports: Vec<String>,
}

/// One tool's narrowed grants, compiled; `None` falls back to the server-wide grant.
#[derive(Debug, Clone, Default)]
pub struct ToolGrant {
    /// Path patterns before `~` and `${arg}` expansion.
    pub read: Option<Vec<String>>,
    pub write: Option<Vec<String>>,
    pub outbound: Option<Outbound>,
    pub inbound: Option<Vec<HostPattern>>,
    pub exec: Option<Vec<ExePattern>>,
}

#[derive(Debug, Clone)]
pub struct ArgBinding {
    pub from: Regex,
    pub flag: Option<String>,
}

/// A program: a path glob when it has a `/`, else a name (glob) compared with
/// the basename.
#[derive(Debug, Clone)]
pub enum ExePattern {
    Path(PathGlob),
    Name(String),
}

impl ExePattern {
    pub fn parse(s: &str) -> Result<Self, GlobError> {
        if s.contains('/') {
            PathGlob::new(s).map(ExePattern::Path)
        } else if s.is_empty() {
            Err(GlobError::Empty)
        } else {
            crate::policy::glob::check_name(s)?;
            Ok(ExePattern::Name(s.to_owned()))
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            ExePattern::Path(g) => g.matches(path),
            ExePattern::Name(n) => crate::policy::glob::name_matches(n, basename(path)),
        }
    }
}

pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Manifest {
    /// The file name for alerts, or `(built-in least privilege)`.
    pub fn file_label(&self) -> String {
        self.file
            .as_ref()
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "(built-in least privilege)".into())
    }

    /// Whether this manifest recognises a process by its exe and argv (`match.exe`
    /// and `match.argv`; both must hold when both are given). `match.argv`
    /// sees the launch line, up to the script, module or package run: a
    /// wrapper whose arguments carry the server's command line is not it.
    pub fn matches_process(&self, exe: &str, argv: &[String]) -> bool {
        if self.match_exe.is_empty() && self.match_argv.is_empty() {
            return false;
        }
        let exe_ok = self.match_exe.is_empty() || self.match_exe.iter().any(|p| p.matches(exe));
        let line = crate::pipeline::launch::Launch::of(exe, argv).line(argv);
        let argv_ok = self.match_argv.is_empty() || self.match_argv.iter().any(|r| r.is_match(&line));
        exe_ok && argv_ok
    }

    /// Whether this manifest is the one for server `name`.
    pub fn is_for_server(&self, name: &str) -> bool {
        self.name == name || self.match_servers.iter().any(|s| s == name)
    }

    /// Values of the `args` entries found in one command line, made absolute
    /// against `cwd` and resolved as `paths` says (the kernel reports
    /// resolved paths).
    pub fn bind_args(&self, argv: &[String], cwd: Option<&str>, paths: &PathFacts) -> Vec<(String, String)> {
        let absolute = |v: &str| {
            let given = PathFacts::absolute(v, cwd);
            paths.real(&given).unwrap_or(&given).trim_end_matches('/').to_owned()
        };
        let mut out = Vec::new();
        for (name, b) in &self.args {
            let Some(anchor) = argv.iter().position(|a| b.from.is_match(a)) else {
                continue;
            };
            let rest = &argv[anchor + 1..];
            match &b.flag {
                Some(flag) => {
                    let mut it = rest.iter();
                    while let Some(a) = it.next() {
                        if a == flag {
                            if let Some(v) = it.next() {
                                out.push((name.clone(), absolute(v)));
                            }
                        } else if let Some(v) = a.strip_prefix(flag.as_str()).and_then(|v| v.strip_prefix('=')) {
                            out.push((name.clone(), absolute(v)));
                        }
                    }
                }
                None => {
                    for a in rest.iter().filter(|a| !a.starts_with('-')) {
                        out.push((name.clone(), absolute(a)));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::*;
    use crate::policy::{manifest::expand, test_argv as argv};

    #[test]
    fn name_defaults_to_the_file_stem() {
        assert_eq!(parse("{}").unwrap().name, "demo");
    }

    #[test]
    fn args_bind_from_the_servers_own_command_line() {
        let m = parse(
            r#"{"args": {"roots": {"from": "server-filesystem"},
                         "repo": {"from": "mcp[-_]server[-_]git", "flag": "--repository"}},
                "read": ["${roots}", "${repo}/**"]}"#,
        )
        .unwrap();
        let none = PathFacts::default();
        let b = m.bind_args(
            &argv(&[
                "npx",
                "-y",
                "@modelcontextprotocol/server-filesystem",
                "/nonexistent/a",
                "/nonexistent/b",
            ]),
            None,
            &none,
        );
        assert_eq!(
            b,
            [
                ("roots".into(), "/nonexistent/a".into()),
                ("roots".into(), "/nonexistent/b".into())
            ]
        );
        let b = m.bind_args(
            &argv(&["python", "-m", "mcp_server_git", "--repository=/nonexistent/r"]),
            None,
            &none,
        );
        assert_eq!(b, [("repo".into(), "/nonexistent/r".into())]);
        let b = m.bind_args(&argv(&["git", "--repository", "/"]), None, &none);
        assert!(b.is_empty(), "a command line without the anchor binds nothing");
        // Relative to the working directory, as the host resolved it.
        let mut facts = PathFacts::default();
        facts.insert("/w/repo/".into(), "/real/repo/".into(), false);
        let b = m.bind_args(
            &argv(&["mcp-server-git", "--repository", "repo/", "--repository=other"]),
            Some("/w"),
            &facts,
        );
        assert_eq!(
            b,
            [("repo".into(), "/real/repo".into()), ("repo".into(), "/w/other".into())]
        );
        let vals = |n: &str| {
            if n == "roots" {
                vec!["/a".to_owned(), "/b".to_owned()]
            } else {
                vec![]
            }
        };
        assert_eq!(expand(&m.read[0], "/h", &vals), ["/a", "/b"]);
        assert!(expand(&m.read[1], "/h", &vals).is_empty());
        assert_eq!(expand("~/x", "/home/u", &vals), ["/home/u/x"]);
    }

    #[test]
    fn process_matching() {
        let m = parse(r#"{"match": {"exe": ["node"], "argv": ["server-memory"]}}"#).unwrap();
        assert!(m.matches_process("/usr/bin/node", &argv(&["node", "/x/server-memory/dist/index.js"])));
        assert!(!m.matches_process("/usr/bin/python3", &argv(&["python3", "server-memory"])));
        assert!(!parse("{}").unwrap().matches_process("/usr/bin/node", &argv(&["node"])));
        // The client launching it names it in its arguments: not the server.
        let m = parse(r#"{"match": {"argv": ["server-memory"]}}"#).unwrap();
        let client = ["/v/bin/python3", "client.py", "--", "npx", "-y", "server-memory"];
        assert!(!m.matches_process("/v/bin/python3", &argv(&client)));
        assert!(m.matches_process("/usr/bin/node", &argv(&["node", "/usr/bin/npx", "-y", "server-memory"])));
    }
}
