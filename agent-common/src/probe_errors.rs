//! Why a probe gave up, counted per probe and reason in the `PROBE_ERRORS`
//! per-CPU array (index [`index`]); userspace exports the counters by name.
//! Ring-buffer loss is counted apart (`LOSS`, by server and kind).

/// The probe (hook or syscall family) that gave up.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Probe {
    File = 0,
    Net = 1,
    Dns = 2,
    Risky = 3,
    Stdio = 4,
    Dup = 5,
    Fork = 6,
    Exec = 7,
    Exit = 8,
}

/// Why.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A read of a kernel structure failed (registers, task, fd table, socket).
    KernelRead = 0,
    /// User memory the record needed (a path, a msghdr, an iovec, data) could
    /// not be read: the record goes out without it.
    UserRead = 1,
    /// A connect, bind or sendto address could be read neither from the
    /// socket nor from the caller's memory.
    SockaddrUnreadable = 2,
    /// A map insert failed (map full): tracking state was lost.
    MapFull = 3,
    /// The per-CPU scratch record was unavailable.
    Scratch = 4,
    /// A file's path could not be walked in the kernel.
    PathUnresolved = 5,
    /// The `WATCHED` map was full: a forked child (or a process held for the
    /// discovery rules) is not followed in the kernel.
    WatchedFull = 6,
}

impl Probe {
    pub const COUNT: usize = 9;
    pub const ALL: [Probe; Self::COUNT] = [
        Probe::File,
        Probe::Net,
        Probe::Dns,
        Probe::Risky,
        Probe::Stdio,
        Probe::Dup,
        Probe::Fork,
        Probe::Exec,
        Probe::Exit,
    ];

    /// The `probe` label of `mcpwatch_probe_errors_total`.
    pub const fn name(self) -> &'static str {
        match self {
            Probe::File => "file",
            Probe::Net => "net",
            Probe::Dns => "dns",
            Probe::Risky => "risky",
            Probe::Stdio => "stdio",
            Probe::Dup => "dup",
            Probe::Fork => "fork",
            Probe::Exec => "exec",
            Probe::Exit => "exit",
        }
    }
}

impl Reason {
    pub const COUNT: usize = 7;
    pub const ALL: [Reason; Self::COUNT] = [
        Reason::KernelRead,
        Reason::UserRead,
        Reason::SockaddrUnreadable,
        Reason::MapFull,
        Reason::Scratch,
        Reason::PathUnresolved,
        Reason::WatchedFull,
    ];

    /// The `reason` label of `mcpwatch_probe_errors_total`.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::KernelRead => "kernel_read",
            Reason::UserRead => "user_read",
            Reason::SockaddrUnreadable => "sockaddr_unreadable",
            Reason::MapFull => "map_full",
            Reason::Scratch => "scratch",
            Reason::PathUnresolved => "path_unresolved",
            Reason::WatchedFull => "watched_full",
        }
    }
}

/// Entries of the `PROBE_ERRORS` array.
pub const PROBE_ERRORS_LEN: u32 = (Probe::COUNT * Reason::COUNT) as u32;

/// The `PROBE_ERRORS` slot of (probe, reason).
#[inline(always)]
pub const fn index(probe: Probe, reason: Reason) -> u32 {
    probe as u32 * Reason::COUNT as u32 + reason as u32
}

/// The (probe, reason) of a `PROBE_ERRORS` slot.
pub const fn slot(index: u32) -> Option<(Probe, Reason)> {
    let (p, r) = (index as usize / Reason::COUNT, index as usize % Reason::COUNT);
    if p >= Probe::COUNT {
        return None;
    }
    Some((Probe::ALL[p], Reason::ALL[r]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_maps_back_to_its_probe_and_reason() {
        for (i, p) in Probe::ALL.into_iter().enumerate() {
            assert_eq!(p as usize, i, "{p:?} out of order in ALL");
            for (j, r) in Reason::ALL.into_iter().enumerate() {
                assert_eq!(r as usize, j, "{r:?} out of order in ALL");
                let at = index(p, r);
                assert!(at < PROBE_ERRORS_LEN);
                assert_eq!(slot(at), Some((p, r)));
            }
        }
        assert_eq!(slot(PROBE_ERRORS_LEN), None);
    }
}
