//! The policy engine's input: what a watched process did, with who did it.
//! Mirrors the kernel's facts (decode.rs) without depending on their layout.
//! Whoever builds an activity interprets it once here (`/proc` targets:
//! [`ProcPath`]); the host's answers the engine cannot look up itself (real
//! paths of a command line) come as [`PathFacts`].

use std::{collections::HashMap, net::IpAddr, path::Path};

/// Who acted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcContext {
    pub server: String,
    pub ktime_ns: u64,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub exe: String,
    pub argv: Vec<String>,
    /// Nearest first: (pid, exe).
    pub ancestry: Vec<(u32, String)>,
    /// The parent's command line (tells `npx` from plain `node`).
    pub parent_argv: Vec<String>,
    /// Working directory, when known (resolves relative arguments).
    pub cwd: Option<String>,
    /// MCP tool call in flight, when known.
    pub tool: Option<String>,
    pub call_id: Option<String>,
    /// Tools of every call of the server in flight, when there are several
    /// (`tool` is then only the most recent one's); empty otherwise.
    pub tools_in_flight: Vec<String>,
    /// The kill layer sent the process SIGKILL at this activity.
    pub killed: bool,
    /// The package manager run it belongs to: its alerts are folded.
    pub operation: Option<crate::alerts::fold::Operation>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Activity {
    Exec(ExecActivity),
    File(FileActivity),
    Net(NetActivity),
    Risky(RiskyActivity),
}

/// What one of fds 0/1/2 was at exec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StdioKind {
    File(String),
    Pipe,
    /// A TCP or UDP socket.
    Socket,
    /// A unix socket (socketpair): what Node-based hosts use for stdio.
    LocalSocket,
    Tty,
    /// A pty slave whose master is held by a process with a network socket
    /// (on its stdio, or connected): Python's `pty.spawn` reverse shell.
    /// The master holder's pid.
    NetworkPty(u32),
    Other,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecActivity {
    /// The path given to exec.
    pub filename: String,
    /// The interpreter run instead (scripts).
    pub interp: Option<String>,
    pub argv: Vec<String>,
    /// Executed from memory (memfd, deleted file, /proc/self/fd/N).
    pub fileless: bool,
    /// The exec'd file, or the script a shell or interpreter was given, was
    /// written by this server shortly before: the pipeline's write history
    /// decides, the engine keeps none.
    pub written_by_server: bool,
    /// Which file that was (the script, or the exec'd file itself).
    pub written_path: Option<String>,
    /// fds 0, 1, 2 (None: unknown).
    pub stdio: [Option<StdioKind>; 3],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileOp {
    Open,
    Truncate,
    Rename,
    Unlink,
    Mkdir,
    Link,
    Symlink,
    Chmod,
    Chown,
    /// An exec refused (the kernel reports no other: a successful exec is
    /// an [`ExecActivity`]).
    Exec,
}

/// What a file syscall asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub read: bool,
    pub write: bool,
    pub create: bool,
    pub truncate: bool,
    pub append: bool,
    pub directory: bool,
    /// chmod/chown: metadata only.
    pub attributes: bool,
}

impl Access {
    /// Whether it modifies the file system.
    pub fn writes(&self) -> bool {
        self.write || self.create || self.truncate || self.append
    }

    /// The words event lines carry (`["read", "write"]`...).
    pub fn words(&self) -> Vec<&'static str> {
        self.each_word().collect()
    }

    /// [`Access::words`] one by one (event lines write them without a `Vec`).
    pub fn each_word(self) -> impl Iterator<Item = &'static str> {
        [
            (self.read, "read"),
            (self.write, "write"),
            (self.create, "create"),
            (self.truncate, "truncate"),
            (self.append, "append"),
            (self.directory, "directory"),
            (self.attributes, "attributes"),
        ]
        .into_iter()
        .filter_map(|(on, w)| on.then_some(w))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileActivity {
    pub op: FileOp,
    /// Absolute, resolved.
    pub path: String,
    /// rename/link/symlink: the new name.
    pub path2: Option<String>,
    pub access: Access,
    /// fd or -errno.
    pub result: i64,
    pub path_truncated: bool,
    /// `path` is under /proc: whose process it names.
    pub proc_path: Option<ProcPath>,
    /// Not a syscall: how the operation was made (`io_uring`: submitted
    /// through a ring, its outcome unknown when judged).
    pub via: Option<&'static str>,
    /// The opened file's (device, inode), when the kernel read them.
    pub identity: Option<crate::enforce::identity::FileId>,
    /// The credential file this is, known by its identity, when `path`
    /// does not say so (a hardlink, a bind mount, a renamed directory):
    /// the path it was found at. Set by the policy before judging.
    pub same_as: Option<String>,
}

impl FileActivity {
    /// Whether the operation changes the file system (else it only reads).
    pub fn writes(&self) -> bool {
        match self.op {
            FileOp::Open | FileOp::Exec => self.access.writes(),
            _ => true,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.result >= 0
    }

    /// Failed with EACCES or EPERM (what Landlock answers).
    pub fn refused(&self) -> bool {
        self.result == -13 || self.result == -1
    }
}

/// A path under `/proc` by the process it names, relative to the acting one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcPath {
    /// `/proc/self`, `/proc/thread-self`, or the acting process's own pid.
    Own {
        tail: String,
    },
    Other {
        pid: u32,
        tail: String,
    },
}

impl ProcPath {
    /// Parses `/proc/PID/TAIL`; a thread's `/proc/PID/task/TID/TAIL` is its
    /// process's `TAIL` (the same memory, environment and maps). `tail` is
    /// empty for the process directory itself. None: not a process's path.
    pub fn parse(path: &str, own_pid: u32) -> Option<ProcPath> {
        let rest = path.strip_prefix("/proc/")?;
        let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let tail = thread_tail(tail).to_owned();
        match first {
            "self" | "thread-self" => Some(ProcPath::Own { tail }),
            n if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                let pid: u32 = n.parse().ok()?;
                Some(if pid == own_pid {
                    ProcPath::Own { tail }
                } else {
                    ProcPath::Other { pid, tail }
                })
            }
            _ => None,
        }
    }

    /// Below the process directory: `fd/3`, `maps`, `` for the directory.
    pub fn tail(&self) -> &str {
        match self {
            ProcPath::Own { tail } | ProcPath::Other { tail, .. } => tail,
        }
    }

    /// Another process's memory, environment or maps: a risky access.
    pub fn sensitive_file(&self) -> Option<RiskyOp> {
        match self {
            ProcPath::Own { .. } => None,
            ProcPath::Other { tail, .. } => match tail.as_str() {
                "mem" => Some(RiskyOp::ProcMem),
                "environ" => Some(RiskyOp::ProcEnviron),
                "maps" => Some(RiskyOp::ProcMaps),
                _ => None,
            },
        }
    }
}

/// `task/TID/TAIL` -> `TAIL` (`task/TID` -> ``); anything else unchanged.
fn thread_tail(tail: &str) -> &str {
    let Some(rest) = tail.strip_prefix("task/") else {
        return tail;
    };
    let (tid, below) = rest.split_once('/').unwrap_or((rest, ""));
    if !tid.is_empty() && tid.bytes().all(|b| b.is_ascii_digit()) {
        below
    } else {
        tail
    }
}

/// What the file system says of the paths on one command line, looked up
/// (`host.rs`) before the engine judges it: the engine does no I/O. Keyed by
/// the argument made absolute as written ([`PathFacts::absolute`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathFacts {
    /// Absolute as written -> (real path, whether it is a regular file).
    real: HashMap<String, (String, bool)>,
    /// Real path of a file -> the package it belongs to: the nearest
    /// directory above it holding project or package metadata (never a
    /// shared directory such as `/tmp` or a home).
    packages: HashMap<String, String>,
}

impl PathFacts {
    /// A command-line argument made absolute against the working directory,
    /// not resolved (`~` and relative ones without a cwd stay as given).
    pub fn absolute(arg: &str, cwd: Option<&str>) -> String {
        match cwd {
            Some(c) if !arg.starts_with('/') && !arg.starts_with('~') => {
                Path::new(c).join(arg).to_string_lossy().into_owned()
            }
            _ => arg.to_owned(),
        }
    }

    /// What may name a path on a command line: every argument after the
    /// program, and the value of every `--flag=value`.
    pub fn candidates(argv: &[String]) -> impl Iterator<Item = &str> {
        argv.iter()
            .skip(1)
            .flat_map(|a| std::iter::once(a.as_str()).chain(a.match_indices('=').map(move |(i, _)| &a[i + 1..])))
            .filter(|a| !a.is_empty())
    }

    /// `absolute` (as [`PathFacts::absolute`] made it) exists as `real`.
    pub fn insert(&mut self, absolute: String, real: String, is_file: bool) {
        self.real.insert(absolute, (real, is_file));
    }

    /// The real path (links and `..` resolved) of an absolute path as written.
    pub fn real(&self, absolute: &str) -> Option<&str> {
        self.real.get(absolute).map(|(r, _)| r.as_str())
    }

    /// `real` (a file) belongs to the package rooted at `root`.
    pub fn insert_package(&mut self, real: String, root: String) {
        self.packages.insert(real, root);
    }

    /// The package root of a real file, when it has one.
    pub fn package(&self, real: &str) -> Option<&str> {
        self.packages.get(real).map(String::as_str)
    }

    /// The real path, when it is a regular file.
    pub fn file(&self, absolute: &str) -> Option<&str> {
        self.real.get(absolute).filter(|(_, f)| *f).map(|(r, _)| r.as_str())
    }
}

/// The script an interpreter runs: its first argument that is not an option
/// (later arguments are the script's data, not code).
pub fn script_arg(argv: &[String]) -> Option<&str> {
    argv.iter().skip(1).find(|a| !a.starts_with('-')).map(String::as_str)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetOp {
    Connect,
    Bind,
    Listen,
    Accept,
    SendTo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetActivity {
    pub op: NetOp,
    pub proto: Proto,
    /// Peer (connect, sendto, accept) or local address (bind, listen); None for unix sockets.
    pub addr: Option<IpAddr>,
    pub port: u16,
    pub unix_path: Option<String>,
    /// Learnt from DNS answers for this address.
    pub hostname: Option<String>,
    /// A listen on a non-loopback address.
    pub exposed: bool,
    pub result: i64,
    /// Not a syscall: how the operation was made (see [`FileActivity::via`]).
    pub via: Option<&'static str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RiskyOp {
    Ptrace,
    ProcessVmReadv,
    ProcessVmWritev,
    ProcMem,
    ProcEnviron,
    ProcMaps,
    SetUid,
    SetGid,
    Capset,
    InitModule,
    Bpf,
    Mount,
    IoUringSetup,
    /// pidfd_getfd: a descriptor taken from another process.
    FdSteal,
    /// An ia32 syscall (`int 0x80`) of a 64-bit process, by its ia32 number.
    CompatSyscall(u32),
    /// An operation submitted through an io_uring (`IORING_OP_*` number).
    IoUringOp(u8),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RiskyActivity {
    pub op: RiskyOp,
    pub target_pid: Option<u32>,
}

impl RiskyOp {
    pub fn name(self) -> &'static str {
        match self {
            RiskyOp::Ptrace => "ptrace",
            RiskyOp::ProcessVmReadv => "process_vm_readv",
            RiskyOp::ProcessVmWritev => "process_vm_writev",
            RiskyOp::ProcMem => "proc_mem",
            RiskyOp::ProcEnviron => "proc_environ",
            RiskyOp::ProcMaps => "proc_maps",
            RiskyOp::SetUid => "setuid",
            RiskyOp::SetGid => "setgid",
            RiskyOp::Capset => "capset",
            RiskyOp::InitModule => "init_module",
            RiskyOp::Bpf => "bpf",
            RiskyOp::Mount => "mount",
            RiskyOp::IoUringSetup => "io_uring_setup",
            RiskyOp::FdSteal => "pidfd_getfd",
            RiskyOp::CompatSyscall(_) => "compat_syscall",
            RiskyOp::IoUringOp(_) => "io_uring_op",
        }
    }
}

impl FileOp {
    pub fn name(self) -> &'static str {
        match self {
            FileOp::Open => "open",
            FileOp::Truncate => "truncate",
            FileOp::Rename => "rename",
            FileOp::Unlink => "unlink",
            FileOp::Mkdir => "mkdir",
            FileOp::Link => "link",
            FileOp::Symlink => "symlink",
            FileOp::Chmod => "chmod",
            FileOp::Chown => "chown",
            FileOp::Exec => "exec",
        }
    }
}

impl NetOp {
    pub fn name(self) -> &'static str {
        match self {
            NetOp::Connect => "connect",
            NetOp::Bind => "bind",
            NetOp::Listen => "listen",
            NetOp::Accept => "accept",
            NetOp::SendTo => "sendto",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_argv as argv;

    #[test]
    fn proc_paths_by_whose_process_they_name() {
        let own = |tail: &str| Some(ProcPath::Own { tail: tail.into() });
        let other = |pid, tail: &str| Some(ProcPath::Other { pid, tail: tail.into() });
        assert_eq!(ProcPath::parse("/proc/42/maps", 42), own("maps"));
        assert_eq!(ProcPath::parse("/proc/self/environ", 42), own("environ"));
        assert_eq!(ProcPath::parse("/proc/thread-self/fd/3", 42), own("fd/3"));
        assert_eq!(ProcPath::parse("/proc/42/task/43/mem", 42), own("mem"));
        assert_eq!(ProcPath::parse("/proc/42", 42), own(""));
        assert_eq!(ProcPath::parse("/proc/1/environ", 42), other(1, "environ"));
        assert_eq!(ProcPath::parse("/proc/7/task/8/maps", 42), other(7, "maps"));
        assert_eq!(ProcPath::parse("/proc/7/task/8", 42), other(7, ""));
        assert_eq!(ProcPath::parse("/proc/7/task", 42), other(7, "task"));
        assert_eq!(ProcPath::parse("/proc/7/task/x/mem", 42), other(7, "task/x/mem"));
        for not in [
            "/proc/meminfo",
            "/proc/sys/kernel/osrelease",
            "/proc",
            "/proc/",
            "/proc/+1/mem",
            "/etc/passwd",
            "/procx/1/mem",
        ] {
            assert_eq!(ProcPath::parse(not, 42), None, "{not}");
        }
    }

    #[test]
    fn only_another_processs_memory_environment_and_maps_are_sensitive() {
        let s = |p: &str| ProcPath::parse(p, 42).and_then(|p| p.sensitive_file());
        assert_eq!(s("/proc/1/mem"), Some(RiskyOp::ProcMem));
        assert_eq!(s("/proc/1/environ"), Some(RiskyOp::ProcEnviron));
        assert_eq!(s("/proc/1/task/2/maps"), Some(RiskyOp::ProcMaps));
        assert_eq!(s("/proc/1/status"), None);
        assert_eq!(s("/proc/42/mem"), None, "its own");
        assert_eq!(s("/proc/self/environ"), None, "its own");
    }

    #[test]
    fn command_line_path_candidates_and_lookups() {
        let a = argv(&["python", "-m", "srv", "--root=/data", "rel/x", "a=b=c"]);
        let c: Vec<&str> = PathFacts::candidates(&a).collect();
        assert_eq!(c, ["-m", "srv", "--root=/data", "/data", "rel/x", "a=b=c", "b=c", "c"]);
        assert_eq!(PathFacts::absolute("rel/x", Some("/w")), "/w/rel/x");
        assert_eq!(PathFacts::absolute("/abs", Some("/w")), "/abs");
        assert_eq!(PathFacts::absolute("~/x", Some("/w")), "~/x");
        assert_eq!(PathFacts::absolute("rel", None), "rel");
        let mut f = PathFacts::default();
        f.insert("/w/rel/x".into(), "/real/x".into(), true);
        f.insert("/data".into(), "/data".into(), false);
        assert_eq!(f.real("/w/rel/x"), Some("/real/x"));
        assert_eq!(f.file("/w/rel/x"), Some("/real/x"));
        assert_eq!(f.file("/data"), None, "a directory");
        assert_eq!(f.real("/nowhere"), None);
        assert_eq!(
            script_arg(&argv(&["python3", "-u", "server.py", "--port"])),
            Some("server.py")
        );
        assert_eq!(script_arg(&argv(&["node"])), None);
    }
}
