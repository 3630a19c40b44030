//! Events sent from the kernel to userspace through the `EVENTS` ring buffer.
//!
//! Every record starts with an [`EventHeader`]; its `kind` says which payload
//! struct the record is. Kinds are numbered in ranges by family (process 1..,
//! file 100.., network 200.., ...), so a new family never renumbers another.

/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;
/// Bytes of the executed file's path carried by an exec event.
pub const EXEC_FILENAME_MAX: usize = 512;
/// Bytes of the NUL-separated argv carried by an exec event.
pub const EXEC_ARGV_MAX: usize = 4096;

/// Event type numbers.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Exec = 1,
    Fork = 2,
    Exit = 3,
    /// A file syscall ([`SysEvent`]).
    File = 100,
    /// A socket syscall ([`SysEvent`]).
    Net = 200,
    /// A DNS message sent to or received from port 53 ([`SysEvent`] + payload).
    Dns = 201,
    /// A risky operation: ptrace, other-process memory, credentials, modules,
    /// bpf, mount, io_uring ([`SysEvent`]).
    Risky = 300,
    /// Bytes read from stdin or written to stdout ([`SysEvent`] + data).
    Stdio = 400,
}

impl EventKind {
    /// Decodes a raw kind number.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Exec),
            2 => Some(Self::Fork),
            3 => Some(Self::Exit),
            100 => Some(Self::File),
            200 => Some(Self::Net),
            201 => Some(Self::Dns),
            300 => Some(Self::Risky),
            400 => Some(Self::Stdio),
            _ => None,
        }
    }

    /// Stable lower-case name used in JSON and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Fork => "fork",
            Self::Exit => "exit",
            Self::File => "file",
            Self::Net => "net",
            Self::Dns => "dns",
            Self::Risky => "risky",
            Self::Stdio => "stdio",
        }
    }

    /// Every kind, for userspace tables indexed by kind.
    pub const ALL: [EventKind; 8] = [
        Self::Exec,
        Self::Fork,
        Self::Exit,
        Self::File,
        Self::Net,
        Self::Dns,
        Self::Risky,
        Self::Stdio,
    ];
}

/// Header common to every event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`] number.
    pub kind: u32,
    /// Server id of the process (0: not watched, sent for discovery only).
    pub server: u32,
    /// `bpf_ktime_get_boot_ns()` when the event happened.
    pub ktime_ns: u64,
    /// Thread id.
    pub pid: u32,
    /// Process id (thread group id).
    pub tgid: u32,
    /// Parent's process id (`real_parent->tgid`).
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// `EVENT_*` flags.
    pub flags: u32,
    pub comm: [u8; COMM_LEN],
}

/// The header's `flags`: the process is not watched; the event is for discovery.
pub const EVENT_UNWATCHED: u32 = 1;
/// The header's `flags`: the kernel sent the process SIGKILL at this event
/// (the kill layer); it dies before it returns to user space.
pub const EVENT_KILLED: u32 = 2;

/// What a file descriptor is (from the inode mode), for fds 0-2 at exec and
/// for stdio capture.
pub const FD_NONE: u8 = 0;
pub const FD_FILE: u8 = 1;
pub const FD_PIPE: u8 = 2;
pub const FD_SOCKET: u8 = 3;
pub const FD_CHAR: u8 = 4;
pub const FD_OTHER: u8 = 5;
/// A TCP or UDP socket (AF_INET/AF_INET6), told by the exec probe from the
/// socket itself: a reverse shell's wire, decided in the kernel (a Unix
/// socketpair stays `FD_SOCKET`).
pub const FD_INET_SOCKET: u8 = 6;

/// `sched_process_exec`: a process replaced its image.
///
/// Followed in the record, in this order (what `probes/process.rs` writes):
/// 1. two fixed slots of `EXEC_FILENAME_MAX` bytes: the path given to exec
///    (`filename_len` used), then the interpreter path when it differs, for
///    scripts (`interp_len` used);
/// 2. contiguously: `exe_len` bytes of the resolved path of the file
///    executed, `cwd_len` bytes of the working directory, `argv_len` bytes of
///    NUL-separated arguments.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// Thread id that called exec (differs from tgid when a thread execs).
    pub old_pid: u32,
    /// `EXEC_*` flags.
    pub flags: u32,
    pub filename_len: u32,
    pub interp_len: u32,
    pub argv_len: u32,
    /// Full length of the argument area in the new image, truncated or not.
    pub argv_full_len: u32,
    /// Length of the resolved path of the file actually executed (`bprm->file`:
    /// the interpreter for a script), stored right after the two fixed slots.
    pub exe_len: u32,
    /// Length of the working directory path, stored after the exe path (and
    /// followed by argv).
    pub cwd_len: u32,
    /// `FD_*` of fds 0, 1, 2 (index 3 unused).
    pub stdio: [u8; 4],
    /// Hard links of the executed file (0: deleted or memfd: fileless).
    pub exe_nlink: u32,
}

/// The resolved exe path was cut.
pub const EXEC_EXE_TRUNCATED: u32 = 8;
/// The cwd path was cut.
pub const EXEC_CWD_TRUNCATED: u32 = 16;

/// argv was longer than `EXEC_ARGV_MAX` and was cut.
pub const EXEC_ARGV_TRUNCATED: u32 = 1;
/// The filename was longer than `EXEC_FILENAME_MAX` and was cut.
pub const EXEC_FILENAME_TRUNCATED: u32 = 2;
/// The interpreter path was longer than `EXEC_FILENAME_MAX` and was cut.
pub const EXEC_INTERP_TRUNCATED: u32 = 4;

/// Size of the variable part following an [`ExecEvent`] at most: filename
/// and interp slots, the resolved exe path and cwd (each at most `PATH_MAX`),
/// then argv.
pub const EXEC_DATA_MAX: usize = 2 * EXEC_FILENAME_MAX + EXEC_ARGV_MAX + 2 * PATH_MAX;

/// Scratch record an exec event is assembled in (per-CPU map value).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRecord {
    pub event: ExecEvent,
    pub data: [u8; EXEC_DATA_MAX],
}

/// `sched_process_fork` of a watched process: a new process (not a thread).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkEvent {
    /// Header of the parent (the caller of fork/clone).
    pub header: EventHeader,
    /// Child process id.
    pub child_tgid: u32,
    pub _pad: u32,
}

/// `sched_process_exit` of the last thread of a watched process.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// `task_struct.exit_code`: `status << 8` or the terminating signal.
    pub exit_code: u32,
    pub _pad: u32,
}

/// Longest path a probe reports; longer ones carry a truncation flag.
pub const PATH_MAX: usize = 4096;
/// Bytes of data (stdio chunk, DNS message) one [`SysEvent`] carries at most.
pub const DATA_MAX: usize = 8192;

/// A socket address, normalised: IPv4 in the first 4 bytes of `addr`,
/// IPv6 in all 16, a Unix path or abstract name in the record's path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockAddr {
    /// `AF_INET` (2), `AF_INET6` (10), `AF_UNIX` (1), 0: none.
    pub family: u16,
    /// Host byte order.
    pub port: u16,
    /// `SOCK_STREAM` (1), `SOCK_DGRAM` (2)... 0: unknown.
    pub sock_type: u16,
    /// `SOCKADDR_*` flags.
    pub flags: u16,
    pub addr: [u8; 16],
}

/// The Unix socket address is an abstract name (the record's path holds the
/// name without its leading NUL).
pub const SOCKADDR_ABSTRACT: u16 = 1;

/// One syscall of a watched process: file, socket, risky or stdio.
///
/// Followed in the record by `len1` bytes of the first path (or Unix socket
/// path), `len2` bytes of the second path (rename/link target), and
/// `data_len` bytes of data (stdio chunk, DNS message).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SysEvent {
    pub header: EventHeader,
    /// Syscall number (x86_64).
    pub nr: u32,
    /// `SYS_*` flags.
    pub flags: u32,
    /// Return value: fd, byte count, 0, or -errno.
    pub ret: i64,
    /// Raw arguments.
    pub args: [u64; 6],
    /// Remote (connect, sendto, accept) or local (bind, listen) address.
    pub addr: SockAddr,
    /// Stream offset of the data (stdio only), per (process, direction).
    pub stream_offset: u64,
    /// File mode bits (`i_mode`) of the file, when known.
    pub mode: u32,
    pub len1: u16,
    pub len2: u16,
    pub data_len: u32,
    /// Bytes the syscall transferred that this record does not carry (stdio).
    pub data_missing: u32,
    /// Local port the connection came in on (accept only; host byte order).
    pub local_port: u16,
    pub _pad: [u8; 2],
    /// The process a call reached into, resolved in the kernel (pidfd_getfd:
    /// the pidfd's process); 0 when none or unreadable.
    pub target_pid: u32,
    /// The opened file's inode number and device (`i_sb->s_dev`, the
    /// kernel's encoding): a successful open only, 0 otherwise.
    pub file_ino: u64,
    pub file_dev: u32,
    pub _pad2: u32,
}

/// `len1` is a path resolved in the kernel from the opened `struct file`.
pub const SYS_PATH_RESOLVED: u32 = 1;
/// The first path was cut at `PATH_MAX`.
pub const SYS_PATH_TRUNCATED: u32 = 2;
/// The second path was cut.
pub const SYS_PATH2_TRUNCATED: u32 = 4;
/// The first path is relative as the process gave it; the data holds the
/// directory it is relative to (cwd or dirfd), resolved in the kernel.
pub const SYS_PATH_RELATIVE: u32 = 8;
/// Data was cut (more bytes than one record; later records continue).
pub const SYS_DATA_TRUNCATED: u32 = 16;
/// The data was received (stdin, DNS answer) rather than sent.
pub const SYS_DATA_IN: u32 = 32;
/// Paths or the address were read from the caller's memory at syscall exit,
/// not from a kernel object: a racing thread of the process may have
/// rewritten them during the call (failed opens, path operations, sendto
/// destinations, Unix socket paths, a connect or bind the socket does not
/// record). What the kernel holds (an opened file, a socket's addresses) is
/// read from the kernel object instead and carries no flag.
pub const SYS_USER_MEMORY: u32 = 64;
/// An ia32 syscall (`int 0x80`) of a 64-bit process, reported at its entry:
/// `nr` is the ia32 number (see `syscalls::ia32`), `args` the ia32 argument
/// registers (ebx, ecx, edx, esi, edi, ebp), `ret` 0 (not run yet); the first
/// path is the path an ia32 open/openat gave, from the caller's memory.
pub const SYS_COMPAT: u32 = 128;

/// Scratch record a [`SysEvent`] is assembled in (per-CPU map value).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SysRecord {
    pub event: SysEvent,
    pub data: [u8; 2 * PATH_MAX + DATA_MAX],
}

/// Key of the `LOSS` per-CPU map: ring-buffer reserve failures by server and kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LossKey {
    pub server: u32,
    pub kind: u32,
}

// The layout both sides agree on (what Tetragon's alignchecker checks): a
// field moved or resized fails the build of both the programs and the agent.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<EventHeader>() == 56);
    assert!(offset_of!(EventHeader, kind) == 0);
    assert!(offset_of!(EventHeader, server) == 4);
    assert!(offset_of!(EventHeader, ktime_ns) == 8);
    assert!(offset_of!(EventHeader, pid) == 16);
    assert!(offset_of!(EventHeader, tgid) == 20);
    assert!(offset_of!(EventHeader, ppid) == 24);
    assert!(offset_of!(EventHeader, uid) == 28);
    assert!(offset_of!(EventHeader, gid) == 32);
    assert!(offset_of!(EventHeader, flags) == 36);
    assert!(offset_of!(EventHeader, comm) == 40);

    assert!(size_of::<ExecEvent>() == 96);
    assert!(offset_of!(ExecEvent, old_pid) == 56);
    assert!(offset_of!(ExecEvent, flags) == 60);
    assert!(offset_of!(ExecEvent, filename_len) == 64);
    assert!(offset_of!(ExecEvent, interp_len) == 68);
    assert!(offset_of!(ExecEvent, argv_len) == 72);
    assert!(offset_of!(ExecEvent, argv_full_len) == 76);
    assert!(offset_of!(ExecEvent, exe_len) == 80);
    assert!(offset_of!(ExecEvent, cwd_len) == 84);
    assert!(offset_of!(ExecEvent, stdio) == 88);
    assert!(offset_of!(ExecEvent, exe_nlink) == 92);
    assert!(size_of::<ExecRecord>() == size_of::<ExecEvent>() + EXEC_DATA_MAX);

    assert!(size_of::<ForkEvent>() == 64);
    assert!(offset_of!(ForkEvent, child_tgid) == 56);
    assert!(size_of::<ExitEvent>() == 64);
    assert!(offset_of!(ExitEvent, exit_code) == 56);

    assert!(size_of::<SockAddr>() == 24);
    assert!(offset_of!(SockAddr, family) == 0);
    assert!(offset_of!(SockAddr, port) == 2);
    assert!(offset_of!(SockAddr, sock_type) == 4);
    assert!(offset_of!(SockAddr, flags) == 6);
    assert!(offset_of!(SockAddr, addr) == 8);

    assert!(size_of::<SysEvent>() == 192);
    assert!(offset_of!(SysEvent, nr) == 56);
    assert!(offset_of!(SysEvent, flags) == 60);
    assert!(offset_of!(SysEvent, ret) == 64);
    assert!(offset_of!(SysEvent, args) == 72);
    assert!(offset_of!(SysEvent, addr) == 120);
    assert!(offset_of!(SysEvent, stream_offset) == 144);
    assert!(offset_of!(SysEvent, mode) == 152);
    assert!(offset_of!(SysEvent, len1) == 156);
    assert!(offset_of!(SysEvent, len2) == 158);
    assert!(offset_of!(SysEvent, data_len) == 160);
    assert!(offset_of!(SysEvent, data_missing) == 164);
    assert!(offset_of!(SysEvent, local_port) == 168);
    assert!(offset_of!(SysEvent, target_pid) == 172);
    assert!(size_of::<SysRecord>() == size_of::<SysEvent>() + 2 * PATH_MAX + DATA_MAX);

    assert!(size_of::<LossKey>() == 8);
    assert!(offset_of!(LossKey, kind) == 4);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C) structs of integers and byte arrays without padding.
    unsafe impl aya::Pod for super::LossKey {}
    unsafe impl aya::Pod for super::SockAddr {}
}
