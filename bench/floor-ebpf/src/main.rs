//! The benchmark's floor: the hooks mcpwatch attaches, each doing nothing but
//! the watched-set lookup (`cargo xtask bench` loads it with `mcpwatch-load
//! floor` and measures the workloads under it, under the real agent and
//! under nothing, in the same run). Not part of the product binary.
//!
//! Same attach points as the agent: BTF tracepoints on sched_process_fork,
//! exec and exit and on sys_exit (dispatching on the same followed syscall
//! set), and raw signal_generate (self-protection: every signal sent costs its
//! sender one lookup); a followed syscall costs one hash lookup, an unfollowed
//! one none (the agent's ia32 check, one more load, is left out). What any
//! design with these hooks must pay.
#![no_std]
#![no_main]

use agent_common::{WatchedProc, syscalls::family};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
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

/// The agent's syscall hook: one BTF tracepoint at exit, the syscall number
/// read with a direct load from the saved registers.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> u32 {
    let regs: *const u8 = ctx.arg(0);
    // SAFETY: a read of a global the loader sets before load; volatile so the
    // compiler does not fold the placeholder value in.
    let off = unsafe { core::ptr::read_volatile(&ORIG_AX) };
    if off == u32::MAX {
        return 0;
    }
    // SAFETY: `regs` is the tracepoint's BTF-typed argument; the verifier
    // checks the offset against `struct pt_regs` and makes the load
    // fault-tolerant.
    let nr = unsafe { core::ptr::read_volatile(regs.add(off as usize) as *const u64) };
    if family(nr as u32).is_none() {
        return 0;
    }
    lookup()
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
