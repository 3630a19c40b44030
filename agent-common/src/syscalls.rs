//! The syscalls the probes follow (x86_64 numbers; the ABI is stable per
//! architecture), grouped by the event family they feed.

pub const READ: u32 = 0;
pub const WRITE: u32 = 1;
pub const OPEN: u32 = 2;
pub const READV: u32 = 19;
pub const DUP: u32 = 32;
pub const DUP2: u32 = 33;
pub const WRITEV: u32 = 20;
pub const CONNECT: u32 = 42;
pub const ACCEPT: u32 = 43;
pub const SENDTO: u32 = 44;
pub const RECVFROM: u32 = 45;
pub const SENDMSG: u32 = 46;
pub const RECVMSG: u32 = 47;
pub const BIND: u32 = 49;
pub const LISTEN: u32 = 50;
pub const FCNTL: u32 = 72;
pub const TRUNCATE: u32 = 76;
pub const FTRUNCATE: u32 = 77;
pub const RENAME: u32 = 82;
pub const MKDIR: u32 = 83;
pub const RMDIR: u32 = 84;
pub const CREAT: u32 = 85;
pub const LINK: u32 = 86;
pub const UNLINK: u32 = 87;
pub const SYMLINK: u32 = 88;
pub const CHMOD: u32 = 90;
pub const FCHMOD: u32 = 91;
pub const CHOWN: u32 = 92;
pub const FCHOWN: u32 = 93;
pub const LCHOWN: u32 = 94;
pub const PTRACE: u32 = 101;
pub const SETUID: u32 = 105;
pub const SETGID: u32 = 106;
pub const SETREUID: u32 = 113;
pub const SETREGID: u32 = 114;
pub const SETRESUID: u32 = 117;
pub const SETRESGID: u32 = 119;
pub const SETFSUID: u32 = 122;
pub const SETFSGID: u32 = 123;
pub const CAPSET: u32 = 126;
pub const MOUNT: u32 = 165;
pub const INIT_MODULE: u32 = 175;
pub const OPENAT: u32 = 257;
pub const MKDIRAT: u32 = 258;
pub const FCHOWNAT: u32 = 260;
pub const UNLINKAT: u32 = 263;
pub const RENAMEAT: u32 = 264;
pub const LINKAT: u32 = 265;
pub const SYMLINKAT: u32 = 266;
pub const FCHMODAT: u32 = 268;
pub const ACCEPT4: u32 = 288;
pub const DUP3: u32 = 292;
pub const PROCESS_VM_READV: u32 = 310;
pub const PROCESS_VM_WRITEV: u32 = 311;
pub const FINIT_MODULE: u32 = 313;
pub const RENAMEAT2: u32 = 316;
pub const BPF: u32 = 321;
pub const IO_URING_SETUP: u32 = 425;
pub const OPENAT2: u32 = 437;
pub const FCHMODAT2: u32 = 452;

/// `AT_FDCWD`: a path relative to the working directory.
pub const AT_FDCWD: i64 = -100;
/// `fcntl` commands that duplicate a descriptor.
pub const F_DUPFD: u64 = 0;
pub const F_DUPFD_CLOEXEC: u64 = 1030;

/// What the probes do with a followed syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Reads and writes, captured when they move the bytes of a server's stdio.
    Stdio,
    /// Descriptor duplication (dup, dup2, dup3, fcntl): followed so the stdio
    /// capture finds the wire on whatever descriptor a server moved it to.
    /// Emits no event.
    Dup,
    File,
    Net,
    Risky,
}

/// The family of a followed syscall; None for every other syscall (which
/// then costs no map lookup at all).
#[inline(always)]
pub const fn family(nr: u32) -> Option<Family> {
    use Family::*;
    match nr {
        READ | WRITE | READV | WRITEV => Some(Stdio),
        DUP | DUP2 | DUP3 | FCNTL => Some(Dup),
        OPEN | OPENAT | OPENAT2 | CREAT | TRUNCATE | FTRUNCATE | RENAME | RENAMEAT | RENAMEAT2 | MKDIR | MKDIRAT
        | RMDIR | LINK | LINKAT | SYMLINK | SYMLINKAT | UNLINK | UNLINKAT | CHMOD | FCHMOD | FCHMODAT | FCHMODAT2
        | CHOWN | FCHOWN | LCHOWN | FCHOWNAT => Some(File),
        CONNECT | ACCEPT | ACCEPT4 | SENDTO | RECVFROM | SENDMSG | RECVMSG | BIND | LISTEN => Some(Net),
        PTRACE | SETUID | SETGID | SETREUID | SETREGID | SETRESUID | SETRESGID | SETFSUID | SETFSGID | CAPSET
        | MOUNT | INIT_MODULE | FINIT_MODULE | PROCESS_VM_READV | PROCESS_VM_WRITEV | BPF | IO_URING_SETUP => {
            Some(Risky)
        }
        _ => None,
    }
}

/// Name of a followed syscall, for events.
pub const fn name(nr: u32) -> &'static str {
    match nr {
        READ => "read",
        WRITE => "write",
        READV => "readv",
        WRITEV => "writev",
        DUP => "dup",
        DUP2 => "dup2",
        DUP3 => "dup3",
        FCNTL => "fcntl",
        OPEN => "open",
        OPENAT => "openat",
        OPENAT2 => "openat2",
        CREAT => "creat",
        TRUNCATE => "truncate",
        FTRUNCATE => "ftruncate",
        RENAME => "rename",
        RENAMEAT => "renameat",
        RENAMEAT2 => "renameat2",
        MKDIR => "mkdir",
        MKDIRAT => "mkdirat",
        RMDIR => "rmdir",
        LINK => "link",
        LINKAT => "linkat",
        SYMLINK => "symlink",
        SYMLINKAT => "symlinkat",
        UNLINK => "unlink",
        UNLINKAT => "unlinkat",
        CHMOD => "chmod",
        FCHMOD => "fchmod",
        FCHMODAT => "fchmodat",
        FCHMODAT2 => "fchmodat2",
        CHOWN => "chown",
        FCHOWN => "fchown",
        LCHOWN => "lchown",
        FCHOWNAT => "fchownat",
        CONNECT => "connect",
        ACCEPT => "accept",
        ACCEPT4 => "accept4",
        SENDTO => "sendto",
        RECVFROM => "recvfrom",
        SENDMSG => "sendmsg",
        RECVMSG => "recvmsg",
        BIND => "bind",
        LISTEN => "listen",
        PTRACE => "ptrace",
        SETUID => "setuid",
        SETGID => "setgid",
        SETREUID => "setreuid",
        SETREGID => "setregid",
        SETRESUID => "setresuid",
        SETRESGID => "setresgid",
        SETFSUID => "setfsuid",
        SETFSGID => "setfsgid",
        CAPSET => "capset",
        MOUNT => "mount",
        INIT_MODULE => "init_module",
        FINIT_MODULE => "finit_module",
        PROCESS_VM_READV => "process_vm_readv",
        PROCESS_VM_WRITEV => "process_vm_writev",
        BPF => "bpf",
        IO_URING_SETUP => "io_uring_setup",
        _ => "unknown",
    }
}
