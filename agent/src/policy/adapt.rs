//! Kernel events (decode.rs, interpreted by sysview.rs) to policy
//! activities. What the kernel leaves open (which kind of socket a shell's
//! stdio is) is completed from /proc while the process is still there.

use agent_common::EventKind;

use super::activity::{
    Activity, ExecActivity, FileActivity, FileOp, NetActivity, NetOp, ProcPath, Proto, RiskyActivity, RiskyOp,
    StdioKind,
};
use crate::{
    kernel::decode::{Addr, Exec, FdKind, Sys},
    pipeline::sysview,
};

/// An exec, with what the agent concluded from the kernel's facts: run from
/// memory (`fileless`), a file the server wrote shortly before (`written`).
pub fn exec(e: &Exec, fileless: bool, written: bool) -> ExecActivity {
    let pid = e.header.pid;
    let fileless = fileless || is_fd_path(&e.filename);
    ExecActivity {
        filename: e.filename.clone(),
        interp: e.interp.clone(),
        argv: e.argv.clone(),
        fileless,
        written_by_server: written,
        // The pipeline's history matches the exec'd file (a script given to a shell: not yet).
        written_path: written.then(|| e.filename.clone()),
        stdio: [0usize, 1, 2].map(|fd| stdio(pid, fd as u32, e.stdio[fd])),
    }
}

/// A file, net or risky syscall; DNS messages judge nothing themselves (they
/// name the addresses connects go to: `hostname`). An open of another
/// process's memory, environment or maps is a file access and a risky one.
pub fn sys(s: &Sys, hostname: Option<&str>) -> Vec<Activity> {
    match s.header.kind {
        EventKind::File => file(s),
        EventKind::Net => net(s, hostname).map(Activity::Net).into_iter().collect(),
        EventKind::Risky => risky(s).map(Activity::Risky).into_iter().collect(),
        _ => Vec::new(),
    }
}

fn file(s: &Sys) -> Vec<Activity> {
    let Some(path) = sysview::absolute_path(s) else {
        return Vec::new();
    };
    let name = sysview::op(s);
    let op = match name {
        "open" => FileOp::Open,
        "truncate" => FileOp::Truncate,
        "rename" => FileOp::Rename,
        "unlink" | "rmdir" => FileOp::Unlink,
        "mkdir" => FileOp::Mkdir,
        "link" => FileOp::Link,
        "symlink" => FileOp::Symlink,
        "chmod" => FileOp::Chmod,
        "chown" => FileOp::Chown,
        _ => return Vec::new(),
    };
    // The new name of a rename or link (a symlink's second path is its target text).
    let path2 = matches!(op, FileOp::Rename | FileOp::Link)
        .then(|| {
            s.path2.as_deref().map(|p2| match &s.base {
                Some(b) if !p2.starts_with('/') => sysview::normalize(&format!("{b}/{p2}")),
                _ => sysview::normalize(p2),
            })
        })
        .flatten();
    // A failed access touched nothing: only probing for credentials matters
    // (most failed opens are library and module search paths).
    if s.ret < 0 && super::catalog::classify(&path).is_none() {
        return Vec::new();
    }
    let access = sysview::access(s);
    let has = |a: &str| access.contains(&a);
    let mut out = Vec::new();
    let proc_path = ProcPath::parse(&path, s.header.pid);
    if let Some(p @ ProcPath::Other { pid, .. }) = &proc_path
        && let Some(op) = p.sensitive_file()
    {
        out.push(Activity::Risky(RiskyActivity {
            op,
            target_pid: Some(*pid),
        }));
    }
    out.push(Activity::File(FileActivity {
        op,
        path,
        path2,
        read: has("read"),
        write: has("write"),
        create: has("create"),
        truncate: has("truncate"),
        append: has("append"),
        directory: has("directory"),
        result: s.ret,
        path_truncated: s.path_truncated,
        proc_path,
    }));
    out
}

fn net(s: &Sys, hostname: Option<&str>) -> Option<NetActivity> {
    let op = match sysview::op(s) {
        "connect" => NetOp::Connect,
        "bind" => NetOp::Bind,
        "listen" => NetOp::Listen,
        "accept" => NetOp::Accept,
        "sendto" => NetOp::SendTo,
        _ => return None,
    };
    let proto = match sysview::proto(s.sock_type, s.addr.as_ref()) {
        Some("tcp") => Proto::Tcp,
        Some("udp") => Proto::Udp,
        _ => Proto::Other,
    };
    let (addr, port, unix_path) = match &s.addr {
        Some(Addr::Ip { ip, port, .. }) => (Some(*ip), *port, None),
        Some(Addr::Unix { path, .. }) => (None, 0, Some(path.clone())),
        // A sendto on a connected socket names no destination: the connect did.
        None => return None,
    };
    Some(NetActivity {
        op,
        proto,
        addr,
        port,
        unix_path,
        hostname: hostname.map(str::to_owned),
        exposed: op == NetOp::Listen && s.addr.as_ref().is_some_and(sysview::exposed),
        result: s.ret,
    })
}

fn risky(s: &Sys) -> Option<RiskyActivity> {
    let op = match (sysview::op(s), s.name) {
        ("ptrace", _) => RiskyOp::Ptrace,
        ("process_vm_readv", _) => RiskyOp::ProcessVmReadv,
        ("process_vm_writev", _) => RiskyOp::ProcessVmWritev,
        ("setid", n) if n.contains("gid") => RiskyOp::SetGid,
        ("setid", _) => RiskyOp::SetUid,
        ("capset", _) => RiskyOp::Capset,
        ("load_module", _) => RiskyOp::InitModule,
        ("bpf", _) => RiskyOp::Bpf,
        ("mount", _) => RiskyOp::Mount,
        ("io_uring_setup", _) => RiskyOp::IoUringSetup,
        _ => return None,
    };
    Some(RiskyActivity {
        op,
        target_pid: sysview::risk(s).1,
    })
}

/// The process's working directory.
pub fn cwd(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/cwd"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

fn is_fd_path(p: &str) -> bool {
    p.starts_with("/dev/fd/") || ProcPath::parse(p, 0).is_some_and(|pp| pp.tail().starts_with("fd/"))
}

/// What one of fds 0/1/2 was at exec: the kernel's kind, with the socket's
/// family and the file's path from /proc. A socket that cannot be looked up
/// any more (the process is gone) counts as local: a reverse shell lives on.
fn stdio(pid: u32, fd: u32, kind: FdKind) -> Option<StdioKind> {
    let link = || {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .ok()
            .map(|l| l.to_string_lossy().into_owned())
    };
    Some(match kind {
        FdKind::None => return None,
        FdKind::Pipe => StdioKind::Pipe,
        FdKind::Tty => StdioKind::Tty,
        FdKind::Other => StdioKind::Other,
        FdKind::File => StdioKind::File(link().unwrap_or_default()),
        FdKind::Socket => {
            let inet = link().is_some_and(|l| {
                l.strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .is_some_and(|inode| is_inet_socket(pid, inode))
            });
            if inet {
                StdioKind::Socket
            } else {
                StdioKind::LocalSocket
            }
        }
    })
}

/// Whether a socket is a TCP or UDP one. Unix socketpairs are ordinary stdio:
/// libuv (so every Node-based MCP host) gives children socketpairs, not pipes.
fn is_inet_socket(pid: u32, inode: &str) -> bool {
    ["tcp", "tcp6", "udp", "udp6"].iter().any(|t| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{t}"))
            .is_ok_and(|text| text.lines().skip(1).any(|l| l.split_whitespace().nth(9) == Some(inode)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_paths_are_fileless() {
        assert!(is_fd_path("/dev/fd/3"));
        assert!(is_fd_path("/proc/self/fd/7"));
        assert!(is_fd_path("/proc/123/fd/7"));
        assert!(is_fd_path("/proc/thread-self/fd/7"));
        assert!(is_fd_path("/proc/123/task/124/fd/7"));
        assert!(!is_fd_path("/proc/123/exe"));
        assert!(!is_fd_path("/usr/bin/fd"));
    }

    #[test]
    fn tcp_sockets_are_told_from_socketpairs() {
        use std::os::{fd::AsRawFd, unix::net::UnixStream};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let me = std::process::id();
        assert_eq!(stdio(me, c.as_raw_fd() as u32, FdKind::Socket), Some(StdioKind::Socket));
        assert_eq!(
            stdio(me, a.as_raw_fd() as u32, FdKind::Socket),
            Some(StdioKind::LocalSocket)
        );
        assert_eq!(
            stdio(me, 999, FdKind::Socket),
            Some(StdioKind::LocalSocket),
            "gone: local"
        );
        assert_eq!(stdio(me, 0, FdKind::None), None);
    }
}
