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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Exec = 1,
    Fork = 2,
    Exit = 3,
}

impl EventKind {
    /// Decodes a raw kind number.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Exec),
            2 => Some(Self::Fork),
            3 => Some(Self::Exit),
            _ => None,
        }
    }

    /// Stable lower-case name used in JSON and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Fork => "fork",
            Self::Exit => "exit",
        }
    }

    /// Every kind, for userspace tables indexed by kind.
    pub const ALL: [EventKind; 3] = [Self::Exec, Self::Fork, Self::Exit];
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

/// `sched_process_exec`: a process replaced its image.
///
/// Followed in the record by `filename_len` bytes of the path given to exec,
/// `interp_len` bytes of the interpreter path (when different from filename: a
/// script) and `argv_len` bytes of NUL-separated arguments.
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
}

/// argv was longer than `EXEC_ARGV_MAX` and was cut.
pub const EXEC_ARGV_TRUNCATED: u32 = 1;
/// The filename was longer than `EXEC_FILENAME_MAX` and was cut.
pub const EXEC_FILENAME_TRUNCATED: u32 = 2;
/// The interpreter path was longer than `EXEC_FILENAME_MAX` and was cut.
pub const EXEC_INTERP_TRUNCATED: u32 = 4;

/// Size of the variable part following an [`ExecEvent`] at most.
pub const EXEC_DATA_MAX: usize = 2 * EXEC_FILENAME_MAX + EXEC_ARGV_MAX;

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

/// Key of the `LOSS` per-CPU map: ring-buffer reserve failures by server and kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LossKey {
    pub server: u32,
    pub kind: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C) structs of integers and byte arrays without padding.
    unsafe impl aya::Pod for super::LossKey {}
}
