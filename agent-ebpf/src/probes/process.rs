//! Process lifecycle, from BTF-enabled tracepoints (raw tracepoints with typed
//! arguments; cheaper than classic tracepoints and present since Linux 5.5):
//!
//! - `sched_process_fork(struct task_struct *parent, struct task_struct *child)`,
//!   called in `kernel_clone()` after `copy_process()` and before
//!   `wake_up_new_task()`: a child of a watched process is watched before it
//!   runs its first instruction.
//! - `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`,
//!   called once the new image is in place (argv is on the new stack).
//! - `sched_process_exit(struct task_struct *p, ...)`, called for every
//!   exiting thread after `signal->live` was decremented: 0 means the whole
//!   process is gone.

use agent_common::{
    EventKind, ExitEvent, ForkEvent, WatchedProc,
    config::{CONFIG_DISCOVER_EXEC, WATCH_PENDING, WATCH_ROOT},
    event::{
        EVENT_UNWATCHED, EXEC_ARGV_MAX, EXEC_ARGV_TRUNCATED, EXEC_CWD_TRUNCATED, EXEC_EXE_TRUNCATED, EXEC_FILENAME_MAX,
        EXEC_FILENAME_TRUNCATED, EXEC_INTERP_TRUNCATED, ExecEvent, ExecRecord, FD_INET_SOCKET, FD_NONE, FD_SOCKET,
        PATH_MAX,
    },
    kill::KILL_INTERPRETER,
    probe_errors::{Probe, Reason},
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_buf},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};

use crate::{
    emit::{WAKE_NOW, probe_error, send, send_bytes},
    kernel::{current_task, fd_file, fd_kind, file_identity, file_mode, file_path, fill_header, read, resolve_path},
    maps::{EXEC_SCRATCH, WATCHED, config_flags, offset, offsets, watched},
    probes::{kill, stdio},
};

/// Events of a pending process are for discovery, not for the stream.
#[inline(always)]
fn unwatched_flag(w: &WatchedProc) -> u32 {
    if w.flags & WATCH_PENDING != 0 {
        EVENT_UNWATCHED
    } else {
        0
    }
}

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> u32 {
    if try_fork(&ctx).is_err() {
        // The child of a watched process could not be read: it escapes.
        probe_error(Probe::Fork, Reason::KernelRead);
    }
    0
}

fn try_fork(ctx: &BtfTracePointContext) -> Result<(), i64> {
    // The caller of fork/clone is `current`.
    let Some(parent) = watched(current_tgid()) else {
        return Ok(());
    };
    let child: *const u8 = ctx.arg(1);
    let o = offsets();
    let child_pid: u32 = read(child, &o.task_pid)?;
    let child_tgid: u32 = read(child, &o.task_tgid)?;
    if child_pid != child_tgid {
        // A new thread of the same process: already covered by its tgid.
        return Ok(());
    }
    let kind = EventKind::Fork as u32;
    let pending = parent.flags & WATCH_PENDING;
    if WATCHED
        .insert(
            child_tgid,
            WatchedProc {
                server: parent.server,
                flags: pending,
            },
            0,
        )
        .is_err()
    {
        // Map full: the child escapes in-kernel tracking. Counted as what it
        // is (not as ring loss): userspace logs and alerts it.
        probe_error(Probe::Fork, Reason::WatchedFull);
    }
    let mut ev = ForkEvent {
        // SAFETY: a header of plain integers: all zeroes is a valid value.
        header: unsafe { core::mem::zeroed() },
        child_tgid,
        _pad: 0,
    };
    fill_header(&mut ev.header, kind, parent.server, unwatched_flag(&parent));
    send(&ev, parent.server, kind, WAKE_NOW);
    Ok(())
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(_ctx: BtfTracePointContext) -> u32 {
    if try_exit().is_err() {
        // Whether the process is gone is unknown: its exit may not be reported.
        probe_error(Probe::Exit, Reason::KernelRead);
    }
    0
}

fn try_exit() -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(w) = watched(tgid) else {
        return Ok(());
    };
    let o = offsets();
    let task = current_task();
    let signal: *const u8 = read(task, &o.task_signal)?;
    let live: i32 = read(signal, &o.signal_live)?;
    if live != 0 {
        // Other threads of the process are still running.
        return Ok(());
    }
    let _ = WATCHED.remove(tgid);
    let kind = EventKind::Exit as u32;
    let mut ev = ExitEvent {
        // SAFETY: a header of plain integers: all zeroes is a valid value.
        header: unsafe { core::mem::zeroed() },
        exit_code: read::<u32>(task, &o.task_exit_code).unwrap_or(0),
        _pad: 0,
    };
    fill_header(&mut ev.header, kind, w.server, unwatched_flag(&w));
    send(&ev, w.server, kind, WAKE_NOW);
    Ok(())
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> u32 {
    if try_exec(&ctx).is_err() {
        probe_error(Probe::Exec, Reason::KernelRead);
    }
    0
}

fn try_exec(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let tgid = current_tgid();
    let (server, flags) = match watched(tgid) {
        Some(w) => {
            // A root's stdio is its server's wire (a child's may be a pipe
            // to its parent: not the conversation).
            if w.flags & WATCH_ROOT != 0 {
                stdio::register_current();
            }
            (w.server, unwatched_flag(&w))
        }
        // Unwatched: only when discovery rules exist (exec is rare enough).
        // Mark it pending so what it forks before userspace has matched it
        // is followed too.
        None if config_flags() & CONFIG_DISCOVER_EXEC != 0 => {
            let pending = WatchedProc {
                server: 0,
                flags: WATCH_PENDING,
            };
            if WATCHED.insert(tgid, pending, 0).is_err() {
                probe_error(Probe::Exec, Reason::WatchedFull);
            }
            stdio::remember_current(tgid);
            (0, EVENT_UNWATCHED)
        }
        None => return Ok(()),
    };
    let kind = EventKind::Exec as u32;
    let Some(rec) = EXEC_SCRATCH.get_ptr_mut(0) else {
        probe_error(Probe::Exec, Reason::Scratch);
        return Ok(());
    };
    // SAFETY: this CPU's scratch value, valid for the run and used by
    // nothing else meanwhile.
    let rec: &mut ExecRecord = unsafe { &mut *rec };
    let o = offsets();
    let ev: &mut ExecEvent = &mut rec.event;
    fill_header(&mut ev.header, kind, server, flags);
    ev.old_pid = ctx.arg::<u64>(1) as u32;
    ev.flags = 0;

    // Path given to exec, and the interpreter when binfmt_script or binfmt_misc
    // replaced it (bprm->interp differs from bprm->filename for scripts).
    let bprm: *const u8 = ctx.arg(2);
    let filename: *const u8 = read(bprm, &o.binprm_filename).unwrap_or(core::ptr::null());
    let interp: *const u8 = read(bprm, &o.binprm_interp).unwrap_or(core::ptr::null());
    let (name_buf, rest) = rec.data.split_at_mut(EXEC_FILENAME_MAX);
    let (interp_buf, rest) = rest.split_at_mut(EXEC_FILENAME_MAX);
    ev.filename_len = read_kstr(filename, name_buf, &mut ev.flags, EXEC_FILENAME_TRUNCATED);
    ev.interp_len = if interp.is_null() || interp == filename {
        0
    } else {
        read_kstr(interp, interp_buf, &mut ev.flags, EXEC_INTERP_TRUNCATED)
    };

    // The file really executed (the interpreter for a script), its links
    // (0: memfd or deleted: fileless), the working directory, fds 0-2.
    ev.exe_len = 0;
    ev.cwd_len = 0;
    ev.exe_nlink = u32::MAX;
    let bfile: *const u8 = read(bprm, &o.binprm_file).unwrap_or(core::ptr::null());
    if !bfile.is_null() {
        if let Some((n, cut)) = resolve_path(file_path(bfile), &mut rest[..PATH_MAX]) {
            ev.exe_len = n as u32;
            if cut {
                ev.flags |= EXEC_EXE_TRUNCATED;
            }
        }
        ev.exe_nlink = read::<*const u8>(bfile, &o.file_inode)
            .and_then(|inode| read::<u32>(inode, &o.inode_nlink))
            .unwrap_or(u32::MAX);
    }
    let exe_len = (ev.exe_len as usize) & (PATH_MAX - 1);
    let fs: *const u8 = read(current_task(), &o.task_fs).unwrap_or(core::ptr::null());
    if !fs.is_null() {
        // SAFETY: pointer arithmetic only; resolve_path reads through
        // bpf_probe_read_kernel, which checks the address.
        let pwd = unsafe { fs.add(offset(&o.fs_pwd) as usize) };
        if let Some((n, cut)) = resolve_path(pwd, &mut rest[exe_len..exe_len + PATH_MAX]) {
            ev.cwd_len = n as u32;
            if cut {
                ev.flags |= EXEC_CWD_TRUNCATED;
            }
        }
    }
    for fd in 0..3usize {
        ev.stdio[fd] = fd_file(fd as u64).map(|f| fd_kind(file_mode(f))).unwrap_or(FD_NONE);
        // TCP or UDP, from the socket itself: userspace reading /proc
        // afterwards races the process (a killed shell has no fds left).
        if ev.stdio[fd] == FD_SOCKET && kill::inet_fd(fd as u64) {
            ev.stdio[fd] = FD_INET_SOCKET;
        }
    }
    ev.stdio[3] = 0;
    // The kill layer, on the binary really executed: a fileless image, or a
    // shell or interpreter wired to a socket (a reverse shell), dies before
    // its first instruction. A process held for discovery is not a server yet.
    let kill_flags = if flags == 0 { kill::flags(server) } else { 0 };
    if kill_flags != 0 {
        let wired = ev.stdio[0] == FD_INET_SOCKET || ev.stdio[1] == FD_INET_SOCKET;
        // A program outside the declared set, by the identity of the file
        // really executed (a script's interpreter).
        let (ino, dev) = if bfile.is_null() {
            (0, 0)
        } else {
            file_identity(bfile).unwrap_or((0, 0))
        };
        if ev.exe_nlink == 0
            || (wired && kill::path_class(0, rest.as_ptr(), ev.exe_len as usize) == KILL_INTERPRETER)
            || kill::program_outside(server, kill_flags, ino, dev)
        {
            ev.header.flags |= kill::kill_current();
        }
    }
    let argv_at = (ev.exe_len as usize + ev.cwd_len as usize) & (2 * PATH_MAX - 1);
    let argv_buf = &mut rest[argv_at..argv_at + EXEC_ARGV_MAX];

    // argv lives between mm->arg_start and mm->arg_end of the new image.
    ev.argv_len = 0;
    ev.argv_full_len = 0;
    let mm: *const u8 = read(current_task(), &o.task_mm).unwrap_or(core::ptr::null());
    if !mm.is_null() {
        let start: u64 = read(mm, &o.mm_arg_start).unwrap_or(0);
        let end: u64 = read(mm, &o.mm_arg_end).unwrap_or(0);
        if end > start {
            let full = end - start;
            let mut n = full as usize;
            if n > EXEC_ARGV_MAX {
                n = EXEC_ARGV_MAX;
                ev.flags |= EXEC_ARGV_TRUNCATED;
            }
            // SAFETY: the helper checks the user pointer; `n` bytes fit argv_buf.
            if unsafe { bpf_probe_read_user_buf(start as *const u8, &mut argv_buf[..n]) }.is_ok() {
                ev.argv_len = n as u32;
            } else {
                ev.flags |= EXEC_ARGV_TRUNCATED;
                probe_error(Probe::Exec, Reason::UserRead);
            }
            ev.argv_full_len = full as u32;
        }
    }

    let len = core::mem::size_of::<ExecEvent>()
        + 2 * EXEC_FILENAME_MAX
        + ev.exe_len as usize
        + ev.cwd_len as usize
        + ev.argv_len as usize;
    // SAFETY: the scratch record is `size_of::<ExecRecord>()` bytes of plain
    // integers, valid for the run.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            rec as *const ExecRecord as *const u8,
            core::mem::size_of::<ExecRecord>(),
        )
    };
    if len <= bytes.len() {
        send_bytes(&bytes[..len], server, kind, WAKE_NOW);
    }
    Ok(())
}

/// Copies a kernel NUL-terminated string; returns its length without the NUL.
#[inline(always)]
fn read_kstr(src: *const u8, dst: &mut [u8], flags: &mut u32, truncated: u32) -> u32 {
    if src.is_null() {
        return 0;
    }
    let cap = dst.len();
    // SAFETY: the helper checks the kernel pointer and writes at most
    // `dst.len()` bytes.
    match unsafe { bpf_probe_read_kernel_str_bytes(src, dst) } {
        Ok(s) => {
            // A string that filled the buffer (NUL included) may have been cut.
            if s.len() + 1 >= cap {
                *flags |= truncated;
            }
            s.len() as u32
        }
        Err(_) => 0,
    }
}
