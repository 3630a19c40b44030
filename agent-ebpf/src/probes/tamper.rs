//! Self-protection: a signal a watched process sends to the agent, seen at
//! the raw tracepoint `signal_generate(int sig, struct kernel_siginfo *info,
//! struct task_struct *task, int group, int result)`. It fires in the
//! sender's context for every way a signal is sent (see
//! `agent_common::tamper`), after the kernel queued it.
//!
//! An unwatched sender pays the one `WATCHED` lookup; a watched one a read
//! of the target's tgid and the `TAMPER_AGENT` lookup. Only a signal whose
//! default action terminates or stops the agent becomes a record.
//!
//! Enforce mode (a server in `KILL_SERVERS`): the sender is killed here.
//! That does not take back the signal it sent, already queued on the agent:
//! SIGKILL and SIGSTOP still reach it (see the README, "Self-protection").

use agent_common::{
    EventKind,
    config::WATCH_PENDING,
    probe_errors::{Probe, Reason},
    tamper::{AGENT_TGID, SI_KERNEL, SI_USER, SIGINFO_CODE_OFFSET, SIGNAL_NR, stops_or_ends},
};
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::raw_tracepoint, programs::RawTracePointContext};

use crate::{
    emit::probe_error,
    kernel::{read, read_at},
    maps::{TAMPER_AGENT, offsets, watched},
    probes::{kill, syscalls::record},
    record::Call,
};

/// `SEND_SIG_PRIV`: the kernel's own signal, passed as this pointer value.
const SEND_SIG_PRIV: u64 = 1;

#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn signal_generate(ctx: RawTracePointContext) -> i32 {
    let Some(w) = watched((bpf_get_current_pid_tgid() >> 32) as u32) else {
        return 0;
    };
    if w.flags & WATCH_PENDING != 0 {
        return 0;
    }
    let sig = ctx.arg::<u64>(0) as u32;
    if !stops_or_ends(sig) {
        return 0;
    }
    let task: *const u8 = ctx.arg(2);
    let o = offsets();
    let Ok(tgid) = read::<u32>(task, &o.task_tgid) else {
        probe_error(Probe::Risky, Reason::KernelRead);
        return 0;
    };
    let agent = TAMPER_AGENT.get(AGENT_TGID).copied().unwrap_or(0);
    if agent == 0 || tgid != agent {
        return 0;
    }
    let tid: u32 = read(task, &o.task_pid).unwrap_or(0);
    let info = ctx.arg::<u64>(1);
    let code = match info {
        0 => SI_USER,
        SEND_SIG_PRIV => SI_KERNEL,
        p => read_at::<i32>(p as *const u8, SIGINFO_CODE_OFFSET).unwrap_or(SI_KERNEL),
    };
    let group = ctx.arg::<u64>(3) as u32;
    let result = ctx.arg::<u64>(4) as u32;
    let st = Call {
        nr: SIGNAL_NR,
        server: w.server,
        event_flags: 0,
        args: [
            sig as u64,
            tid as u64,
            code as i64 as u64,
            result as u64,
            group as u64,
            0,
        ],
    };
    let Some(mut rec) = record(EventKind::Risky, &st, 0) else {
        return 0;
    };
    rec.ev().target_pid = tgid;
    if kill::enforced(w.server) {
        rec.ev().header.flags |= kill::kill_current();
    }
    rec.send();
    0
}
