//! Risky operations of watched processes: ptrace, other processes' memory,
//! credential changes, kernel modules, bpf(), mount, io_uring. Reported with
//! their raw arguments (userspace names them); mount also carries its target
//! and source.

use agent_common::{
    EventKind,
    event::{SYS_PATH_TRUNCATED, SYS_PATH2_TRUNCATED},
    syscalls::MOUNT,
};

use crate::{maps::Stash, probes::syscalls::record};

pub fn on_exit(st: &Stash, ret: i64) {
    let Some(mut rec) = record(EventKind::Risky, st, ret) else {
        return;
    };
    if st.nr == MOUNT {
        rec.push_user_str(st.args[1], false, SYS_PATH_TRUNCATED);
        rec.push_user_str(st.args[0], true, SYS_PATH2_TRUNCATED);
    }
    rec.send();
}
