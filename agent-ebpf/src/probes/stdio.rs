//! Bytes a watched server reads from its stdin and writes to its stdout: the
//! MCP conversation of a stdio server. Sent in chunks of at most `DATA_MAX`
//! bytes with their offset in the stream; what does not fit is counted in
//! `data_missing`, never dropped silently.
//!
//! The wire is a channel, not a descriptor number: the pipes or sockets a
//! server's fds 0 and 1 were when it was launched (exec of a watched root;
//! for a process held for the discovery rules, kept in `STDIO_AT_EXEC` until
//! a rule makes it a server) or found (userspace registers them) go in
//! `STDIO_FILES` by inode number. Servers that move the wire to
//! other descriptors (mcp 2.x's `stdio_server()` dups them to fds >= 3 and
//! points 0 at /dev/null, 1 at stderr) are followed through dup, dup2, dup3
//! and fcntl(F_DUPFD*): a duplicate of a registered channel sets its fd's bit
//! in `STDIO_FDS`, the cheap pre-filter reads and writes pass before any
//! hash lookup. Descriptors that point elsewhere (stderr, a log file) are never
//! captured, whatever their number.

use agent_common::{
    EventKind,
    config::{STDIO_FDS_MAX, STDIO_IN, STDIO_OUT, StdioInodes},
    event::{FD_PIPE, FD_SOCKET, SYS_DATA_IN, SYS_DATA_TRUNCATED},
    probe_errors::{Probe, Reason},
    syscalls::{Op, READV, WRITEV, arg, lookup},
};
use aya_ebpf::helpers::bpf_probe_read_user;

use crate::{
    emit::probe_error,
    kernel::{fd_file, fd_kind, file_ino, file_mode},
    maps::{STDIO_AT_EXEC, STDIO_CURSOR, STDIO_FDS, STDIO_FILES, STDIO_OFFSETS},
    probes::syscalls::record,
    record::Call,
};

/// Descriptors above this are not followed as duplicates of the wire.
const FD_MAX: u32 = STDIO_FDS_MAX;

/// Whether a read or write on `fd` may move stdio bytes: fds 0 and 1, and
/// descriptors some watched process duplicated its wire onto. One array
/// read, no hash lookup: every other read/write on the host stops here.
#[inline(always)]
pub fn candidate_fd(fd: u64) -> bool {
    let fd = fd as u32;
    if fd <= 1 {
        return true;
    }
    if fd >= FD_MAX {
        return false;
    }
    STDIO_FDS.get(fd).is_some_and(|&c| c != 0)
}

/// The inode number of `file` when it is a pipe or a socket (what a wire is).
#[inline(always)]
fn wire_ino(file: *const u8) -> Option<u64> {
    let kind = fd_kind(file_mode(file));
    if kind != FD_PIPE && kind != FD_SOCKET {
        return None;
    }
    file_ino(file)
}

/// The stdio channel `file` is, as `STDIO_IN`/`STDIO_OUT` bits (0: none).
#[inline(always)]
fn channel(file: *const u8) -> u32 {
    // SAFETY: the value is copied out at once.
    wire_ino(file)
        .and_then(|ino| unsafe { STDIO_FILES.get(ino) }.copied())
        .unwrap_or(0)
}

/// Inode numbers of the current task's fds 0 and 1 when pipes or sockets.
#[inline(always)]
fn current_channels() -> StdioInodes {
    let ino = |fd: u64| fd_file(fd).and_then(wire_ino).unwrap_or(0);
    StdioInodes {
        stdin: ino(0),
        stdout: ino(1),
    }
}

#[inline(always)]
fn register(ino: u64, dir: u32) {
    if ino == 0 {
        return;
    }
    // SAFETY: the value is copied out at once.
    let old = unsafe { STDIO_FILES.get(ino) }.copied().unwrap_or(0);
    if old & dir == 0 && STDIO_FILES.insert(ino, old | dir, 0).is_err() {
        probe_error(Probe::Exec, Reason::MapFull);
    }
}

/// The exec of a watched root: its fds 0 and 1 are its server's wire.
#[inline(always)]
pub fn register_current() {
    let inos = current_channels();
    register(inos.stdin, STDIO_IN);
    register(inos.stdout, STDIO_OUT);
}

/// The exec of a process held for the discovery rules: keep its fds 0 and 1
/// aside until userspace decides.
#[inline(always)]
pub fn remember_current(tgid: u32) {
    let inos = current_channels();
    if (inos.stdin != 0 || inos.stdout != 0) && STDIO_AT_EXEC.insert(tgid, inos, 0).is_err() {
        probe_error(Probe::Exec, Reason::MapFull);
    }
}

/// Whether `file` is a channel remembered at the exec of pending `tgid`.
#[inline(always)]
fn remembered(file: *const u8, tgid: u32) -> bool {
    // SAFETY: the value is only read, within this program run.
    let Some(inos) = (unsafe { STDIO_AT_EXEC.get(tgid) }) else {
        return false;
    };
    wire_ino(file).is_some_and(|ino| ino != 0 && (ino == inos.stdin || ino == inos.stdout))
}

/// dup, dup2, dup3, fcntl(F_DUPFD*) returned `ret`: when the new descriptor
/// is a stdio channel, reads and writes on its number become candidates.
pub fn on_dup(ret: i64, tgid: u32) {
    if ret < 2 || ret >= FD_MAX as i64 {
        return;
    }
    let Some(file) = fd_file(ret as u64) else {
        return;
    };
    if channel(file) == 0 && !remembered(file, tgid) {
        return;
    }
    // One slot per fd: a plain store, no read-modify-write to race on.
    if let Some(slot) = STDIO_FDS.get_ptr_mut(ret as u32)
        // SAFETY: `slot` points into the array map's value, valid for the run.
        && unsafe { *slot } == 0
    {
        // SAFETY: as above; a plain u32 store.
        unsafe { *slot = 1 };
    }
}

/// Chunks per syscall at most (`MAX_CHUNKS * DATA_MAX` bytes: 256 KiB).
const MAX_CHUNKS: usize = 32;
/// iovecs of readv/writev followed at most.
const MAX_IOV: usize = 8;

pub fn on_exit(st: &Call, ret: i64, pid_tgid: u64) {
    if ret <= 0 {
        return;
    }
    let Some(sc) = lookup(st.nr) else {
        return;
    };
    let a = &st.args;
    let fd = arg(a, sc.fd) as u32 as u64;
    let (incoming, dir) = match sc.op {
        Op::Read => (true, STDIO_IN),
        Op::Write => (false, STDIO_OUT),
        _ => return,
    };
    let Some(file) = fd_file(fd) else {
        return;
    };
    if channel(file) & dir == 0 {
        return;
    }
    // One stream per process and direction, whichever fd carried it.
    let key = (pid_tgid & 0xffff_ffff_0000_0000) | if incoming { 0 } else { 1 };
    // SAFETY: the value is copied out at once; only this process's own
    // syscalls update its key.
    let start = unsafe { STDIO_OFFSETS.get(key) }.copied().unwrap_or(0);
    if STDIO_OFFSETS.insert(key, start + ret as u64, 0).is_err() {
        // Later chunks of this stream will carry wrong offsets.
        probe_error(Probe::Stdio, Reason::MapFull);
    }
    let Some(cur) = STDIO_CURSOR.get_ptr_mut(0) else {
        probe_error(Probe::Stdio, Reason::Scratch);
        return;
    };
    // SAFETY: this CPU's cursor, used by nothing else during the run.
    let cur = unsafe { &mut *cur };
    let Some(mut rec) = record(EventKind::Stdio, st, ret) else {
        return;
    };
    if incoming {
        rec.ev().flags |= SYS_DATA_IN;
    }
    let total = ret as u64;
    let vectored = st.nr == READV || st.nr == WRITEV;
    let buf = arg(a, sc.buf);
    let niov = if vectored { arg(a, sc.count) } else { 1 };
    crate::zero!(cur.iov, cur.iov_off, cur.done);
    // One flat loop over chunks; the cursor goes through map memory so every
    // path reaches the next iteration in the same (opaque) state.
    for i in 0..MAX_CHUNKS + MAX_IOV {
        // SAFETY: reads of this CPU's cursor fields through valid references.
        let iov = unsafe { core::ptr::read_volatile(&cur.iov) };
        // SAFETY: as above.
        let iov_off = unsafe { core::ptr::read_volatile(&cur.iov_off) };
        // SAFETY: as above.
        let done = unsafe { core::ptr::read_volatile(&cur.done) };
        if done >= total || iov >= niov || iov >= MAX_IOV as u64 {
            break;
        }
        let (base, len) = if vectored {
            let p = (buf + 16 * (iov & (MAX_IOV as u64 - 1))) as *const u64;
            // SAFETY: bpf_probe_read_user checks the user pointer.
            let base: u64 = unsafe { bpf_probe_read_user(p) }.unwrap_or(0);
            // SAFETY: as above.
            let len: u64 = unsafe { bpf_probe_read_user(p.wrapping_add(1)) }.unwrap_or(0);
            (base, len)
        } else {
            (buf, total)
        };
        if iov_off >= len {
            cur.iov = iov + 1;
            cur.iov_off = 0;
            continue;
        }
        let want = len - iov_off;
        let want = if want > total - done { total - done } else { want };
        rec.ev().data_len = 0;
        rec.ev().stream_offset = start + done;
        let n = rec.push_user_data(base + iov_off, want as usize) as u64;
        if n == 0 {
            break;
        }
        cur.iov_off = iov_off + n;
        cur.done = done + n;
        if i + 1 == MAX_CHUNKS + MAX_IOV && done + n < total {
            // Out of chunks: the rest of this syscall is not carried.
            rec.ev().flags |= SYS_DATA_TRUNCATED;
            rec.ev().data_missing = (total - done - n) as u32;
        }
        rec.send();
    }
    // SAFETY: see the loop.
    let done = unsafe { core::ptr::read_volatile(&cur.done) };
    if done < total && rec.ev().data_missing == 0 {
        // Unreadable user memory or too many iovecs: say what is missing.
        rec.ev().data_len = 0;
        rec.ev().stream_offset = start + done;
        rec.ev().flags |= SYS_DATA_TRUNCATED;
        rec.ev().data_missing = (total - done) as u32;
        rec.send();
    }
}
