//! Bytes a watched process reads from stdin (fd 0) and writes to stdout
//! (fd 1), when those are pipes or sockets: the MCP conversation of a stdio
//! server. Sent in chunks of at most `DATA_MAX` bytes with their offset in
//! the stream; what does not fit is counted in `data_missing`, never dropped
//! silently.

use agent_common::{
    EventKind,
    event::{FD_PIPE, FD_SOCKET, SYS_DATA_IN, SYS_DATA_TRUNCATED},
    syscalls::{READ, READV, WRITE, WRITEV},
};
use aya_ebpf::helpers::bpf_probe_read_user;

use crate::{
    kernel::{fd_file, fd_kind, file_mode},
    maps::{STDIO_CURSOR, STDIO_OFFSETS, Stash},
    probes::syscalls::record,
};

/// Chunks per syscall at most (`MAX_CHUNKS * DATA_MAX` bytes: 256 KiB).
const MAX_CHUNKS: usize = 32;
/// iovecs of readv/writev followed at most.
const MAX_IOV: usize = 8;

pub fn on_exit(st: &Stash, ret: i64, pid_tgid: u64) {
    if ret <= 0 {
        return;
    }
    let fd = st.args[0] as u32 as u64;
    let incoming = match (st.nr, fd) {
        (READ | READV, 0) => true,
        (WRITE | WRITEV, 1) => false,
        _ => return,
    };
    let Some(file) = fd_file(fd) else {
        return;
    };
    let kind = fd_kind(file_mode(file));
    if kind != FD_PIPE && kind != FD_SOCKET {
        return;
    }
    let key = (pid_tgid & 0xffff_ffff_0000_0000) | fd;
    let start = unsafe { STDIO_OFFSETS.get(key) }.copied().unwrap_or(0);
    let _ = STDIO_OFFSETS.insert(key, start + ret as u64, 0);
    let Some(cur) = STDIO_CURSOR.get_ptr_mut(0) else {
        return;
    };
    let cur = unsafe { &mut *cur };
    let Some(mut rec) = record(EventKind::Stdio, st, ret) else {
        return;
    };
    if incoming {
        rec.ev().flags |= SYS_DATA_IN;
    }
    let total = ret as u64;
    let vectored = st.nr == READV || st.nr == WRITEV;
    let niov = if vectored { st.args[2] } else { 1 };
    cur.iov = 0;
    cur.iov_off = 0;
    cur.done = 0;
    // One flat loop over chunks; the cursor goes through map memory so every
    // path reaches the next iteration in the same (opaque) state.
    for i in 0..MAX_CHUNKS + MAX_IOV {
        let iov = unsafe { core::ptr::read_volatile(&cur.iov) };
        let iov_off = unsafe { core::ptr::read_volatile(&cur.iov_off) };
        let done = unsafe { core::ptr::read_volatile(&cur.done) };
        if done >= total || iov >= niov || iov >= MAX_IOV as u64 {
            break;
        }
        let (base, len) = if vectored {
            let p = (st.args[1] + 16 * (iov & (MAX_IOV as u64 - 1))) as *const u64;
            let base: u64 = unsafe { bpf_probe_read_user(p) }.unwrap_or(0);
            let len: u64 = unsafe { bpf_probe_read_user(p.add(1)) }.unwrap_or(0);
            (base, len)
        } else {
            (st.args[1], total)
        };
        if iov_off >= len {
            cur.iov = iov + 1;
            cur.iov_off = 0;
            continue;
        }
        let want = len - iov_off;
        let want = if want > total - done { total - done } else { want };
        rec.ev().data_len = 0;
        rec.ev().offset = start + done;
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
    let done = unsafe { core::ptr::read_volatile(&cur.done) };
    if done < total && rec.ev().data_missing == 0 {
        // Unreadable user memory or too many iovecs: say what is missing.
        rec.ev().data_len = 0;
        rec.ev().offset = start + done;
        rec.ev().flags |= SYS_DATA_TRUNCATED;
        rec.ev().data_missing = (total - done) as u32;
        rec.send();
    }
}
