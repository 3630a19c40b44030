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

use crate::enforce::{
    allowlist::{NetAllow, Rule},
    identity::{self, CredentialFiles, FileId},
};
use crate::policy::{
    activity::{Activity, FileOp, NetOp, RiskyOp, StdioKind},
    catalog::CATALOGUE,
    engine::runs_scripts,
    glob::name_matches,
    manifest::{ExePattern, Manifest},
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
    /// The credential files under those locations by identity (from the
    /// host's registry), with their kind: the same file under any name.
    pub credential_files: Vec<(FileId, usize)>,
    /// The programs the server may exec, as files; `None` when a declared
    /// pattern does not resolve to files (exec is then only monitored).
    pub programs: Option<Vec<(String, FileId)>>,
    /// Its network allowlist; `None` when it allows everything or names
    /// hosts (a name's addresses are only known from answers the kernel
    /// cannot wait for): connect is then only monitored.
    pub net: Option<NetAllow>,
    /// What the server may always exec (its own executable, its runtime's).
    pub always: Vec<String>,
    /// The kernel cannot kill here (`bpf_send_signal` failed its probe, or
    /// the layer is simulated missing): findings only say what it would.
    pub missing: bool,
}

impl KillSet {
    /// The kill set of a server judged against `manifest`, whose homes are `homes`.
    pub fn compile(manifest: &Manifest, homes: &[String]) -> KillSet {
        KillSet {
            credentials: locations(Some(manifest), homes),
            missing: false,
            ..Default::default()
        }
    }

    /// Resolves the programs `manifest` declares (its `exec` and its
    /// tools'), with `always` (the server's own executable and its
    /// runtime's), to the files the kernel compares.
    pub fn resolve_programs(&mut self, manifest: &Manifest, always: &[String]) {
        let mut patterns: Vec<ExePattern> = manifest.exec.clone();
        for t in manifest.tools.values() {
            patterns.extend(t.exec.iter().flatten().cloned());
        }
        self.programs = identity::programs(&patterns, always);
    }

    /// The allowlist the kernel checks a connect against: the manifest's
    /// outbound hosts, ranges and loopback rules, plus DNS (port 53).
    pub fn compile_net(&mut self, manifest: &Manifest) {
        let ob = &manifest.outbound;
        let mut a = NetAllow::compile(ob, &manifest.listen, &[]);
        if ob.all || !a.names.is_empty() {
            self.net = None;
            return;
        }
        // Name resolution is not the server's choice of destination.
        a.out.push(Rule {
            net: "::/0".parse().expect("a valid range"),
            proto: 0,
            port: 53,
        });
        self.net = Some(a);
    }

    /// Takes the registry's files under this server's credential locations.
    pub fn take_credential_files(&mut self, files: &CredentialFiles) {
        self.credential_files = files
            .iter()
            .filter(|(_, (_, path))| self.credential(path).is_some())
            .map(|(id, (kind, _))| (*id, *kind))
            .collect();
    }

    /// Whether the exec of `program` (the file really executed) lies
    /// outside the resolved program set.
    fn program_outside(&self, program: &str) -> bool {
        let Some(set) = &self.programs else {
            return false;
        };
        match identity::of(Path::new(program)) {
            Some(id) => !set.iter().any(|(_, f)| *f == id),
            None => false,
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

    /// Whether the kill layer kills `act` from userspace: a shell on a pty
    /// driven from the network. The kernel sees a tty on its stdio; who
    /// holds the pty's master (a process with a socket) is found in /proc
    /// when the exec is judged, and the agent sends the SIGKILL itself.
    pub fn kills_from_userspace(&self, act: &Activity) -> bool {
        match act {
            Activity::Exec(e) => {
                let pty = e.stdio[..2].iter().any(|s| matches!(s, Some(StdioKind::NetworkPty(_))));
                pty && self.blocks(act)
            }
            _ => false,
        }
    }

    /// Whether the kernel kills (enforce) or would kill (audit) for `act`.
    pub fn blocks(&self, act: &Activity) -> bool {
        match act {
            Activity::File(f) => {
                f.op == FileOp::Open
                    && f.succeeded()
                    && (self.credential(&f.path).is_some()
                        || f.identity
                            .is_some_and(|id| self.credential_files.iter().any(|(c, _)| *c == id)))
            }
            Activity::Exec(e) => {
                let program = e.interp.as_deref().unwrap_or(&e.filename);
                e.fileless || (wired(e) && runs_scripts(program)) || self.program_outside(program)
            }
            Activity::Risky(r) => matches!(
                r.op,
                RiskyOp::Ptrace
                    | RiskyOp::ProcessVmReadv
                    | RiskyOp::ProcessVmWritev
                    | RiskyOp::InitModule
                    | RiskyOp::Bpf
            ),
            Activity::Net(n) => n.op == NetOp::Connect && self.net.as_ref().is_some_and(|a| !a.allows(n)),
        }
    }
}

/// Whether stdin or stdout of an exec reaches the network: a TCP or UDP
/// socket as the kernel tells them (not a Unix socketpair), or a pty whose
/// master a process with such a socket holds.
fn wired(e: &crate::policy::activity::ExecActivity) -> bool {
    e.stdio[..2]
        .iter()
        .any(|s| matches!(s, Some(StdioKind::Socket | StdioKind::NetworkPty(_))))
}

/// The credential locations of the catalogue at `homes`, less the kinds
/// `manifest` declares (all of them for the host's registry: `None`).
fn locations(manifest: Option<&Manifest>, homes: &[String]) -> Vec<CredentialEntry> {
    let mut credentials = Vec::new();
    for (kind, k) in CATALOGUE.iter().enumerate() {
        if manifest.is_some_and(|m| declares(m, k.markers)) {
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
    credentials
}

/// Every credential location of the catalogue at `homes` (the host's
/// registry of credential files by identity).
pub fn credential_locations(homes: &[String]) -> Vec<CredentialEntry> {
    locations(None, homes)
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

/// Sends SIGKILL to `pid` (a process the kill layer kills from userspace);
/// whether it was sent.
pub fn now(pid: u32) -> bool {
    use nix::{sys::signal, unistd::Pid};
    match signal::kill(Pid::from_raw(pid as i32), signal::Signal::SIGKILL) {
        Ok(()) => true,
        Err(e) => {
            log::warn!("kill layer: SIGKILL to pid {pid} failed: {e}");
            false
        }
    }
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
                identity: None,
                same_as: None,
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
        assert!(!k.kills_from_userspace(&exec("/bin/sh", Some(StdioKind::Socket), false)));
        let pty = exec("/bin/sh", Some(StdioKind::NetworkPty(7)), false);
        assert!(k.blocks(&pty), "a shell on a pty driven from the network");
        assert!(
            k.kills_from_userspace(&pty),
            "the kernel cannot tell: the agent kills it"
        );
        assert!(!k.blocks(&exec("/bin/sh", Some(StdioKind::Tty), false)));
        assert!(!k.kills_from_userspace(&exec("/usr/bin/git", Some(StdioKind::NetworkPty(7)), false)));
    }

    #[test]
    fn this_hosts_shells_are_found_by_their_real_path() {
        let p = interpreter_paths();
        assert!(p.iter().any(|x| x.ends_with("sh") || x.contains("/dash")), "{p:?}");
        assert!(p.iter().all(|x| x.starts_with('/')));
    }
}
