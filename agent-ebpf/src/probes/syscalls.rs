//! The syscall dispatcher: raw tracepoints `sys_enter(struct pt_regs *regs, long id)`
//! and `sys_exit(struct pt_regs *regs, long ret)`.
//!
//! One program pair serves every followed syscall (one raw tracepoint costs
//! less per hooked call than a classic per-syscall tracepoint). Both sides
//! first test the syscall number against the followed set: every other
//! syscall costs no map lookup at all. stdio syscalls are further filtered to
//! fds 0 and 1 and the wire's known duplicates (one array read) before any
//! lookup; fcntl to its duplicating commands. A followed syscall of an
//! unwatched process costs one lookup on each side (`WATCHED` at enter, the
//! thread's task-local `STASH` at exit, a pointer walk with no hashing).
//! Every syscall first pays one kernel read (`thread_info.status`) telling an
//! ia32 call (`int 0x80`, numbered from another table) from a native one; an
//! ia32 call costs the watched lookup.

use agent_common::{
    EventKind,
    abi::{F_DUPFD, F_DUPFD_CLOEXEC},
    config::WATCH_PENDING,
    event::{SYS_COMPAT, SYS_PATH_TRUNCATED},
    offsets::OFFSET_MISSING,
    probe_errors::{Probe, Reason},
    syscalls::{FCNTL, Family, arg, family, ia32},
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};

use crate::{
    emit::probe_error,
    kernel::{in_compat_syscall, read, read_at},
    maps::{STASH, STASH_EMPTY, Stash, offset, offsets, watched},
    probes::{file, network, risky, stdio},
    record::Rec,
};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    if try_enter(&ctx).is_err() {
        probe_error(Probe::SysEnter, Reason::KernelRead);
    }
    0
}

fn try_enter(ctx: &RawTracePointContext) -> Result<(), i64> {
    let nr = ctx.arg::<u64>(1) as u32;
    // An ia32 number is never looked up in the x86_64 table (int 0x80's
    // open, 5, is fstat there).
    if in_compat_syscall() {
        return compat_enter(ctx, nr);
    }
    let Some(fam) = family(nr) else {
        return Ok(());
    };
    let regs: *const u8 = ctx.arg(0);
    let o = offsets();
    // Only what the pre-filters need is read before the watched lookup.
    if fam == Family::Stdio && !stdio::candidate_fd(read(regs, &o.regs_di)?) {
        return Ok(());
    }
    if nr == FCNTL {
        let cmd: u64 = read(regs, &o.regs_si)?;
        if cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC {
            return Ok(());
        }
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(w) = watched((pid_tgid >> 32) as u32) else {
        return Ok(());
    };
    // A process held for the discovery rules emits nothing, but where its
    // wire goes is followed: it may be moved before userspace decides.
    if w.flags & WATCH_PENDING != 0 && fam != Family::Dup {
        return Ok(());
    }
    let args = syscall_args(regs)?;
    let Some(slot) = STASH.current(true) else {
        // No storage for this thread (allocation failed, or the storage was
        // busy under a nested program): the syscall's exit will find
        // nothing and its event is lost.
        probe_error(Probe::SysEnter, Reason::StashUnavailable);
        return Ok(());
    };
    // SAFETY: this thread's storage, valid for the program's run; only this
    // thread's own sys_enter and sys_exit touch it, never at once.
    let st = unsafe { &mut *slot };
    st.nr = nr;
    st.server = w.server;
    st.args = args;
    Ok(())
}

/// An ia32 syscall of a watched process, reported at its entry with the
/// ia32 argument registers and, for the opens, the path as given. Unwatched
/// processes pay the watched lookup only.
fn compat_enter(ctx: &RawTracePointContext, nr: u32) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(w) = watched((pid_tgid >> 32) as u32) else {
        return Ok(());
    };
    if w.flags & WATCH_PENDING != 0 {
        return Ok(());
    }
    let regs: *const u8 = ctx.arg(0);
    let o = offsets();
    // ia32 arguments are 32-bit: the registers' upper halves are not the call's.
    let r = |off: &u32| read::<u64>(regs, off).map(|v| v as u32 as u64).unwrap_or(0);
    let args = [
        r(&o.regs_bx),
        r(&o.regs_cx),
        r(&o.regs_dx),
        r(&o.regs_si),
        r(&o.regs_di),
        r(&o.regs_bp),
    ];
    let st = Stash {
        nr,
        server: w.server,
        args,
    };
    let Some(mut rec) = record(EventKind::Risky, &st, 0) else {
        return Ok(());
    };
    rec.ev().flags |= SYS_COMPAT;
    if let Some(i) = ia32::path_arg(nr) {
        rec.push_user_str(arg(&args, Some(i)), false, SYS_PATH_TRUNCATED);
    } else if let Some((_, addr_i, len_i)) = ia32::sockaddr_call(nr, args[0]) {
        // Where a connect, bind or sendto goes, from the caller's memory at
        // entry (flagged so): the socket does not hold it yet.
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
    Ok(())
}

/// Registers holding the arguments, in one read when they lie within
/// `ARGS_SPAN` words of each other (x86_64: r10 to di, 8 words).
const ARGS_SPAN: usize = 9;

/// The six syscall arguments (di, si, dx, r10, r8, r9) of `regs`.
#[inline(always)]
fn syscall_args(regs: *const u8) -> Result<[u64; 6], i64> {
    let o = offsets();
    let offs = [
        offset(&o.regs_di),
        offset(&o.regs_si),
        offset(&o.regs_dx),
        offset(&o.regs_r10),
        offset(&o.regs_r8),
        offset(&o.regs_r9),
    ];
    let mut lo = u32::MAX;
    let mut hi = 0;
    for &off in &offs {
        lo = lo.min(off);
        hi = hi.max(off);
    }
    let mut args = [0u64; 6];
    if hi != OFFSET_MISSING && hi - lo < (ARGS_SPAN * 8) as u32 {
        let block: [u64; ARGS_SPAN] = read_at(regs, lo)?;
        for (arg, &off) in args.iter_mut().zip(&offs) {
            let i = ((off - lo) / 8) as usize;
            if i < ARGS_SPAN {
                *arg = block[i];
            }
        }
    } else {
        for (arg, &off) in args.iter_mut().zip(&offs) {
            *arg = read_at(regs, off)?;
        }
    }
    Ok(args)
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    if try_exit(&ctx).is_err() {
        probe_error(Probe::SysExit, Reason::KernelRead);
    }
    0
}

fn try_exit(ctx: &RawTracePointContext) -> Result<(), i64> {
    let regs: *const u8 = ctx.arg(0);
    let ret = ctx.arg::<u64>(1) as i64;
    let o = offsets();
    let nr = read::<u64>(regs, &o.regs_orig_ax)? as u32;
    let Some(fam) = family(nr) else {
        return Ok(());
    };
    if fam == Family::Stdio && !stdio::candidate_fd(read::<u64>(regs, &o.regs_di)?) {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(slot) = STASH.current(false) else {
        return Ok(());
    };
    // SAFETY: as in `try_enter`.
    let slot = unsafe { &mut *slot };
    let st = *slot;
    slot.nr = STASH_EMPTY;
    if st.nr != nr {
        if fam == Family::Risky && ret == -EPERM {
            return seccomp_denied(regs, nr, ret, pid_tgid);
        }
        return Ok(());
    }
    match fam {
        Family::File => file::on_exit(&st, ret),
        Family::Net => network::on_exit(&st, ret),
        Family::Risky => risky::on_exit(&st, ret),
        Family::Stdio => stdio::on_exit(&st, ret, pid_tgid),
        Family::Dup => stdio::on_dup(ret, (pid_tgid >> 32) as u32),
    }
    Ok(())
}

/// EPERM from a risky syscall whose entry was never seen: a seccomp filter
/// (an enforced server's sandbox) refused it before the sys_enter
/// tracepoint, which runs after seccomp. The exit still runs; the arguments
/// are still in the registers. Reported as the risky call with its EPERM, so
/// the denial is an alert and not silence.
fn seccomp_denied(regs: *const u8, nr: u32, ret: i64, pid_tgid: u64) -> Result<(), i64> {
    let Some(w) = watched((pid_tgid >> 32) as u32) else {
        return Ok(());
    };
    if w.flags & WATCH_PENDING != 0 {
        return Ok(());
    }
    let st = Stash {
        nr,
        server: w.server,
        args: syscall_args(regs)?,
    };
    risky::on_exit(&st, ret);
    Ok(())
}

/// EPERM, as a syscall returns it.
const EPERM: i64 = 1;

/// Starts a record of `kind` for the syscall in `st`.
#[inline(always)]
pub fn record(kind: EventKind, st: &Stash, ret: i64) -> Option<Rec> {
    Rec::new(kind, st, ret)
}
