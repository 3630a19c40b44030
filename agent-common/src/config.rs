//! Runtime configuration shared through maps: what the kernel side should do.

/// Value of the `WATCHED` map (key: tgid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchedProc {
    /// Server id assigned by userspace; never 0 for a watched process.
    pub server: u32,
    /// `WATCH_*` flags.
    pub flags: u32,
}

/// The process was registered directly (wrapper, rule, scan), not inherited by fork.
pub const WATCH_ROOT: u32 = 1;
/// Not watched yet: exec'd while discovery rules exist, waiting for userspace
/// to match it (or a child of such a process). Its forks inherit the mark, so
/// nothing it starts before the decision escapes; probes other than the
/// process lifecycle treat it as unwatched. `server` is 0.
pub const WATCH_PENDING: u32 = 2;

/// Single entry of the `CONFIG` array map, changed by userspace at run time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentConfig {
    /// `CONFIG_*` flags.
    pub flags: u32,
    /// Unused, keeps the struct 8-byte sized.
    pub _pad: u32,
}

/// Send exec events of unwatched processes too, for discovery rules.
pub const CONFIG_DISCOVER_EXEC: u32 = 1;

/// Size of the `WATCHED` map in the object; the agent sizes it at load time
/// to the kernel's `pid_max` (no more processes can exist at once, so it
/// cannot fill) unless `--watched-max` says otherwise. Entries are allocated
/// on insert (`BPF_F_NO_PREALLOC`): a large capacity costs no memory.
pub const WATCHED_MAX_ENTRIES: u32 = 32768;
/// Largest `pid_max` the kernel allows (`PID_MAX_LIMIT` on 64-bit).
pub const WATCHED_MAX_LIMIT: u32 = 4 << 20;
/// Size of the `STDIO_FILES` map (stdio channels of watched servers).
pub const STDIO_FILES_MAX: u32 = 4096;
/// Descriptors below this are followed when a server moves its wire to them.
pub const STDIO_FDS_MAX: u32 = 64;
/// `STDIO_FILES` value bits: the server reads its requests from this channel…
pub const STDIO_IN: u32 = 1;
/// …and writes its responses to it (both for a socketpair).
pub const STDIO_OUT: u32 = 2;

/// Value of the `STDIO_AT_EXEC` map (key: tgid): inode numbers of the pipes
/// or sockets fds 0 and 1 were when a process held for the discovery rules
/// exec'd (0: not a pipe or socket). Userspace moves them to `STDIO_FILES`
/// when a rule makes the process a server.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StdioInodes {
    pub stdin: u64,
    pub stdout: u64,
}

/// Default size of the `EVENTS` ring buffer in bytes (power of two, page multiple).
pub const EVENTS_RING_BYTES: u32 = 8 << 20;

// Layouts the programs and the agent share through maps.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<WatchedProc>() == 8);
    assert!(offset_of!(WatchedProc, flags) == 4);
    assert!(size_of::<AgentConfig>() == 8);
    assert!(size_of::<StdioInodes>() == 16);
    assert!(offset_of!(StdioInodes, stdout) == 8);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain repr(C) structs of integers without padding.
    unsafe impl aya::Pod for super::WatchedProc {}
    unsafe impl aya::Pod for super::AgentConfig {}
    unsafe impl aya::Pod for super::StdioInodes {}
}
