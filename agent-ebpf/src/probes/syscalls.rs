//! The syscall dispatcher: one BTF tracepoint, `sys_exit(struct pt_regs *regs,
//! long ret)`, for every followed syscall. BTF-typed (`tp_btf`) rather than
//! raw: `regs` is then a pointer the verifier knows, read with direct loads
//! instead of a `bpf_probe_read_kernel` call per register.
//!
//! Only the exit is hooked (as Falco's modern probe): the arguments are still
//! in `regs` there (x86_64 syscall entry saved the caller's registers and the
//! handlers read their arguments from them; at exit only `ax` holds the
//! result, di/si/dx/r10/r8/r9 are as the caller left them for every call
//! followed here), `orig_ax` still holds the number, `TS_COMPAT` still tells
//! an ia32 call (cleared later, on the way back to user space), and the
//! kernel objects the call made or used (the opened `struct file`, the
//! socket) are the truth about what it did. A call refused by seccomp or
//! Landlock is an ordinary error exit; a call begun before the agent attached
//! is seen at its exit like any other. A process held for the discovery
//! rules (pending) is reported too, flagged (see [`event_flags`]).
//!
//! No enter hook is needed: no followed call has a value that exists only
//! before it. Paths given to rename, unlink and the other path calls are
//! read from the caller's memory (flagged so) either way; dup2/dup3's
//! replaced descriptor is not followed (only what the new one is); close is
//! not followed; a successful exec is `sched_process_exec`'s, and a refused
//! one leaves its arguments in place.
//!
//! Order of tests, cheapest first: the number against the followed set (a
//! `match`, no map); stdio calls against fds 0, 1 and the wire's known
//! duplicates (one register read, one array read), fcntl against its
//! duplicating commands; then the one `WATCHED` lookup. A followed syscall of
//! an unwatched process costs that lookup and nothing more. Only a watched
//! process's calls are then tested for ia32 (`int 0x80`, numbered from
//! another table). A syscall outside the followed set costs one kernel read
//! (`thread_info.status`: is it an ia32 call?) and, only when it is, the
//! lookup. An ia32 call whose number is a followed x86_64 stdio or fcntl
//! number (ia32 19 lseek, 20 getpid, 72 sigsuspend...) is taken for the
//! native one by the pre-filters and may go unreported.

use agent_common::{
    EventKind, WatchedProc,
    abi::{F_DUPFD, F_DUPFD_CLOEXEC},
    config::WATCH_PENDING,
    event::{EVENT_UNWATCHED, SYS_COMPAT, SYS_PATH_TRUNCATED},
    probe_errors::Reason,
    syscalls::{FCNTL, Family, arg, family, ia32},
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};

use crate::{
    kernel::{in_compat_syscall, saved_reg},
    maps::{offsets, watched},
    probes::{file, network, risky, stdio},
    record::{Call, Rec},
};

// Inlined into the program the macro wraps around it: a bpf-to-bpf call
// on every syscall of the host otherwise.
#[btf_tracepoint(function = "sys_exit")]
#[inline(always)]
pub fn sys_exit(ctx: BtfTracePointContext) -> u32 {
    try_exit(&ctx);
    0
}

/// Nothing here can fail: registers and the task are read with direct
/// loads, and what a family's handler could not read it counts itself.
#[inline(always)]
fn try_exit(ctx: &BtfTracePointContext) {
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let o = offsets();
    let nr = saved_reg(regs, &o.regs_orig_ax) as u32;
    let Some(fam) = family(nr) else {
        // Not a followed x86_64 call; an ia32 one of a watched process is
        // reported whatever it is.
        if !in_compat_syscall() {
            return;
        }
        let Some(w) = watched((bpf_get_current_pid_tgid() >> 32) as u32) else {
            return;
        };
        compat_exit(regs, nr, ret, &w);
        return;
    };
    // Only what the pre-filters need is read before the watched lookup.
    if fam == Family::Stdio && !stdio::candidate_fd(saved_reg(regs, &o.regs_di)) {
        return;
    }
    if nr == FCNTL {
        let cmd = saved_reg(regs, &o.regs_si);
        if cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC {
            return;
        }
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(w) = watched((pid_tgid >> 32) as u32) else {
        return;
    };
    if in_compat_syscall() {
        compat_exit(regs, nr, ret, &w);
        return;
    }
    let call = Call {
        nr,
        server: w.server,
        event_flags: event_flags(&w),
        args: syscall_args(regs),
    };
    match fam {
        Family::File => file::on_exit(&call, ret),
        Family::Net => network::on_exit(&call, ret),
        Family::Risky => risky::on_exit(&call, ret),
        Family::Stdio => stdio::on_exit(&call, ret, pid_tgid),
        Family::Dup => stdio::on_dup(ret, (pid_tgid >> 32) as u32),
    }
}

/// An ia32 syscall of a watched process, reported with the ia32 argument
/// registers and, for the opens, the path as given.
fn compat_exit(regs: *const u8, nr: u32, ret: i64, w: &WatchedProc) {
    let o = offsets();
    // ia32 arguments are 32-bit: the registers' upper halves are not the call's.
    let r = |off: &u32| saved_reg(regs, off) as u32 as u64;
    let args = [
        r(&o.regs_bx),
        r(&o.regs_cx),
        r(&o.regs_dx),
        r(&o.regs_si),
        r(&o.regs_di),
        r(&o.regs_bp),
    ];
    let call = Call {
        nr,
        server: w.server,
        event_flags: event_flags(w),
        args,
    };
    let Some(mut rec) = record(EventKind::Risky, &call, ret) else {
        return;
    };
    rec.ev().flags |= SYS_COMPAT;
    if let Some(i) = ia32::path_arg(nr) {
        rec.push_user_str(arg(&args, Some(i)), false, SYS_PATH_TRUNCATED);
    } else if let Some((_, addr_i, len_i)) = ia32::sockaddr_call(nr, args[0]) {
        // Where a connect, bind or sendto went, from the caller's memory
        // (flagged so).
        let (ptr, len) = if nr == ia32::SOCKETCALL {
            // SAFETY: bpf_probe_read_user checks the user pointer.
            let list: [u32; ia32::SOCKETCALL_ARGS] =
                unsafe { bpf_probe_read_user(args[1] as *const [u32; ia32::SOCKETCALL_ARGS]) }.unwrap_or([0; 6]);
            (list[addr_i] as u64, list[len_i] as u64)
        } else {
            (args[addr_i], args[len_i])
        };
        match network::user_sockaddr(&mut rec, ptr, len) {
            Some(a) => rec.ev().addr = a,
            None => rec.error(Reason::SockaddrUnreadable),
        }
    }
    rec.send();
}

/// The header flags of a watched process's records: a process held for the
/// discovery rules (pending) is reported flagged `EVENT_UNWATCHED`, so what
/// it does before userspace has matched it is not lost; userspace keeps the
/// records once a rule made it a server and drops (and counts) them when
/// none did.
#[inline(always)]
fn event_flags(w: &WatchedProc) -> u32 {
    if w.flags & WATCH_PENDING != 0 {
        EVENT_UNWATCHED
    } else {
        0
    }
}

/// The six syscall arguments (di, si, dx, r10, r8, r9) of `regs`.
#[inline(always)]
fn syscall_args(regs: *const u8) -> [u64; 6] {
    let o = offsets();
    [
        saved_reg(regs, &o.regs_di),
        saved_reg(regs, &o.regs_si),
        saved_reg(regs, &o.regs_dx),
        saved_reg(regs, &o.regs_r10),
        saved_reg(regs, &o.regs_r8),
        saved_reg(regs, &o.regs_r9),
    ]
}

/// Starts a record of `kind` for `call`.
#[inline(always)]
pub fn record(kind: EventKind, call: &Call, ret: i64) -> Option<Rec> {
    Rec::new(kind, call, ret)
}
