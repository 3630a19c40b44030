//! The seccomp filter the wrapper installs before it execs an enforced
//! server: EPERM for what an MCP server never needs and for signals and
//! pidfds aimed at the agent; any non-x86_64 syscall (ia32 `int 0x80`)
//! kills the process, as container runtimes do. Compiled by `seccompiler`
//! (the filter library of Firecracker), not hand-assembled BPF.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// What the filter denies unless the configuration says otherwise.
pub const DEFAULT_DENY: &[&str] = &[
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "bpf",
    "init_module",
    "finit_module",
    "delete_module",
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "kexec_load",
    "kexec_file_load",
    "perf_event_open",
    "io_uring_setup",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
];

/// Syscalls the filter can name, x86_64 numbers.
const TABLE: &[(&str, i64)] = &[
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("bpf", libc::SYS_bpf),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("fsopen", libc::SYS_fsopen),
    ("fsmount", libc::SYS_fsmount),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("reboot", libc::SYS_reboot),
    ("acct", libc::SYS_acct),
    ("setns", libc::SYS_setns),
    ("unshare", libc::SYS_unshare),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
];

/// The x86_64 number of a syscall the filter can name.
pub fn number(name: &str) -> Option<i64> {
    TABLE.iter().find(|(n, _)| *n == name).map(|(_, nr)| *nr)
}

/// Every name the filter knows (for configuration errors).
pub fn known() -> Vec<&'static str> {
    TABLE.iter().map(|(n, _)| *n).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("unknown syscall `{0}` in the deny list")]
    Unknown(String),
    #[error("compiling the seccomp filter: {0}")]
    Compile(#[from] seccompiler::BackendError),
    #[error("installing the seccomp filter: {0}")]
    Install(#[from] seccompiler::Error),
}

/// The filter: `deny` fail with EPERM; kill (kill(-1) included), tgkill,
/// tkill, rt_sigqueueinfo, rt_tgsigqueueinfo and pidfd_open aimed at
/// `agent_pid` fail with EPERM; seccompiler's architecture check
/// kills the process on any non-x86_64 call.
pub fn filter(deny: &[String], agent_pid: u32) -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for name in deny {
        let nr = number(name).ok_or_else(|| SeccompError::Unknown(name.clone()))?;
        rules.insert(nr, Vec::new());
    }
    if agent_pid != 0 {
        // The first argument is the target pid for each; a negative pid
        // (a process group) naming the agent's group is matched too.
        let pid = agent_pid as u64;
        let group = (-(agent_pid as i64)) as u32 as u64;
        // rt_sigqueueinfo and rt_tgsigqueueinfo name the agent's tgid first
        // like kill and tgkill. pidfd_send_signal takes a pidfd, which this
        // filter cannot see into: the pidfd_open that would make one is
        // denied here, a /proc/<agent> directory opened as one is not (the
        // kernel's signal_generate probe still reports the signal).
        for nr in [
            libc::SYS_kill,
            libc::SYS_tkill,
            libc::SYS_tgkill,
            libc::SYS_rt_sigqueueinfo,
            libc::SYS_rt_tgsigqueueinfo,
            libc::SYS_pidfd_open,
        ] {
            let at = |v| -> Result<SeccompRule, seccompiler::BackendError> {
                SeccompRule::new(vec![SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    v,
                )?])
            };
            let mut r = vec![at(pid)?];
            if nr == libc::SYS_kill {
                r.push(at(group)?);
                // kill(-1): every process the caller may signal, the agent's too.
                r.push(at(u64::from(u32::MAX))?);
            }
            rules.entry(nr).or_default().extend(r);
        }
    }
    let f = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )?;
    Ok(f.try_into()?)
}

/// Installs `prog` on the calling thread (before exec: the server inherits
/// it). `no_new_privs` must be set first.
pub fn install(prog: &BpfProgram) -> Result<(), SeccompError> {
    Ok(seccompiler::apply_filter(prog)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_list_compiles_and_names_only_known_syscalls() {
        let deny: Vec<String> = DEFAULT_DENY.iter().map(|s| s.to_string()).collect();
        assert!(filter(&deny, 4242).unwrap().len() > deny.len());
        assert!(matches!(
            filter(&["nope".into()], 1),
            Err(SeccompError::Unknown(n)) if n == "nope"
        ));
    }
}
