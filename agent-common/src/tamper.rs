//! Self-protection: a signal sent to the agent by a watched process, seen
//! at the `signal_generate` tracepoint. That one hook covers every way to
//! send one (kill, tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo,
//! pidfd_send_signal, a process group, kill(-1), F_SETOWN's SIGIO): the
//! kill family is therefore not followed in the syscall table.
//!
//! A signal goes out as a `Risky` [`crate::event::SysEvent`] whose `nr` is
//! [`SIGNAL_NR`], whose `target_pid` is the agent's tgid and whose
//! arguments are [`ARG_SIG`], [`ARG_TID`], [`ARG_CODE`], [`ARG_RESULT`] and
//! [`ARG_GROUP`].

/// `SysEvent::nr` of a signal record: no x86_64 syscall has this number
/// (the table ends below 512), so it never reads as one.
pub const SIGNAL_NR: u32 = 0x5147_0001;
/// Argument index of the signal number.
pub const ARG_SIG: usize = 0;
/// Argument index of the agent thread the signal was sent to.
pub const ARG_TID: usize = 1;
/// Argument index of the siginfo `si_code` (`SI_USER` 0 for kill,
/// `SI_TKILL` -6, `SI_QUEUE` -1, `SI_KERNEL` 0x80...).
pub const ARG_CODE: usize = 2;
/// Argument index of the tracepoint's result (`TRACE_SIGNAL_DELIVERED` 0,
/// ignored 1, already pending 2, overflow 3, info lost 4).
pub const ARG_RESULT: usize = 3;
/// Argument index of the group flag (1: sent to the whole process).
pub const ARG_GROUP: usize = 4;

/// `TAMPER_AGENT` index of the agent's tgid (0: not set, nothing matches).
pub const AGENT_TGID: u32 = 0;

/// `si_code` of a signal sent without information (`SEND_SIG_NOINFO`).
pub const SI_USER: i32 = 0;
/// `si_code` of a signal the kernel sent (`SEND_SIG_PRIV`).
pub const SI_KERNEL: i32 = 0x80;
/// Offset of `si_code` in `struct kernel_siginfo`: the uapi siginfo layout
/// (`si_signo`, `si_errno`, `si_code`), fixed by the ABI on every kernel.
pub const SIGINFO_CODE_OFFSET: u32 = 8;

/// Signals whose default action neither terminates nor stops the process
/// (SIGCHLD 17, SIGCONT 18, SIGURG 23, SIGWINCH 28), as bits `1 << (sig - 1)`.
const HARMLESS: u64 = (1 << 16) | (1 << 17) | (1 << 22) | (1 << 27);

/// Whether signal `sig`'s default action terminates or stops a process
/// (1 to 64 but the four harmless ones; real-time signals terminate). A
/// handler the agent installed does not change the answer: sending it is
/// the attempt.
pub const fn stops_or_ends(sig: u32) -> bool {
    sig >= 1 && sig <= 64 && HARMLESS & (1 << (sig - 1)) == 0
}

/// `bpf()` commands through which a process reaches another's BPF objects
/// or detaches programs: every way to an fd of the agent's maps, programs
/// and links (by id, by pinned path) and the commands that write maps or
/// detach. Its own objects a process reaches through the fds it created;
/// the kernel cannot tell cheaply whose map an fd names, so a watched
/// process using any of these is reported.
pub const BPF_TAMPER_CMDS: &[(u64, &str)] = &[
    (2, "BPF_MAP_UPDATE_ELEM"),
    (3, "BPF_MAP_DELETE_ELEM"),
    (7, "BPF_OBJ_GET"),
    (9, "BPF_PROG_DETACH"),
    (13, "BPF_PROG_GET_FD_BY_ID"),
    (14, "BPF_MAP_GET_FD_BY_ID"),
    (21, "BPF_MAP_LOOKUP_AND_DELETE_ELEM"),
    (22, "BPF_MAP_FREEZE"),
    (25, "BPF_MAP_LOOKUP_AND_DELETE_BATCH"),
    (26, "BPF_MAP_UPDATE_BATCH"),
    (27, "BPF_MAP_DELETE_BATCH"),
    (29, "BPF_LINK_UPDATE"),
    (30, "BPF_LINK_GET_FD_BY_ID"),
    (34, "BPF_LINK_DETACH"),
];

/// The name of a `bpf()` command that can reach the agent's objects.
pub fn bpf_tamper_cmd(cmd: u64) -> Option<&'static str> {
    BPF_TAMPER_CMDS.iter().find(|(c, _)| *c == cmd).map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminating_and_stopping_signals() {
        for sig in [1, 2, 9, 10, 15, 19, 20, 29, 31, 34, 64] {
            assert!(stops_or_ends(sig), "{sig}");
        }
        for sig in [0, 17, 18, 23, 28, 65, 1000] {
            assert!(!stops_or_ends(sig), "{sig}");
        }
    }

    #[test]
    fn detach_and_map_writes_are_tamper_commands() {
        assert_eq!(bpf_tamper_cmd(34), Some("BPF_LINK_DETACH"));
        assert_eq!(bpf_tamper_cmd(9), Some("BPF_PROG_DETACH"));
        assert_eq!(bpf_tamper_cmd(5), None, "BPF_PROG_LOAD of its own program");
        assert_eq!(bpf_tamper_cmd(0), None, "BPF_MAP_CREATE");
    }
}
