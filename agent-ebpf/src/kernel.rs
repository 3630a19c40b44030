//! Reads of kernel structures through BTF-resolved offsets.

use agent_common::{EventHeader, event::COMM_LEN, offsets::OFFSET_MISSING};
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid,
    bpf_ktime_get_boot_ns, bpf_probe_read_kernel,
};

use crate::maps::{offset, offsets};

/// Reads a `T` at `base + off`; fails on a missing offset or a bad pointer.
#[inline(always)]
pub fn read<T: Copy>(base: *const u8, off: &u32) -> Result<T, i64> {
    let off = offset(off);
    if off == OFFSET_MISSING || base.is_null() {
        return Err(-1);
    }
    unsafe { bpf_probe_read_kernel(base.add(off as usize) as *const T).map_err(|e| e as i64) }
}

#[inline(always)]
pub fn current_task() -> *const u8 {
    unsafe { bpf_get_current_task() as *const u8 }
}

/// `task->real_parent->tgid`, 0 when unreadable.
#[inline(always)]
pub fn parent_tgid(task: *const u8) -> u32 {
    let o = offsets();
    read::<*const u8>(task, &o.task_real_parent)
        .and_then(|p| read::<u32>(p, &o.task_tgid))
        .unwrap_or(0)
}

/// Fills the common header for the current task.
#[inline(always)]
pub fn fill_header(h: &mut EventHeader, kind: u32, server: u32, flags: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    h.kind = kind;
    h.server = server;
    h.ktime_ns = unsafe { bpf_ktime_get_boot_ns() };
    h.pid = pid_tgid as u32;
    h.tgid = (pid_tgid >> 32) as u32;
    h.ppid = parent_tgid(current_task());
    h.uid = uid_gid as u32;
    h.gid = (uid_gid >> 32) as u32;
    h.flags = flags;
    h.comm = bpf_get_current_comm().unwrap_or([0u8; COMM_LEN]);
}
