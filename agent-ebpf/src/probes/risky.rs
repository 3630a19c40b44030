//! Risky operations of watched processes: ptrace, other processes' memory,
//! credential changes, kernel modules, bpf(), mount, io_uring. Reported with
//! their raw arguments (userspace names them); mount also carries its target
//! and source (the table's path and path2), from the caller's memory.

use agent_common::{
    EventKind,
    event::{SYS_PATH_TRUNCATED, SYS_PATH2_TRUNCATED},
    syscalls::{arg, lookup},
};

use crate::{maps::Stash, probes::syscalls::record};

pub fn on_exit(st: &Stash, ret: i64) {
    let Some(sc) = lookup(st.nr) else {
        return;
    };
    let Some(mut rec) = record(EventKind::Risky, st, ret) else {
        return;
    };
    if sc.path.is_some() {
        rec.push_user_str(arg(&st.args, sc.path), false, SYS_PATH_TRUNCATED);
        rec.push_user_str(arg(&st.args, sc.path2), true, SYS_PATH2_TRUNCATED);
    }
    rec.send();
}
