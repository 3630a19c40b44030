//! Risky operations of watched processes: ptrace, other processes' memory,
//! credential changes, kernel modules, bpf(), mount, io_uring, descriptors
//! taken from another process. Reported with their raw arguments
//! (userspace names them); mount also carries its target and source (the
//! table's path and path2), from the caller's memory; pidfd_getfd the
//! process the pidfd names and the file it took, both from the kernel.

use agent_common::{
    EventKind,
    event::{SYS_PATH_TRUNCATED, SYS_PATH2_TRUNCATED},
    probe_errors::Reason,
    syscalls::{Op, arg, lookup},
};

use crate::{
    kernel::{fd_file, pidfd_pid},
    probes::{file::push_fd, kill, syscalls::record},
    record::Call,
};

pub fn on_exit(st: &Call, ret: i64) {
    let Some(sc) = lookup(st.nr) else {
        return;
    };
    let Some(mut rec) = record(EventKind::Risky, st, ret) else {
        return;
    };
    // The kill layer: what an MCP server never needs to do to another
    // process or to the kernel.
    if matches!(
        sc.op,
        Op::Ptrace | Op::ProcessVmReadv | Op::ProcessVmWritev | Op::LoadModule | Op::Bpf
    ) && kill::enforced(st.server)
    {
        rec.ev().header.flags |= kill::kill_current();
    }
    if sc.op == Op::FdSteal {
        // The pidfd is still open at exit: whose descriptor was asked for
        // is known whether or not the call succeeded.
        match fd_file(arg(&st.args, sc.fd)).and_then(pidfd_pid) {
            Some(pid) => rec.ev().target_pid = pid,
            None => rec.error(Reason::KernelRead),
        }
        if ret >= 0 {
            push_fd(&mut rec, ret as u64);
        }
    }
    if sc.path.is_some() {
        rec.push_user_str(arg(&st.args, sc.path), false, SYS_PATH_TRUNCATED);
        rec.push_user_str(arg(&st.args, sc.path2), true, SYS_PATH2_TRUNCATED);
    }
    rec.send();
}
