//! The sandbox of one server: its grants compiled to what Landlock and
//! seccomp can express. The agent compiles it when the wrapper registers and
//! hands it back in the acknowledgement; the wrapper applies it (`apply`).
//!
//! Landlock grants directory hierarchies (or single files), not globs: each
//! pattern compiles to its longest literal prefix. A pattern with glob syntax
//! compiles wider than it reads (`/data/*.csv` grants `/data`); the kernel
//! monitor still alerts on the exact pattern, and `check-manifests` says so.
//! A pattern whose literal prefix is `/` (`**/node_modules/**`) is not
//! granted at all: it would grant everything. The runtime's own trees are
//! granted from the launch command instead (the `node_modules` or venv the
//! launched script lives in).

use serde::{Deserialize, Serialize};

use super::Layer;

#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    pub server: String,
    /// Hierarchies (or files) the server may read.
    pub read: Vec<String>,
    /// Hierarchies (or files) it may write, create and remove in.
    pub write: Vec<String>,
    /// Hierarchies (or files) it may execute.
    pub exec: Vec<String>,
    /// TCP ports it may connect to (`None`: any; some grant names no port).
    pub connect_tcp: Option<Vec<u16>>,
    /// TCP ports it may bind (`None`: any).
    pub bind_tcp: Option<Vec<u16>>,
    /// Syscalls that fail with EPERM.
    pub seccomp_deny: Vec<String>,
    /// Signals and pidfds aimed at this pid fail with EPERM (the agent's).
    pub agent_pid: u32,
    /// Layers this kernel lacks (or the configuration simulates missing):
    /// the wrapper does not apply them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<Layer>,
    /// The cgroup layer's network allowlist (the agent applies it, not the
    /// wrapper: never sent). When it is enforced, Landlock's TCP port
    /// rules are left to it (`connect_tcp`, `bind_tcp` are `None`).
    #[serde(skip)]
    pub net: Option<super::allowlist::NetAllow>,
    /// The loopback port of the server's resolver in the agent, where the
    /// cgroup layer steers its DNS queries (agent-side only).
    #[serde(skip)]
    pub resolver_port: Option<u16>,
}

/// Where a pattern's Landlock grant lies: the hierarchy, and whether it is
/// wider than the pattern. `None`: the pattern has no literal prefix below
/// `/` and is left to the monitor.
pub fn hierarchy(pattern: &str) -> Option<(String, bool)> {
    let mut literal = Vec::new();
    let mut widened = false;
    for c in pattern.split('/').filter(|c| !c.is_empty()) {
        if c.contains(['*', '?', '[', '{']) {
            widened = true;
            break;
        }
        literal.push(c);
    }
    if literal.is_empty() {
        return None;
    }
    Some((format!("/{}", literal.join("/")), widened))
}

/// What Landlock makes of each path pattern a manifest grants (`field`,
/// pattern): one note per pattern it cannot express exactly.
pub fn landlock_notes<'a>(patterns: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    let mut out = Vec::new();
    // `~` and `${arg}` are literal once expanded: judged as such.
    let bound = regex::Regex::new(r"\$\{[^}]*\}").expect("valid regex");
    for (field, p) in patterns {
        let expanded = bound.replace_all(p.strip_prefix('~').map_or(p, |_| &p[1..]), "ARG");
        let expanded = if p.starts_with('~') {
            format!("/HOME{expanded}")
        } else {
            expanded.into_owned()
        };
        match hierarchy(&expanded) {
            Some((dir, true)) => {
                let dir = if p.starts_with('~') {
                    dir.replacen("/HOME", "~", 1)
                } else {
                    dir
                };
                out.push(format!(
                "{field} {p:?}: Landlock grants all of {dir} (it has no globs); the monitor still alerts on the exact pattern"
                ))
            }
            Some(_) => {}
            None => out.push(format!(
                "{field} {p:?}: no directory to grant (it would be `/`): Landlock refuses it unless another grant \
                 covers it; the monitor still alerts on the exact pattern"
            )),
        }
    }
    out
}

/// Whether `path` lies in one of the hierarchies `dirs`.
pub fn under(path: &str, dirs: &[String]) -> bool {
    dirs.iter()
        .any(|d| path == d || (path.starts_with(d.as_str()) && path.as_bytes().get(d.len()) == Some(&b'/')) || d == "/")
}

/// Library directories: the dynamic loader and shared objects are opened
/// for execution, so they need Landlock's execute right.
pub const LIB_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/libexec",
    "/usr/local/lib",
];

/// Where a program given by name is looked for.
pub const BIN_DIRS: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"];

/// Runtime trees a launched path lives in: the outermost `node_modules`
/// (node resolves modules upwards from the script) and, for an interpreter
/// in a virtual environment (`VENV/bin/python`), the environment.
pub fn runtime_trees(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(i) = path.find("/node_modules/") {
        out.push(path[..i + "/node_modules".len()].to_owned());
    }
    for marker in ["/site-packages/", "/dist-packages/"] {
        if let Some(i) = path.find(marker) {
            out.push(path[..i + marker.len() - 1].to_owned());
        }
    }
    if let Some((venv, name)) = path.rsplit_once("/bin/")
        && name.starts_with("python")
        && !venv.is_empty()
        && !BIN_DIRS.iter().any(|b| b.strip_suffix("/bin") == Some(venv))
        && venv != "/usr"
        && venv != "/usr/local"
    {
        out.push(venv.to_owned());
    }
    out
}

/// Adds `p` unless it is there.
pub fn push_unique(list: &mut Vec<String>, p: String) {
    if !list.contains(&p) {
        list.push(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile_to_their_literal_prefix_and_say_when_wider() {
        assert_eq!(hierarchy("/data/projects"), Some(("/data/projects".into(), false)));
        assert_eq!(hierarchy("/data/*.csv"), Some(("/data".into(), true)));
        assert_eq!(
            hierarchy("/home/u/.cache/{a,b}/x"),
            Some(("/home/u/.cache".into(), true))
        );
        assert_eq!(hierarchy("**/node_modules/**"), None);
        assert_eq!(hierarchy("/"), None);
        let notes = landlock_notes([
            ("read", "/data/*.csv"),
            ("read", "/data/x"),
            ("exec", "**/bin/tool"),
            ("read", "${roots}"),
            ("write", "~/.cache/x"),
        ]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("grants all of /data"), "{notes:?}");
        assert!(under("/data/a/b", &["/data".into()]));
        assert!(under("/data", &["/data".into()]));
        assert!(!under("/database", &["/data".into()]));
    }

    #[test]
    fn runtime_trees_come_from_the_launch_paths() {
        assert_eq!(
            runtime_trees("/t/node/node_modules/@m/server-filesystem/dist/index.js"),
            ["/t/node/node_modules"]
        );
        assert_eq!(runtime_trees("/t/venv/bin/python3"), ["/t/venv"]);
        assert!(runtime_trees("/usr/bin/python3").is_empty());
    }
}
