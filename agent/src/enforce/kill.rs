//! The kill layer's policy for one server: what the kernel kills it for
//! (see `agent-ebpf/src/probes/kill.rs` for where each is decided). Only a
//! server in enforce mode that the wrapper did not sandbox gets one
//! installed; in audit mode the same set marks what it would kill.
//!
//! Credential locations come from the catalogue, anchored where the kernel
//! can compare them: `**/X` patterns at the server's homes (its owner's and
//! the `$HOME` it was started with), absolute patterns as written. A
//! pattern ending in `/**` is a prefix; a wildcard in the last component is
//! expanded against the directory when the policy is compiled; a kind the
//! manifest names explicitly (its marker in a `read` or `write` grant) is
//! left out. What lies elsewhere (`/srv/app/.env`) is only monitored.

use std::path::Path;

use crate::policy::{
    activity::{Activity, FileOp, RiskyOp, StdioKind},
    catalog::CATALOGUE,
    engine::runs_scripts,
    glob::name_matches,
    manifest::Manifest,
};

/// One credential entry: a path the kernel compares whole (`exact`) or as a
/// prefix, and the catalogue kind it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CredentialEntry {
    pub path: String,
    pub exact: bool,
    pub kind: usize,
}

/// What the kernel kills one server for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KillSet {
    pub credentials: Vec<CredentialEntry>,
    /// The kernel cannot kill here (`bpf_send_signal` failed its probe, or
    /// the layer is simulated missing): findings only say what it would.
    pub missing: bool,
}

impl KillSet {
    /// The kill set of a server judged against `manifest`, whose homes are `homes`.
    pub fn compile(manifest: &Manifest, homes: &[String]) -> KillSet {
        let mut credentials = Vec::new();
        for (kind, k) in CATALOGUE.iter().enumerate() {
            if declares(manifest, k.markers) {
                continue;
            }
            for p in k.patterns {
                let anchored: Vec<String> = match p.strip_prefix("**/") {
                    Some(rest) => homes
                        .iter()
                        .map(|h| format!("{}/{rest}", h.trim_end_matches('/')))
                        .collect(),
                    None => vec![(*p).to_owned()],
                };
                for a in anchored {
                    expand(&a, kind, &mut credentials);
                }
            }
        }
        credentials.sort();
        credentials.dedup();
        KillSet {
            credentials,
            missing: false,
        }
    }

    /// The credential kind whose entry covers `path`, as the kernel decides it.
    pub fn credential(&self, path: &str) -> Option<usize> {
        self.credentials
            .iter()
            .filter(|e| {
                if e.exact {
                    e.path == path
                } else {
                    path.starts_with(&e.path)
                }
            })
            .max_by_key(|e| e.path.len())
            .map(|e| e.kind)
    }

    /// Whether the kernel kills (enforce) or would kill (audit) for `act`.
    pub fn blocks(&self, act: &Activity) -> bool {
        match act {
            Activity::File(f) => f.op == FileOp::Open && f.succeeded() && self.credential(&f.path).is_some(),
            Activity::Exec(e) => {
                let program = e.interp.as_deref().unwrap_or(&e.filename);
                // A TCP or UDP socket, as the kernel tells them (not a Unix socketpair).
                let wired = e.stdio[..2].contains(&Some(StdioKind::Socket));
                e.fileless || (wired && runs_scripts(program))
            }
            Activity::Risky(r) => matches!(
                r.op,
                RiskyOp::Ptrace
                    | RiskyOp::ProcessVmReadv
                    | RiskyOp::ProcessVmWritev
                    | RiskyOp::InitModule
                    | RiskyOp::Bpf
            ),
            Activity::Net(_) => false,
        }
    }
}

/// Whether a grant of the manifest (the server's or a tool's) names one of
/// a kind's markers: the kind is then declared, not killed for.
fn declares(m: &Manifest, markers: &[&str]) -> bool {
    let tools = m
        .tools
        .values()
        .flat_map(|t| t.read.iter().flatten().chain(t.write.iter().flatten()));
    m.read
        .iter()
        .chain(&m.write)
        .chain(tools)
        .any(|g| markers.iter().any(|k| g.contains(k)))
}

/// Adds the entries of one anchored pattern: a `/**` tail is a prefix, a
/// literal path exact, a wildcard in the last component the matching names
/// now in that directory; any other wildcard is left to the monitor.
fn expand(pattern: &str, kind: usize, out: &mut Vec<CredentialEntry>) {
    let wild = |s: &str| s.contains(['*', '?', '[', '{']);
    if let Some(dir) = pattern.strip_suffix("/**") {
        if !wild(dir) {
            out.push(CredentialEntry {
                path: format!("{dir}/"),
                exact: false,
                kind,
            });
        }
        return;
    }
    if !wild(pattern) {
        out.push(CredentialEntry {
            path: pattern.to_owned(),
            exact: true,
            kind,
        });
        return;
    }
    let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", pattern));
    if wild(dir) || dir.is_empty() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if name_matches(name, &n) {
            out.push(CredentialEntry {
                path: format!("{dir}/{n}"),
                exact: true,
                kind,
            });
        }
    }
}

/// The shells and interpreters on this host, by the real path of their
/// binary (what the exec probe resolves): a name the reverse-shell rule
/// knows, found in the usual directories, symlinks followed.
pub fn interpreter_paths() -> Vec<String> {
    let mut out = Vec::new();
    for dir in [
        "/usr/bin",
        "/bin",
        "/usr/local/bin",
        "/usr/sbin",
        "/sbin",
        "/usr/local/sbin",
    ] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !runs_scripts(&name) {
                continue;
            }
            if let Ok(real) = std::fs::canonicalize(Path::new(dir).join(&name)) {
                out.push(real.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The `$HOME` process `pid` was started with (its credentials live there
/// as far as its own tools are concerned).
pub fn process_home(pid: u32) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0)
        .find_map(|v| v.strip_prefix(b"HOME="))
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .filter(|h| h.starts_with('/') && h.len() > 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::activity::{ExecActivity, FileActivity};

    fn manifest(text: &str) -> Manifest {
        Manifest::parse(Path::new("/m/srv.json"), text).expect("valid manifest")
    }

    #[test]
    fn credentials_are_anchored_at_the_homes_and_declared_kinds_left_out() {
        let homes = vec!["/home/u".to_owned(), "/tmp/fake/".to_owned()];
        let k = KillSet::compile(&manifest(r#"{"name": "srv"}"#), &homes);
        assert!(k.credential("/home/u/.ssh/id_rsa").is_some());
        assert!(k.credential("/tmp/fake/.ssh/id_rsa").is_some());
        assert!(k.credential("/tmp/fake/.aws/credentials").is_some());
        assert!(k.credential("/etc/shadow").is_some());
        assert!(k.credential("/etc/shadowx").is_none(), "exact, not a prefix");
        assert!(k.credential("/home/u/.sshx/a").is_none());
        assert!(
            k.credential("/srv/app/.env").is_none(),
            "outside the homes: monitored only"
        );
        let ssh = manifest(r#"{"name": "srv", "read": ["~/.ssh/known_hosts"]}"#);
        let k = KillSet::compile(&ssh, &homes);
        assert!(k.credential("/home/u/.ssh/id_rsa").is_none(), "the manifest names .ssh");
        assert!(k.credential("/home/u/.aws/config").is_some());
    }

    #[test]
    fn what_the_kernel_kills_for() {
        let k = KillSet::compile(&manifest(r#"{"name": "srv"}"#), &["/h".to_owned()]);
        let open = |path: &str, result: i64| {
            Activity::File(FileActivity {
                op: FileOp::Open,
                path: path.into(),
                path2: None,
                access: Default::default(),
                result,
                path_truncated: false,
                proc_path: None,
                via: None,
            })
        };
        assert!(k.blocks(&open("/h/.ssh/id_rsa", 3)));
        assert!(!k.blocks(&open("/h/.ssh/id_rsa", -2)), "a failed open returned nothing");
        assert!(!k.blocks(&open("/h/notes.txt", 3)));
        let exec = |filename: &str, stdio: Option<StdioKind>, fileless: bool| {
            Activity::Exec(ExecActivity {
                filename: filename.into(),
                fileless,
                stdio: [stdio.clone(), stdio.clone(), stdio],
                ..Default::default()
            })
        };
        assert!(k.blocks(&exec("/bin/sh", Some(StdioKind::Socket), false)));
        assert!(!k.blocks(&exec("/bin/sh", Some(StdioKind::Pipe), false)));
        assert!(!k.blocks(&exec("/usr/bin/git", Some(StdioKind::Socket), false)));
        assert!(k.blocks(&exec("/memfd:x (deleted)", None, true)));
    }

    #[test]
    fn this_hosts_shells_are_found_by_their_real_path() {
        let p = interpreter_paths();
        assert!(p.iter().any(|x| x.ends_with("sh") || x.contains("/dash")), "{p:?}");
        assert!(p.iter().all(|x| x.starts_with('/')));
    }
}
