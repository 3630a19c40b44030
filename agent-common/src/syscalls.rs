//! The syscalls the probes follow, in one table both sides read: number
//! (x86_64; the ABI is stable per architecture), name, the family of probe
//! that handles it, the operation it reports, and where its arguments are.
//!
//! A new syscall is one line here (and out of `coverage::NOT_FOLLOWED`,
//! which decides every other number), plus its handling in the probe family
//! when it needs new behaviour, plus its meaning in userspace.

pub mod coverage;
pub mod ia32;

/// Which probe family handles a followed syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Reads and writes, captured when they move the bytes of a server's stdio.
    Stdio,
    /// Descriptor duplication (dup, dup2, dup3, fcntl): followed so the stdio
    /// capture finds the wire on whatever descriptor a server moved it to.
    /// Emits no event.
    Dup,
    File,
    /// Sockets; sendto/sendmsg/recvfrom/recvmsg also carry DNS messages.
    Net,
    Risky,
}

/// The operation a followed syscall reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Open,
    Truncate,
    Rename,
    /// unlink, and unlinkat without `AT_REMOVEDIR` (userspace decides: with
    /// the flag it is an rmdir).
    Unlink,
    Rmdir,
    Mkdir,
    Link,
    Symlink,
    Chmod,
    Chown,
    Connect,
    Bind,
    Listen,
    Accept,
    /// sendto, sendmsg and sendmmsg.
    Sendto,
    Recvfrom,
    Recvmsg,
    Ptrace,
    ProcessVmReadv,
    ProcessVmWritev,
    /// Any set*id call, and setgroups.
    Setid,
    Capset,
    /// init_module and finit_module.
    LoadModule,
    Bpf,
    Mount,
    IoUringSetup,
    /// pidfd_getfd: a descriptor taken from another process.
    FdSteal,
    /// read and readv (stdio).
    Read,
    /// write and writev (stdio).
    Write,
    /// dup, dup2, dup3, fcntl(F_DUPFD*).
    Dup,
    /// execve and execveat: reported only when refused (EACCES, EPERM: a
    /// sandbox's answer); a successful exec is the exec tracepoint's.
    Exec,
}

impl Op {
    /// Every operation, for userspace tables.
    pub const ALL: [Op; 31] = [
        Op::Open,
        Op::Truncate,
        Op::Rename,
        Op::Unlink,
        Op::Rmdir,
        Op::Mkdir,
        Op::Link,
        Op::Symlink,
        Op::Chmod,
        Op::Chown,
        Op::Connect,
        Op::Bind,
        Op::Listen,
        Op::Accept,
        Op::Sendto,
        Op::Recvfrom,
        Op::Recvmsg,
        Op::Ptrace,
        Op::ProcessVmReadv,
        Op::ProcessVmWritev,
        Op::Setid,
        Op::Capset,
        Op::LoadModule,
        Op::Bpf,
        Op::Mount,
        Op::IoUringSetup,
        Op::FdSteal,
        Op::Read,
        Op::Write,
        Op::Dup,
        Op::Exec,
    ];

    /// The operation's name in event lines and policies.
    pub const fn name(self) -> &'static str {
        match self {
            Op::Open => "open",
            Op::Truncate => "truncate",
            Op::Rename => "rename",
            Op::Unlink => "unlink",
            Op::Rmdir => "rmdir",
            Op::Mkdir => "mkdir",
            Op::Link => "link",
            Op::Symlink => "symlink",
            Op::Chmod => "chmod",
            Op::Chown => "chown",
            Op::Connect => "connect",
            Op::Bind => "bind",
            Op::Listen => "listen",
            Op::Accept => "accept",
            Op::Sendto => "sendto",
            Op::Recvfrom => "recvfrom",
            Op::Recvmsg => "recvmsg",
            Op::Ptrace => "ptrace",
            Op::ProcessVmReadv => "process_vm_readv",
            Op::ProcessVmWritev => "process_vm_writev",
            Op::Setid => "setid",
            Op::Capset => "capset",
            Op::LoadModule => "load_module",
            Op::Bpf => "bpf",
            Op::Mount => "mount",
            Op::IoUringSetup => "io_uring_setup",
            Op::FdSteal => "fd_steal",
            Op::Read => "read",
            Op::Write => "write",
            Op::Dup => "dup",
            Op::Exec => "exec",
        }
    }
}

/// One followed syscall. Argument fields are indexes (0..6) into the
/// syscall's arguments; `None`: the syscall has no such argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syscall {
    pub nr: u32,
    pub name: &'static str,
    pub family: Family,
    pub op: Op,
    /// The descriptor operated on (a socket, a file, a stdio channel).
    pub fd: Option<u8>,
    /// The directory fd a relative `path` is relative to; `None` with a
    /// `path`: the working directory.
    pub dirfd: Option<u8>,
    /// The first path (for symlink: the link created).
    pub path: Option<u8>,
    /// The second path (rename and link destination, symlink target text,
    /// mount source).
    pub path2: Option<u8>,
    /// Flags: open flags, `AT_*` flags (unlinkat), the fcntl command.
    pub flags: Option<u8>,
    /// openat2's `struct open_how *` (flags in its first word).
    pub open_how: Option<u8>,
    /// A mode (open with O_CREAT, mkdir, chmod).
    pub mode: Option<u8>,
    /// A `struct sockaddr *` the caller passes (connect, bind, sendto) or
    /// receives (recvfrom, accept).
    pub sockaddr: Option<u8>,
    /// The sockaddr's length (a value for connect/bind/sendto, a pointer
    /// for recvfrom/accept).
    pub addrlen: Option<u8>,
    /// A `struct msghdr *` (sendmsg, recvmsg).
    pub msghdr: Option<u8>,
    /// A data buffer, or the iovec array of readv/writev.
    pub buf: Option<u8>,
    /// The byte count of `buf`, or the iovec count.
    pub count: Option<u8>,
    /// The process the call targets (ptrace, process_vm_*).
    pub pid: Option<u8>,
    /// The return value is a new descriptor (open, accept, dup): the
    /// kernel object behind it is the truth about what the call did.
    pub ret_fd: bool,
}

/// No arguments known; entries fill in theirs.
const NONE: Syscall = Syscall {
    nr: 0,
    name: "",
    family: Family::Risky,
    op: Op::Bpf,
    fd: None,
    dirfd: None,
    path: None,
    path2: None,
    flags: None,
    open_how: None,
    mode: None,
    sockaddr: None,
    addrlen: None,
    msghdr: None,
    buf: None,
    count: None,
    pid: None,
    ret_fd: false,
};

/// Generates the number constants, [`ALL`], [`lookup`] and [`family`] from
/// one list of entries, so they cannot disagree.
macro_rules! table {
    ($($konst:ident = $nr:literal, $name:literal, $fam:ident, $op:ident { $($field:ident: $val:expr),* $(,)? };)*) => {
        $(pub const $konst: u32 = $nr;)*

        /// Every followed syscall.
        pub const ALL: &[Syscall] = &[$(Syscall {
            nr: $nr,
            name: $name,
            family: Family::$fam,
            op: Op::$op,
            $($field: $val,)*
            ..NONE
        }),*];

        /// The followed syscall `nr`; `None` for every other syscall.
        #[inline(always)]
        pub const fn lookup(nr: u32) -> Option<&'static Syscall> {
            match nr {
                $($nr => {
                    const S: Syscall = Syscall {
                        nr: $nr,
                        name: $name,
                        family: Family::$fam,
                        op: Op::$op,
                        $($field: $val,)*
                        ..NONE
                    };
                    Some(&S)
                })*
                _ => None,
            }
        }

        /// The family of a followed syscall; `None` for every other syscall
        /// (which then costs the probes no map lookup at all). A match on
        /// the number alone: the hot path of every syscall on the host.
        #[inline(always)]
        pub const fn family(nr: u32) -> Option<Family> {
            match nr {
                $($nr => Some(Family::$fam),)*
                _ => None,
            }
        }

        /// (constant name, number) of every entry, for the table's own test.
        #[cfg(test)]
        const CONSTS: &[(&str, u32)] = &[$((stringify!($konst), $nr)),*];
    };
}

table! {
    READ = 0, "read", Stdio, Read { fd: Some(0), buf: Some(1), count: Some(2) };
    WRITE = 1, "write", Stdio, Write { fd: Some(0), buf: Some(1), count: Some(2) };
    READV = 19, "readv", Stdio, Read { fd: Some(0), buf: Some(1), count: Some(2) };
    WRITEV = 20, "writev", Stdio, Write { fd: Some(0), buf: Some(1), count: Some(2) };

    DUP = 32, "dup", Dup, Dup { fd: Some(0), ret_fd: true };
    DUP2 = 33, "dup2", Dup, Dup { fd: Some(0), ret_fd: true };
    DUP3 = 292, "dup3", Dup, Dup { fd: Some(0), flags: Some(2), ret_fd: true };
    FCNTL = 72, "fcntl", Dup, Dup { fd: Some(0), flags: Some(1), ret_fd: true };

    OPEN = 2, "open", File, Open { path: Some(0), flags: Some(1), mode: Some(2), ret_fd: true };
    CREAT = 85, "creat", File, Open { path: Some(0), mode: Some(1), ret_fd: true };
    OPENAT = 257, "openat", File, Open { dirfd: Some(0), path: Some(1), flags: Some(2), mode: Some(3), ret_fd: true };
    OPENAT2 = 437, "openat2", File, Open { dirfd: Some(0), path: Some(1), open_how: Some(2), ret_fd: true };
    // No path: the opened file is resolved from the descriptor returned (a
    // failed one reports the mount the handle was looked up on).
    OPEN_BY_HANDLE_AT = 304, "open_by_handle_at", File, Open { fd: Some(0), flags: Some(2), ret_fd: true };
    TRUNCATE = 76, "truncate", File, Truncate { path: Some(0) };
    FTRUNCATE = 77, "ftruncate", File, Truncate { fd: Some(0) };
    RENAME = 82, "rename", File, Rename { path: Some(0), path2: Some(1) };
    RENAMEAT = 264, "renameat", File, Rename { dirfd: Some(0), path: Some(1), path2: Some(3) };
    RENAMEAT2 = 316, "renameat2", File, Rename { dirfd: Some(0), path: Some(1), path2: Some(3), flags: Some(4) };
    MKDIR = 83, "mkdir", File, Mkdir { path: Some(0), mode: Some(1) };
    MKDIRAT = 258, "mkdirat", File, Mkdir { dirfd: Some(0), path: Some(1), mode: Some(2) };
    RMDIR = 84, "rmdir", File, Rmdir { path: Some(0) };
    LINK = 86, "link", File, Link { path: Some(0), path2: Some(1) };
    LINKAT = 265, "linkat", File, Link { dirfd: Some(0), path: Some(1), path2: Some(3), flags: Some(4) };
    UNLINK = 87, "unlink", File, Unlink { path: Some(0) };
    UNLINKAT = 263, "unlinkat", File, Unlink { dirfd: Some(0), path: Some(1), flags: Some(2) };
    // The link created is the path; its target text the second path.
    SYMLINK = 88, "symlink", File, Symlink { path: Some(1), path2: Some(0) };
    SYMLINKAT = 266, "symlinkat", File, Symlink { dirfd: Some(1), path: Some(2), path2: Some(0) };
    CHMOD = 90, "chmod", File, Chmod { path: Some(0), mode: Some(1) };
    FCHMOD = 91, "fchmod", File, Chmod { fd: Some(0), mode: Some(1) };
    FCHMODAT = 268, "fchmodat", File, Chmod { dirfd: Some(0), path: Some(1), mode: Some(2) };
    FCHMODAT2 = 452, "fchmodat2", File, Chmod { dirfd: Some(0), path: Some(1), mode: Some(2), flags: Some(3) };
    // A refused exec never becomes a process: the failing syscall is all
    // there is of it (the probe reports EACCES and EPERM only).
    EXECVE = 59, "execve", File, Exec { path: Some(0) };
    EXECVEAT = 322, "execveat", File, Exec { dirfd: Some(0), path: Some(1), flags: Some(4) };
    CHOWN = 92, "chown", File, Chown { path: Some(0) };
    FCHOWN = 93, "fchown", File, Chown { fd: Some(0) };
    LCHOWN = 94, "lchown", File, Chown { path: Some(0) };
    FCHOWNAT = 260, "fchownat", File, Chown { dirfd: Some(0), path: Some(1), flags: Some(4) };

    CONNECT = 42, "connect", Net, Connect { fd: Some(0), sockaddr: Some(1), addrlen: Some(2) };
    ACCEPT = 43, "accept", Net, Accept { fd: Some(0), sockaddr: Some(1), addrlen: Some(2), ret_fd: true };
    ACCEPT4 = 288, "accept4", Net, Accept { fd: Some(0), sockaddr: Some(1), addrlen: Some(2), flags: Some(3), ret_fd: true };
    SENDTO = 44, "sendto", Net, Sendto { fd: Some(0), buf: Some(1), count: Some(2), sockaddr: Some(4), addrlen: Some(5) };
    RECVFROM = 45, "recvfrom", Net, Recvfrom { fd: Some(0), buf: Some(1), count: Some(2), sockaddr: Some(4), addrlen: Some(5) };
    SENDMSG = 46, "sendmsg", Net, Sendto { fd: Some(0), msghdr: Some(1) };
    // A `struct mmsghdr` starts with its `struct msghdr`: the first message's
    // destination and buffer are read like sendmsg's.
    SENDMMSG = 307, "sendmmsg", Net, Sendto { fd: Some(0), msghdr: Some(1) };
    RECVMSG = 47, "recvmsg", Net, Recvmsg { fd: Some(0), msghdr: Some(1) };
    // Like sendmmsg: the first message's sender and buffer are read like
    // recvmsg's, its length from the first `mmsghdr.msg_len`.
    RECVMMSG = 299, "recvmmsg", Net, Recvmsg { fd: Some(0), msghdr: Some(1) };
    BIND = 49, "bind", Net, Bind { fd: Some(0), sockaddr: Some(1), addrlen: Some(2) };
    LISTEN = 50, "listen", Net, Listen { fd: Some(0) };

    PTRACE = 101, "ptrace", Risky, Ptrace { pid: Some(1) };
    PROCESS_VM_READV = 310, "process_vm_readv", Risky, ProcessVmReadv { pid: Some(0) };
    PROCESS_VM_WRITEV = 311, "process_vm_writev", Risky, ProcessVmWritev { pid: Some(0) };
    SETUID = 105, "setuid", Risky, Setid {};
    SETGID = 106, "setgid", Risky, Setid {};
    SETREUID = 113, "setreuid", Risky, Setid {};
    SETREGID = 114, "setregid", Risky, Setid {};
    SETRESUID = 117, "setresuid", Risky, Setid {};
    SETRESGID = 119, "setresgid", Risky, Setid {};
    SETFSUID = 122, "setfsuid", Risky, Setid {};
    SETFSGID = 123, "setfsgid", Risky, Setid {};
    // Supplementary groups: a credential change like the set*gid calls.
    SETGROUPS = 116, "setgroups", Risky, Setid {};
    CAPSET = 126, "capset", Risky, Capset {};
    // mount(source, target, ...): the target is what is mounted over.
    MOUNT = 165, "mount", Risky, Mount { path: Some(1), path2: Some(0) };
    INIT_MODULE = 175, "init_module", Risky, LoadModule {};
    FINIT_MODULE = 313, "finit_module", Risky, LoadModule { fd: Some(0) };
    BPF = 321, "bpf", Risky, Bpf {};
    IO_URING_SETUP = 425, "io_uring_setup", Risky, IoUringSetup {};
    // pidfd_getfd(pidfd, targetfd, flags): the new descriptor is the stolen
    // file; the pidfd names the process it was taken from.
    PIDFD_GETFD = 438, "pidfd_getfd", Risky, FdSteal { fd: Some(0), flags: Some(2), ret_fd: true };
}

/// Name of a followed syscall, for events ("unknown" for any other).
pub const fn name(nr: u32) -> &'static str {
    match lookup(nr) {
        Some(s) => s.name,
        None => "unknown",
    }
}

/// Argument `i` of `args`; 0 when the syscall has no such argument. A
/// `match` on the index, not an indexed load: the verifier bounds it
/// without a check on the stack offset.
#[inline(always)]
pub const fn arg(args: &[u64; 6], i: Option<u8>) -> u64 {
    match i {
        Some(0) => args[0],
        Some(1) => args[1],
        Some(2) => args[2],
        Some(3) => args[3],
        Some(4) => args[4],
        Some(5) => args[5],
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{collections::HashSet, vec::Vec};

    use super::*;

    #[test]
    fn numbers_are_unique_and_constants_match_names() {
        let mut seen = HashSet::new();
        for s in ALL {
            assert!(seen.insert(s.nr), "syscall number {} twice", s.nr);
        }
        assert_eq!(CONSTS.len(), ALL.len());
        for (&(konst, nr), s) in CONSTS.iter().zip(ALL) {
            assert_eq!(nr, s.nr);
            assert_eq!(konst.to_ascii_lowercase(), s.name, "constant {konst} names {}", s.name);
        }
    }

    #[test]
    fn lookup_and_family_agree_with_the_table() {
        for s in ALL {
            assert_eq!(lookup(s.nr), Some(s));
            assert_eq!(family(s.nr), Some(s.family));
            assert_eq!(name(s.nr), s.name);
        }
        assert_eq!(lookup(39), None, "getpid is not followed");
        assert_eq!(family(39), None);
        assert_eq!(name(39), "unknown");
    }

    #[test]
    fn every_op_is_named_once_and_used() {
        let names: HashSet<&str> = Op::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(names.len(), Op::ALL.len(), "two ops share a name");
        for op in Op::ALL {
            let used = ALL.iter().any(|s| s.op == op);
            assert!(used, "op {op:?} has no syscall");
        }
    }

    #[test]
    fn argument_indexes_are_in_range_and_distinct() {
        for s in ALL {
            let idx: Vec<u8> = [
                s.fd, s.dirfd, s.path, s.path2, s.flags, s.open_how, s.mode, s.sockaddr, s.addrlen, s.msghdr, s.buf,
                s.count, s.pid,
            ]
            .into_iter()
            .flatten()
            .collect();
            assert!(idx.iter().all(|&i| i < 6), "{}: index out of range", s.name);
            let distinct: HashSet<u8> = idx.iter().copied().collect();
            assert_eq!(distinct.len(), idx.len(), "{}: two arguments at one index", s.name);
        }
        // Each family has what its probe reads.
        for s in ALL {
            match s.family {
                Family::File => assert!(s.path.is_some() || s.fd.is_some(), "{}", s.name),
                Family::Stdio | Family::Dup => assert!(s.fd.is_some(), "{}", s.name),
                Family::Net => assert!(s.fd.is_some(), "{}", s.name),
                Family::Risky => {}
            }
            if s.dirfd.is_some() {
                assert!(s.path.is_some(), "{}: a dirfd without a path", s.name);
            }
        }
    }

    #[test]
    fn arg_picks_by_index() {
        let a = [10, 11, 12, 13, 14, 15];
        let got: Vec<u64> = (0..6).map(|i| arg(&a, Some(i))).collect();
        assert_eq!(got, [10, 11, 12, 13, 14, 15]);
        assert_eq!(arg(&a, None), 0);
        assert_eq!(arg(&a, Some(6)), 0);
    }
}
