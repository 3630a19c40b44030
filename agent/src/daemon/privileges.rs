//! The capabilities the agent needs, checked before anything is loaded, so
//! that an agent started without them says what is missing instead of an
//! `EPERM` from the first map it creates.
//!
//! Found by removing one capability at a time from a root agent's bounding
//! set (`setpriv --bounding-set`) while a watched process ran: the events stop
//! without `CAP_BPF` (maps, ring), `CAP_PERFMON` (tracing programs, kernel
//! memory reads) or `CAP_SYS_PTRACE` (`/proc/PID/exe`, `fd/`, `environ` of
//! other users' processes). `CAP_SYS_ADMIN` is needed only to mount tracefs
//! and bpffs when they are absent (kernel/mounts.rs says so when it fails);
//! the rest serve optional parts.

/// One capability: its number, its name, and what it serves.
#[derive(Clone, Copy, Debug)]
pub struct Cap {
    pub bit: u32,
    pub name: &'static str,
    pub serves: &'static str,
}

/// Without these the agent cannot watch anything.
pub const REQUIRED: &[Cap] = &[
    Cap {
        bit: 39,
        name: "CAP_BPF",
        serves: "creating the maps and loading the kernel programs",
    },
    Cap {
        bit: 38,
        name: "CAP_PERFMON",
        serves: "tracing programs and their reads of kernel memory",
    },
    Cap {
        bit: 19,
        name: "CAP_SYS_PTRACE",
        serves: "reading other users' processes in /proc (exe, fds, environment)",
    },
];

/// Without these a part is switched off, with a warning.
pub const OPTIONAL: &[Cap] = &[
    Cap {
        bit: 12,
        name: "CAP_NET_ADMIN",
        serves: "attaching the enforced servers' cgroup network allowlist",
    },
    Cap {
        bit: 2,
        name: "CAP_DAC_READ_SEARCH",
        serves: "reading MCP host configurations in other users' home directories",
    },
];

/// The capabilities of `set` missing from the effective set `eff`.
pub fn missing(eff: u64, set: &'static [Cap]) -> Vec<Cap> {
    set.iter().copied().filter(|c| eff & (1u64 << c.bit) == 0).collect()
}

/// This process's effective capability set.
pub fn effective() -> Result<u64, procfs::ProcError> {
    Ok(procfs::process::Process::myself()?.status()?.capeff)
}

/// Fails, naming every missing capability and what it serves, when a
/// required one is missing; warns about the optional ones.
pub fn check() -> anyhow::Result<()> {
    let eff = match effective() {
        Ok(e) => e,
        Err(e) => {
            // Without /proc the load will say what fails; do not guess.
            log::warn!("cannot read this process's capabilities: {e}");
            return Ok(());
        }
    };
    for c in missing(eff, OPTIONAL) {
        log::warn!("without {}: no {}", c.name, c.serves);
    }
    let need = missing(eff, REQUIRED);
    if need.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = need.iter().map(|c| format!("{} ({})", c.name, c.serves)).collect();
    anyhow::bail!(
        "mcpwatch agent needs root or these capabilities, missing here: {}. Run it as root, or grant \
         them (the shipped systemd unit does: AmbientCapabilities)",
        list.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_set_misses_nothing_and_an_empty_one_misses_everything() {
        assert!(missing(u64::MAX, REQUIRED).is_empty());
        assert_eq!(missing(0, REQUIRED).len(), REQUIRED.len());
        let only_bpf = 1u64 << 39;
        let names: Vec<&str> = missing(only_bpf, REQUIRED).iter().map(|c| c.name).collect();
        assert_eq!(names, ["CAP_PERFMON", "CAP_SYS_PTRACE"]);
    }
}
