//! The benchmark's floor: the hooks mcpwatch attaches, each doing nothing but
//! the watched-set lookup (`cargo xtask bench` loads it with `mcpwatch-load
//! floor` and measures the workloads under it, under the real agent and
//! under nothing, in the same run). Not part of the product binary.
//!
//! Same attach points as the agent: BTF tracepoints on sched_process_fork,
//! exec and exit, raw sys_enter/sys_exit dispatching on the same followed
//! syscall set, and raw signal_generate (self-protection: every signal sent
//! costs its sender one lookup); a followed syscall costs one hash lookup on
//! each side, an unfollowed one none. What any design with these hooks must pay.
#![no_std]
#![no_main]

use agent_common::{WatchedProc, syscalls::family};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::HashMap,
    programs::{BtfTracePointContext, RawTracePointContext},
};

/// `pt_regs.orig_ax`, resolved from BTF by the loader.
#[unsafe(no_mangle)]
static ORIG_AX: u32 = u32::MAX;

#[map]
static WATCHED: HashMap<u32, WatchedProc> = HashMap::with_max_entries(16384, 0);

#[inline(always)]
fn lookup() -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is copied out at once; nothing holds the reference
    // across a map update.
    unsafe { WATCHED.get(tgid) }.map(|w| w.server).unwrap_or(0)
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(_ctx: BtfTracePointContext) -> u32 {
    lookup()
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(_ctx: BtfTracePointContext) -> u32 {
    lookup()
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(_ctx: BtfTracePointContext) -> u32 {
    lookup()
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    if family(ctx.arg::<u64>(1) as u32).is_none() {
        return 0;
    }
    lookup() as i32
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let regs: *const u8 = ctx.arg(0);
    // SAFETY: a read of a global the loader sets before load; volatile so the
    // compiler does not fold the placeholder value in.
    let off = unsafe { core::ptr::read_volatile(&ORIG_AX) };
    if off == u32::MAX {
        return 0;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a bad offset reads as
    // an error, not a fault.
    let Ok(nr) = (unsafe { bpf_probe_read_kernel(regs.add(off as usize) as *const u64) }) else {
        return 0;
    };
    if family(nr as u32).is_none() {
        return 0;
    }
    lookup() as i32
}

#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn signal_generate(_ctx: RawTracePointContext) -> i32 {
    lookup() as i32
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
