//! Maps and globals shared with userspace. Names are the userspace contract.

use agent_common::{
    AgentConfig, KernelOffsets, LossKey, WatchedProc,
    config::StdioInodes,
    config::{EVENTS_RING_BYTES, STDIO_FDS_MAX, STDIO_FILES_MAX, WATCHED_MAX_ENTRIES},
    event::{ExecRecord, PATH_MAX, SysRecord},
    kill::{KILL_INODES_MAX, KILL_KEY_DATA, KILL_PATHS_MAX, KILL_SERVERS_MAX, KillInode},
    probe_errors::PROBE_ERRORS_LEN,
};
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, lpm_trie::Key},
};

/// Kernel structure offsets resolved from the running kernel's BTF by userspace.
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets::unresolved();

/// tgid -> server of every watched process. Not preallocated: the agent
/// sizes it to `pid_max` (see `WATCHED_MAX_ENTRIES`), and only what is
/// watched takes memory (an insert happens at fork and exec, never on a
/// hot path).
#[map]
pub static WATCHED: HashMap<u32, WatchedProc> = HashMap::with_max_entries(WATCHED_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// Runtime switches (index 0).
#[map]
pub static CONFIG: Array<AgentConfig> = Array::with_max_entries(1, 0);

/// Every event record goes here.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// Index 0: boot-time clock of the last record that woke the reader (see
/// `emit::wake_flags`).
#[map]
pub static LAST_WAKEUP: Array<u64> = Array::with_max_entries(1, 0);

/// Failed ring-buffer writes by (server, kind), per CPU.
#[map]
pub static LOSS: PerCpuHashMap<LossKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);

/// Times a probe gave up, per CPU, at `probe_errors::index(probe, reason)`.
/// An array: counting never needs an insert that could itself fail.
#[map]
pub static PROBE_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(PROBE_ERRORS_LEN, 0);

/// Per-CPU scratch space for exec records, too large for the BPF stack.
#[map]
pub static EXEC_SCRATCH: PerCpuArray<ExecRecord> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch for syscall records.
#[map]
pub static SYS_SCRATCH: PerCpuArray<SysRecord> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch a path is built in, backwards (see `kernel::resolve_path`).
#[repr(C)]
pub struct PathScratch {
    /// Start position, stored and read back so the verifier cannot fold it.
    pub pos: u64,
    pub buf: [u8; 2 * PATH_MAX + 256],
}

#[map]
pub static PATH_SCRATCH: PerCpuArray<PathScratch> = PerCpuArray::with_max_entries(1, 0);

/// (tgid << 32 | 0 for stdin, 1 for stdout) -> bytes captured so far (stream
/// offset), whatever descriptor the process moved them through.
#[map]
pub static STDIO_OFFSETS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(8192, 0);

/// Inode number of a pipe or socket that is a watched server's stdio (what
/// its fds 0 and 1 were when it was launched or found) -> `STDIO_IN` |
/// `STDIO_OUT`. Pipe and socket inode numbers come from one kernel counter,
/// so the number alone names the channel. LRU: entries of servers long gone
/// make room.
#[map]
pub static STDIO_FILES: LruHashMap<u64, u32> = LruHashMap::with_max_entries(STDIO_FILES_MAX, 0);

/// tgid -> stdio channels of a process held for the discovery rules, taken
/// at its exec (before it can move them); userspace registers them in
/// `STDIO_FILES` if a rule matches. LRU: undecided entries age out.
#[map]
pub static STDIO_AT_EXEC: LruHashMap<u32, StdioInodes> = LruHashMap::with_max_entries(STDIO_FILES_MAX, 0);

/// Index fd: non-zero once fd (< `STDIO_FDS_MAX`) of some watched process was
/// seen to be a duplicate of a stdio channel; fds 0 and 1 always are
/// candidates. A read or write on any other fd returns before the
/// watched-set lookup (an array read is inlined by the verifier).
#[map]
pub static STDIO_FDS: Array<u32> = Array::with_max_entries(STDIO_FDS_MAX, 0);

/// Per-CPU cursor of the stdio chunk loop (see `probes::stdio`).
#[repr(C)]
pub struct StdioCursor {
    pub iov: u64,
    pub iov_off: u64,
    pub done: u64,
}

#[map]
pub static STDIO_CURSOR: PerCpuArray<StdioCursor> = PerCpuArray::with_max_entries(1, 0);

/// Server id -> `KILL_*` flags: servers in enforce mode that the wrapper
/// did not sandbox (found by a rule, a host configuration or the scan).
/// Only these are ever killed.
#[map]
pub static KILL_SERVERS: HashMap<u32, u32> = HashMap::with_max_entries(KILL_SERVERS_MAX, 0);

/// (scope, path) prefixes and exact paths -> `KILL_*` class | kind << 8
/// (see `agent_common::kill`): a server's credential locations (scope: its
/// id), the shells and interpreters (scope 0).
#[map]
pub static KILL_PATHS: LpmTrie<[u8; KILL_KEY_DATA], u32> = LpmTrie::with_max_entries(KILL_PATHS_MAX, 0);

/// Per-CPU scratch a `KILL_PATHS` key is built in (260 bytes: too much
/// for the stack of the programs that look it up).
#[map]
pub static KILL_KEY: PerCpuArray<Key<[u8; KILL_KEY_DATA]>> = PerCpuArray::with_max_entries(1, 0);

/// Files by (server, class, inode, device) -> catalogue kind: a server's
/// credential files and the programs it may exec, whatever name reaches them.
#[map]
pub static KILL_INODES: HashMap<KillInode, u32> = HashMap::with_max_entries(KILL_INODES_MAX, BPF_F_NO_PREALLOC);

/// `KILL_PROBE_TARGET`: the tgid the enforce-check probe kills;
/// `KILL_PROBE_SENT`: signals it sent.
#[map]
pub static KILL_PROBE: Array<u32> = Array::with_max_entries(2, 0);

/// `AGENT_TGID`: the agent's own tgid, which signals from watched processes
/// are checked against (see `probes::tamper`); 0 until userspace sets it.
#[map]
pub static TAMPER_AGENT: Array<u32> = Array::with_max_entries(1, 0);

/// Reads one offset; `read_volatile` keeps the compiler from folding the
/// build-time placeholder, the loader's value is what the verifier sees.
#[inline(always)]
pub fn offset(field: &u32) -> u32 {
    // SAFETY: `field` is a reference into the OFFSETS global, valid and aligned.
    unsafe { core::ptr::read_volatile(field) }
}

#[inline(always)]
pub fn offsets() -> &'static KernelOffsets {
    &OFFSETS
}

/// Server of a watched tgid, the one lookup every probe starts with.
#[inline(always)]
pub fn watched(tgid: u32) -> Option<WatchedProc> {
    // SAFETY: the value is copied out at once; an update racing with the
    // copy can only tear a two-word value userspace writes whole.
    unsafe { WATCHED.get(tgid).copied() }
}

#[inline(always)]
pub fn config_flags() -> u32 {
    CONFIG.get(0).map(|c| c.flags).unwrap_or(0)
}
