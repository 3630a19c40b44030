//! What a syscall event means, in words: the operation, the access an open
//! asked for, the absolute path of a relative one, the errno name, the risk.

use std::net::IpAddr;

use agent_common::syscalls::*;

use crate::kernel::decode::{Addr, Sys};

/// The operation a file or net syscall performs.
pub fn op(s: &Sys) -> &'static str {
    match s.nr {
        OPEN | OPENAT | OPENAT2 | CREAT => "open",
        TRUNCATE | FTRUNCATE => "truncate",
        RENAME | RENAMEAT | RENAMEAT2 => "rename",
        UNLINK => "unlink",
        // AT_REMOVEDIR
        UNLINKAT if s.args[2] & 0x200 != 0 => "rmdir",
        UNLINKAT => "unlink",
        RMDIR => "rmdir",
        MKDIR | MKDIRAT => "mkdir",
        LINK | LINKAT => "link",
        SYMLINK | SYMLINKAT => "symlink",
        CHMOD | FCHMOD | FCHMODAT | FCHMODAT2 => "chmod",
        CHOWN | FCHOWN | LCHOWN | FCHOWNAT => "chown",
        CONNECT => "connect",
        BIND => "bind",
        LISTEN => "listen",
        ACCEPT | ACCEPT4 => "accept",
        SENDTO | SENDMSG => "sendto",
        PTRACE => "ptrace",
        PROCESS_VM_READV => "process_vm_readv",
        PROCESS_VM_WRITEV => "process_vm_writev",
        SETUID | SETGID | SETREUID | SETREGID | SETRESUID | SETRESGID | SETFSUID | SETFSGID => "setid",
        CAPSET => "capset",
        INIT_MODULE | FINIT_MODULE => "load_module",
        BPF => "bpf",
        MOUNT => "mount",
        IO_URING_SETUP => "io_uring_setup",
        _ => s.name,
    }
}

const O_ACCMODE: u64 = 3;
const O_WRONLY: u64 = 1;
const O_RDWR: u64 = 2;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;
const O_APPEND: u64 = 0o2000;
const O_DIRECTORY: u64 = 0o200000;
const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;

/// The access an open asked for (or a path operation implies).
pub fn access(s: &Sys) -> Vec<&'static str> {
    let flags = match s.nr {
        OPEN => s.args[1],
        OPENAT | OPENAT2 => s.args[2],
        CREAT => O_CREAT | O_WRONLY | O_TRUNC,
        TRUNCATE | FTRUNCATE => return vec!["write", "truncate"],
        MKDIR | MKDIRAT => return vec!["create", "directory"],
        RMDIR => return vec!["write", "directory"],
        RENAME | RENAMEAT | RENAMEAT2 | UNLINK | UNLINKAT | LINK | LINKAT | SYMLINK | SYMLINKAT => {
            return vec!["write"];
        }
        CHMOD | FCHMOD | FCHMODAT | FCHMODAT2 | CHOWN | FCHOWN | LCHOWN | FCHOWNAT => return vec!["attributes"],
        _ => return Vec::new(),
    };
    let mut v = Vec::new();
    match flags & O_ACCMODE {
        O_WRONLY => v.push("write"),
        O_RDWR => v.extend(["read", "write"]),
        _ => v.push("read"),
    }
    if flags & O_CREAT != 0 {
        v.push("create");
    }
    if flags & O_TRUNC != 0 {
        v.push("truncate");
    }
    if flags & O_APPEND != 0 {
        v.push("append");
    }
    if flags & O_DIRECTORY != 0 || s.mode & S_IFMT == S_IFDIR {
        v.push("directory");
    }
    v
}

/// Whether the access modifies the file system.
pub fn writes(access: &[&str]) -> bool {
    access
        .iter()
        .any(|a| matches!(*a, "write" | "create" | "truncate" | "append"))
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
pub fn absolute_path(s: &Sys) -> Option<String> {
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

pub fn family(a: &Addr, v6: bool) -> &'static str {
    match a {
        Addr::Ip { .. } if v6 => "inet6",
        Addr::Ip { .. } => "inet",
        Addr::Unix { .. } => "unix",
    }
}

/// The protocol of a socket of this type and address: tcp/udp for IP,
/// stream/dgram for Unix sockets.
pub fn proto(sock_type: u16, addr: Option<&Addr>) -> Option<&'static str> {
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
pub fn exposed(a: &Addr) -> bool {
    match a {
        Addr::Ip { ip, .. } => !ip.is_loopback(),
        Addr::Unix { .. } => false,
    }
}

pub fn is_v6(a: &Addr) -> bool {
    matches!(a, Addr::Ip { ip: IpAddr::V6(_), .. })
}

/// For a risky op: its category, the pid it targets and a note.
pub fn risk(s: &Sys) -> (&'static str, Option<u32>, Option<&'static str>) {
    match s.nr {
        PTRACE => ("ptrace", Some(s.args[1] as u32), None),
        PROCESS_VM_READV | PROCESS_VM_WRITEV => ("process_memory", Some(s.args[0] as u32), None),
        SETUID | SETGID | SETREUID | SETREGID | SETRESUID | SETRESGID | SETFSUID | SETFSGID | CAPSET => {
            ("credentials", None, None)
        }
        INIT_MODULE | FINIT_MODULE => ("kernel_module", None, None),
        BPF => ("bpf", None, None),
        MOUNT => ("mount", None, None),
        IO_URING_SETUP => (
            "io_uring",
            None,
            Some(
                "io_uring submits I/O without syscalls: file and network operations through it bypass syscall tracing",
            ),
        ),
        _ => ("other", None, None),
    }
}

/// `/proc/PID/{mem,environ,maps}` of another process: the pid and the file.
pub fn other_proc_access(path: &str, own_pid: u32) -> Option<(u32, &str)> {
    let rest = path.strip_prefix("/proc/")?;
    let (pid, file) = rest.split_once('/')?;
    let pid: u32 = pid.parse().ok()?;
    let file = match file {
        "mem" | "environ" | "maps" => file,
        _ => return None,
    };
    (pid != own_pid).then_some((pid, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize("/home/u/work/../.ssh/./id_rsa"), "/home/u/.ssh/id_rsa");
        assert_eq!(normalize("/../.."), "/");
        for (given, normal) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a//b", "/a/b"),
            ("/a/b/", "/a/b"),
            ("/a/.", "/a"),
            ("/a/..", "/"),
            ("/a/.b/..c", "/a/.b/..c"),
            ("a/b", "/a/b"),
        ] {
            assert_eq!(normalize(given), normal, "{given}");
        }
    }

    #[test]
    fn other_proc_files() {
        assert_eq!(other_proc_access("/proc/1/environ", 42), Some((1, "environ")));
        assert_eq!(other_proc_access("/proc/42/mem", 42), None);
        assert_eq!(other_proc_access("/proc/1/status", 42), None);
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(-2), Some("ENOENT"));
        assert_eq!(errno_name(-111), Some("ECONNREFUSED"));
        assert_eq!(errno_name(-100_000), Some("UnknownErrno"));
        assert_eq!(errno_name(3), None);
    }
}
