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

/// Default size of the `WATCHED` map (overridable at load time).
pub const WATCHED_MAX_ENTRIES: u32 = 16384;
/// Default size of the `EVENTS` ring buffer in bytes (power of two, page multiple).
pub const EVENTS_RING_BYTES: u32 = 8 << 20;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain repr(C) structs of integers without padding.
    unsafe impl aya::Pod for super::WatchedProc {}
    unsafe impl aya::Pod for super::AgentConfig {}
}
