//! Each kernel event interpreted once, into types: the operation, the access
//! an open asked for, absolute paths, the process another process's `/proc`
//! file belongs to, the protocol and address of a socket call, what a risky
//! call risks. The event line (output/lines.rs) and the policy (the
//! [`Activity`] values) both read these; nothing is parsed back from text.

use std::net::IpAddr;

use agent_common::{
    EventKind,
    abi::{AT_REMOVEDIR, O_ACCMODE, O_APPEND, O_CREAT, O_DIRECTORY, O_RDWR, O_TRUNC, O_WRONLY, S_IFDIR, S_IFMT},
    io_uring,
    syscalls::{self, Op, Syscall},
};

use crate::{
    kernel::decode::{Addr, FdKind, Sys},
    policy::{
        activity::{
            Access, Activity, ExecActivity, FileActivity, FileOp, NetActivity, NetOp, ProcPath, Proto, RiskyActivity,
            RiskyOp, StdioKind, script_arg,
        },
        engine::runs_scripts,
    },
};

/// A file syscall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileObservation {
    pub op: FileOp,
    /// An unlink of a directory (rmdir, unlinkat with AT_REMOVEDIR).
    pub rmdir: bool,
    pub access: Access,
    /// Absolute and normal: resolved by the kernel, or the given path joined
    /// to its kernel-resolved base. None when neither could be read.
    pub path: Option<String>,
    /// The new name of a rename or link, absolute.
    pub target: Option<String>,
    /// Whose process a `/proc` path names (parsed here, once).
    pub proc_path: Option<ProcPath>,
    /// `/proc/PID/{mem,environ,maps}` of another process.
    pub other_proc: Option<RiskyActivity>,
}

impl FileObservation {
    pub fn op_name(&self) -> &'static str {
        if self.rmdir { "rmdir" } else { self.op.name() }
    }

    /// The file this syscall changed, if it changed one: what write-then-exec remembers.
    pub fn written(&self, ret: i64) -> Option<&str> {
        if ret < 0 || !self.access.writes() {
            return None;
        }
        match self.op {
            FileOp::Rename | FileOp::Link => self.target.as_deref(),
            _ => self.path.as_deref(),
        }
    }

    fn into_activity(self, s: &Sys) -> Option<FileActivity> {
        Some(FileActivity {
            op: self.op,
            path: self.path?,
            path2: self.target,
            access: self.access,
            result: s.ret,
            path_truncated: s.path_truncated,
            proc_path: self.proc_path,
            via: None,
            identity: s.file_id,
            same_as: None,
        })
    }
}

/// A socket syscall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetObservation {
    pub op: NetOp,
    /// tcp/udp for IP, stream/dgram for Unix sockets, raw, seqpacket.
    pub proto: Option<&'static str>,
    /// inet, inet6, unix.
    pub family: Option<&'static str>,
    /// Peer (connect, sendto, accept) or local address (bind, listen); None
    /// for a send on a connected socket (the connect named it).
    pub addr: Option<Addr>,
    /// The name a DNS answer gave the address.
    pub hostname: Option<String>,
    /// A successful listen the rest of the network can reach.
    pub exposed: bool,
}

impl NetObservation {
    fn into_activity(self, s: &Sys) -> Option<NetActivity> {
        let exposed = self.op == NetOp::Listen && self.addr.as_ref().is_some_and(exposed);
        let (addr, port, unix_path) = match self.addr? {
            Addr::Ip { ip, port, .. } => (Some(ip), port, None),
            Addr::Unix { path, .. } => (None, 0, Some(path)),
        };
        Some(NetActivity {
            op: self.op,
            proto: match self.proto {
                Some("tcp") => Proto::Tcp,
                Some("udp") => Proto::Udp,
                _ => Proto::Other,
            },
            addr,
            port,
            unix_path,
            hostname: self.hostname,
            exposed,
            result: s.ret,
            via: None,
        })
    }
}

/// A risky syscall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RiskyObservation {
    pub act: RiskyActivity,
    /// Where a compat (ia32) connect, bind or sendto, or an io_uring
    /// connect or send, went: judged by the network policy as well.
    pub net: Option<NetObservation>,
    /// The file an io_uring openat opens: judged by the file policy as well.
    pub file: Option<FileObservation>,
}

impl RiskyObservation {
    /// The operation as event lines name it (setuid and setgid are `setid`).
    pub fn op_name(&self) -> &'static str {
        match self.act.op {
            RiskyOp::SetUid | RiskyOp::SetGid => "setid",
            RiskyOp::InitModule => "load_module",
            op => op.name(),
        }
    }

    /// Its category.
    pub fn risk(&self) -> &'static str {
        match self.act.op {
            RiskyOp::Ptrace => "ptrace",
            RiskyOp::ProcessVmReadv | RiskyOp::ProcessVmWritev | RiskyOp::ProcMem => "process_memory",
            RiskyOp::ProcEnviron => "process_environment",
            RiskyOp::ProcMaps => "process_maps",
            RiskyOp::SetUid | RiskyOp::SetGid | RiskyOp::Capset => "credentials",
            RiskyOp::InitModule => "kernel_module",
            RiskyOp::Bpf => "bpf",
            RiskyOp::Mount => "mount",
            RiskyOp::IoUringSetup | RiskyOp::IoUringOp(_) => "io_uring",
            RiskyOp::FdSteal => "descriptor_theft",
            RiskyOp::CompatSyscall(_) => "compat_syscall",
        }
    }

    pub fn note(&self) -> Option<&'static str> {
        match self.act.op {
            RiskyOp::IoUringSetup => Some(
                "io_uring submits I/O without syscalls, which bypasses syscall hooks: its operations are reported as io_uring_op, an openat with its path, a connect or send with its destination",
            ),
            RiskyOp::CompatSyscall(_) => Some(
                "an ia32 syscall (int 0x80) of a 64-bit process: numbered from the ia32 table, reported at entry, \
                 decoded no further than an open's path",
            ),
            _ => None,
        }
    }
}

/// What one syscall event means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SysObservation {
    File(FileObservation),
    Net(NetObservation),
    Risky(RiskyObservation),
    /// DNS messages and syscalls outside the families above: no judgement.
    Other,
}

impl SysObservation {
    /// What the policy judges, the same values the line showed (moved, once
    /// the line is written), appended to `out`. A failed access touched
    /// nothing; the policy decides which failures matter. Pushed one by one
    /// into the caller's reused vector: collected from a chain of options,
    /// each activity (~200 bytes) was copied several times and a vector
    /// allocated per event (5-8% of the agent's time in a flood).
    pub fn into_activities(self, s: &Sys, out: &mut Vec<Activity>) {
        match self {
            SysObservation::File(mut f) => {
                // A failed open of another process's file read nothing of it.
                if let Some(other) = f.other_proc.take().filter(|_| s.ret >= 0) {
                    out.push(Activity::Risky(other));
                }
                if let Some(file) = f.into_activity(s) {
                    out.push(Activity::File(file));
                }
            }
            SysObservation::Net(n) => {
                if let Some(net) = n.into_activity(s) {
                    out.push(Activity::Net(net));
                }
            }
            SysObservation::Risky(r) => {
                let via = matches!(r.act.op, RiskyOp::IoUringOp(_)).then_some("io_uring");
                out.push(Activity::Risky(r.act));
                if let Some(mut f) = r.file {
                    if let Some(other) = f.other_proc.take() {
                        out.push(Activity::Risky(other));
                    }
                    if let Some(file) = f.into_activity(s) {
                        out.push(Activity::File(FileActivity { via, ..file }));
                    }
                }
                if let Some(net) = r.net.and_then(|n| n.into_activity(s)) {
                    out.push(Activity::Net(NetActivity { via, ..net }));
                }
            }
            SysObservation::Other => {}
        }
    }
}

/// Interprets a file, net or risky syscall, by its entry in the syscall
/// table; `hostname` names a peer address.
pub fn sys(s: &Sys, hostname: impl FnOnce(&IpAddr) -> Option<String>) -> SysObservation {
    if s.compat {
        return SysObservation::Risky(RiskyObservation {
            act: RiskyActivity {
                op: RiskyOp::CompatSyscall(s.nr),
                target_pid: None,
            },
            net: compat_net(s, hostname),
            file: None,
        });
    }
    // Not a syscall: an operation a ring submitted (see agent_common::io_uring).
    if s.header.kind == EventKind::Risky && s.nr == io_uring::IO_URING_OP_NR {
        let opcode = s.args[io_uring::ARG_OPCODE] as u8;
        return SysObservation::Risky(RiskyObservation {
            act: RiskyActivity {
                op: RiskyOp::IoUringOp(opcode),
                target_pid: None,
            },
            net: io_uring_net(s, opcode, hostname),
            file: io_uring_file(s, opcode),
        });
    }
    let Some(sc) = s.syscall.or_else(|| syscalls::lookup(s.nr)) else {
        return SysObservation::Other;
    };
    if let Some(f) = file(s, sc) {
        return SysObservation::File(f);
    }
    if let Some(op) = net_op(sc.op) {
        return SysObservation::Net(net(s, op, hostname));
    }
    match risky_op(sc) {
        Some(op) => SysObservation::Risky(RiskyObservation {
            act: RiskyActivity {
                op,
                // The table's pid argument, or the process the kernel
                // resolved (a pidfd's).
                target_pid: sc.pid.map(|i| syscalls::arg(&s.args, Some(i)) as u32).or(s.target_pid),
            },
            net: None,
            file: None,
        }),
        None => SysObservation::Other,
    }
}

fn net(s: &Sys, op: NetOp, hostname: impl FnOnce(&IpAddr) -> Option<String>) -> NetObservation {
    let ip = s.addr.as_ref().and_then(Addr::ip);
    NetObservation {
        op,
        proto: proto(s.sock_type, s.addr.as_ref()),
        family: s.addr.as_ref().map(family),
        exposed: op == NetOp::Listen && s.ret == 0 && s.addr.as_ref().is_some_and(exposed),
        hostname: ip.as_ref().and_then(hostname),
        addr: s.addr.clone(),
    }
}

/// The destination of a compat connect, bind or sendto (direct or through
/// socketcall), read at entry: the call's outcome is not known.
fn compat_net(s: &Sys, hostname: impl FnOnce(&IpAddr) -> Option<String>) -> Option<NetObservation> {
    let (op, _, _) = syscalls::ia32::sockaddr_call(s.nr, s.args[0])?;
    s.addr.as_ref()?;
    Some(net(s, net_op(op)?, hostname))
}

/// Where an io_uring connect or send went (a send on a connected socket
/// names nothing: its connect did), from the kernel's copy of the address;
/// submitted, so its outcome is not known.
fn io_uring_net(s: &Sys, opcode: u8, hostname: impl FnOnce(&IpAddr) -> Option<String>) -> Option<NetObservation> {
    let op = if opcode == io_uring::OP_CONNECT {
        NetOp::Connect
    } else if io_uring::sends(opcode) {
        NetOp::SendTo
    } else {
        return None;
    };
    s.addr.as_ref()?;
    Some(net(s, op, hostname))
}

/// The file an io_uring openat or openat2 opens: the kernel's copy of the
/// path (joined to its kernel-resolved base when relative) and the access
/// its flags ask for. Submitted, not completed: the file is not known to
/// exist, and the path is not resolved through symlinks.
fn io_uring_file(s: &Sys, opcode: u8) -> Option<FileObservation> {
    if !io_uring::opens(opcode) {
        return None;
    }
    s.path.as_ref()?;
    let access = open_access(s.args[io_uring::ARG_OPEN_FLAGS], 0);
    Some(file_observation(s, FileOp::Open, access))
}

fn file(s: &Sys, sc: &Syscall) -> Option<FileObservation> {
    let (op, access) = file_op(s, sc)?;
    Some(file_observation(s, op, access))
}

/// A file operation's paths, made absolute, and whose `/proc` entry it names.
fn file_observation(s: &Sys, op: FileOp, access: Access) -> FileObservation {
    let path = absolute_path(s);
    let target = matches!(op, FileOp::Rename | FileOp::Link)
        .then(|| s.path2.as_deref().map(|p2| absolute(p2, s.base.as_deref())))
        .flatten();
    let proc_path = path.as_deref().and_then(|p| ProcPath::parse(p, s.header.pid));
    let other_proc = proc_path.as_ref().and_then(|pp| match (pp, pp.sensitive_file()) {
        (ProcPath::Other { pid, .. }, Some(op)) => Some(RiskyActivity {
            op,
            target_pid: Some(*pid),
        }),
        _ => None,
    });
    FileObservation {
        op,
        rmdir: op == FileOp::Unlink && access.directory,
        access,
        path,
        target,
        proc_path,
        other_proc,
    }
}

/// The operation and access of a file syscall.
fn file_op(s: &Sys, sc: &Syscall) -> Option<(FileOp, Access)> {
    let write = Access {
        write: true,
        ..Default::default()
    };
    let directory = Access {
        directory: true,
        ..write
    };
    let attributes = Access {
        attributes: true,
        ..Default::default()
    };
    let flags = syscalls::arg(&s.args, sc.flags);
    Some(match sc.op {
        // creat(2) is open(O_CREAT|O_WRONLY|O_TRUNC); openat2's flags sit
        // behind a pointer the record does not carry: judged as a read.
        Op::Open if sc.nr == syscalls::CREAT => (FileOp::Open, open_access(O_CREAT | O_WRONLY | O_TRUNC, s.mode)),
        Op::Open => (FileOp::Open, open_access(flags, s.mode)),
        Op::Truncate => (
            FileOp::Truncate,
            Access {
                truncate: true,
                ..write
            },
        ),
        Op::Mkdir => (
            FileOp::Mkdir,
            Access {
                create: true,
                directory: true,
                ..Default::default()
            },
        ),
        Op::Rmdir => (FileOp::Unlink, directory),
        Op::Unlink if flags & AT_REMOVEDIR != 0 => (FileOp::Unlink, directory),
        Op::Unlink => (FileOp::Unlink, write),
        Op::Rename => (FileOp::Rename, write),
        Op::Link => (FileOp::Link, write),
        Op::Symlink => (FileOp::Symlink, write),
        Op::Chmod => (FileOp::Chmod, attributes),
        Op::Chown => (FileOp::Chown, attributes),
        Op::Exec => (FileOp::Exec, Access::default()),
        _ => return None,
    })
}

/// What open flags ask for; a directory is known from the flags or the
/// opened file's mode.
fn open_access(flags: u64, mode: u32) -> Access {
    let acc = flags & O_ACCMODE;
    Access {
        read: acc != O_WRONLY,
        write: acc == O_WRONLY || acc == O_RDWR,
        create: flags & O_CREAT != 0,
        truncate: flags & O_TRUNC != 0,
        append: flags & O_APPEND != 0,
        directory: flags & O_DIRECTORY != 0 || mode & S_IFMT == S_IFDIR,
        attributes: false,
    }
}

fn net_op(op: Op) -> Option<NetOp> {
    Some(match op {
        Op::Connect => NetOp::Connect,
        Op::Bind => NetOp::Bind,
        Op::Listen => NetOp::Listen,
        Op::Accept => NetOp::Accept,
        Op::Sendto => NetOp::SendTo,
        _ => return None,
    })
}

fn risky_op(sc: &Syscall) -> Option<RiskyOp> {
    Some(match sc.op {
        Op::Ptrace => RiskyOp::Ptrace,
        Op::ProcessVmReadv => RiskyOp::ProcessVmReadv,
        Op::ProcessVmWritev => RiskyOp::ProcessVmWritev,
        Op::Setid if sc.name.contains("gid") || sc.nr == syscalls::SETGROUPS => RiskyOp::SetGid,
        Op::Setid => RiskyOp::SetUid,
        Op::Capset => RiskyOp::Capset,
        Op::LoadModule => RiskyOp::InitModule,
        Op::Bpf => RiskyOp::Bpf,
        Op::Mount => RiskyOp::Mount,
        Op::IoUringSetup => RiskyOp::IoUringSetup,
        Op::FdSteal => RiskyOp::FdSteal,
        _ => return None,
    })
}

/// An exec, with what the agent concluded from the kernel's facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecObservation {
    /// The executable that really runs (the interpreter for a script), absolute.
    pub exe: String,
    pub act: ExecActivity,
}

/// What one of fds 0/1/2 was at exec, completed from /proc while the process
/// is there: the socket's family, the file's path.
pub type StdioLookup<'a> = &'a dyn Fn(u32, FdKind) -> Option<StdioKind>;

/// The file an exec runs that this server wrote recently: the exec'd file,
/// the binary the kernel ran, or the script a shell or interpreter was given.
pub fn written_file<'a>(
    filename: &'a str,
    exe: &'a str,
    argv: &'a [String],
    cwd: Option<&str>,
    written: impl Fn(&str) -> bool,
) -> Option<String> {
    let given = absolute(filename, cwd);
    if written(&given) {
        return Some(given);
    }
    if written(exe) {
        return Some(exe.to_owned());
    }
    let (program, argv) = crate::policy::baseline::unwrap_env(exe, argv);
    if runs_scripts(program) {
        let script = script_arg(argv).map(|a| absolute(a, cwd))?;
        return written(&script).then_some(script);
    }
    None
}

/// Builds the exec observation; `written` is the server's write history.
pub fn exec(
    e: &crate::kernel::decode::Exec,
    exe: String,
    written: impl Fn(&str) -> bool,
    stdio: StdioLookup<'_>,
) -> ExecObservation {
    let fileless = e.exe_nlink == Some(0) || exe.starts_with("/memfd:") || is_fd_path(&e.filename);
    let written_path = written_file(&e.filename, &exe, &e.argv, e.cwd.as_deref(), written);
    let act = ExecActivity {
        filename: e.filename.clone(),
        interp: e.interp.clone(),
        argv: e.argv.clone(),
        fileless,
        written_by_server: written_path.is_some(),
        written_path,
        stdio: [0u32, 1, 2].map(|fd| stdio(fd, e.stdio[fd as usize])),
    };
    ExecObservation { exe, act }
}

/// A path through a process's file descriptors (the file runs from an fd).
fn is_fd_path(p: &str) -> bool {
    p.starts_with("/dev/fd/") || ProcPath::parse(p, 0).is_some_and(|pp| pp.tail().starts_with("fd/"))
}

/// `path` made absolute against `base` (when relative) and normal.
pub fn absolute(path: &str, base: Option<&str>) -> String {
    match base {
        Some(b) if !path.starts_with('/') => normalize(&format!("{b}/{path}")),
        _ => normalize(path),
    }
}

/// `..` and `.` removed lexically from an absolute path.
pub fn normalize(path: &str) -> String {
    if is_normal(path) {
        return path.to_owned();
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Already normal: absolute, no empty, `.` or `..` component, no trailing
/// slash (the common case, checked without allocating).
fn is_normal(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    if b.len() == 1 {
        return true;
    }
    b[1..]
        .split(|&c| c == b'/')
        .all(|c| !c.is_empty() && c != b"." && c != b"..")
}

/// The absolute path of the first path: resolved by the kernel, or the
/// given path joined to its kernel-resolved base and normalised.
fn absolute_path(s: &Sys) -> Option<String> {
    let p = s.path.as_deref()?;
    if s.resolved {
        return Some(p.to_owned());
    }
    if p.starts_with('/') {
        return Some(normalize(p));
    }
    s.base.as_deref().map(|b| normalize(&format!("{b}/{p}")))
}

/// `ENOENT`, `EACCES`...
pub fn errno_name(ret: i64) -> Option<&'static str> {
    /// Names of errnos 0..ERRNO_NAMES, formatted once.
    const ERRNO_NAMES: usize = 256;
    static NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    if ret >= 0 {
        return None;
    }
    let names = NAMES.get_or_init(|| {
        (0..ERRNO_NAMES as i32)
            .map(|e| format!("{:?}", nix::errno::Errno::from_raw(e)))
            .collect()
    });
    let e = ret.unsigned_abs() as usize;
    Some(names.get(e).map(String::as_str).unwrap_or("UnknownErrno"))
}

fn family(a: &Addr) -> &'static str {
    match a {
        Addr::Ip { ip: IpAddr::V6(_), .. } => "inet6",
        Addr::Ip { .. } => "inet",
        Addr::Unix { .. } => "unix",
    }
}

/// The protocol of a socket of this type and address: tcp/udp for IP,
/// stream/dgram for Unix sockets.
fn proto(sock_type: u16, addr: Option<&Addr>) -> Option<&'static str> {
    let unix = matches!(addr, Some(Addr::Unix { .. }));
    match (sock_type & 0xf, unix) {
        (1, false) => Some("tcp"),
        (2, false) => Some("udp"),
        (1, true) => Some("stream"),
        (2, true) => Some("dgram"),
        (3, _) => Some("raw"),
        (5, _) => Some("seqpacket"),
        _ => None,
    }
}

/// A listen the rest of the network can reach.
fn exposed(a: &Addr) -> bool {
    match a {
        Addr::Ip { ip, .. } => !ip.is_loopback(),
        Addr::Unix { .. } => false,
    }
}

#[cfg(test)]
mod tests;
