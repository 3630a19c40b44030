//! Assembling a [`SysEvent`] record in per-CPU scratch: path1 | path2 | data,
//! contiguous after the fixed part, each start masked so the verifier can
//! bound it. A push that fails is counted against the record's probe.

use agent_common::{
    EventKind,
    event::{DATA_MAX, PATH_MAX, SYS_PATH_TRUNCATED, SYS_USER_MEMORY, SysEvent, SysRecord},
    probe_errors::{Probe, Reason},
};
use aya_ebpf::helpers::{bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_buf, bpf_probe_read_user_str_bytes};

use crate::{
    emit::{probe_error, send_bytes, wake_flags},
    kernel::{fill_header, resolve_path},
    maps::SYS_SCRATCH,
};

/// The syscall (or hook) a record reports: its number, the server of the
/// watched process, the header's `EVENT_*` flags and six argument words.
#[derive(Clone, Copy)]
pub struct Call {
    pub nr: u32,
    pub server: u32,
    pub event_flags: u32,
    pub args: [u64; 6],
}

pub struct Rec {
    rec: *mut SysRecord,
    probe: Probe,
}

const SLOT_MASK: usize = 2 * PATH_MAX - 1;

/// The probe a record of `kind` comes from.
#[inline(always)]
fn probe_of(kind: EventKind) -> Probe {
    match kind {
        EventKind::File => Probe::File,
        EventKind::Net => Probe::Net,
        EventKind::Dns => Probe::Dns,
        EventKind::Stdio => Probe::Stdio,
        _ => Probe::Risky,
    }
}

impl Rec {
    /// A fresh record for the current task and the call `st`.
    #[inline(always)]
    pub fn new(kind: EventKind, st: &Call, ret: i64) -> Option<Rec> {
        let probe = probe_of(kind);
        let Some(rec) = SYS_SCRATCH.get_ptr_mut(0) else {
            probe_error(probe, Reason::Scratch);
            return None;
        };
        // SAFETY: `rec` points to this CPU's scratch value, valid for the
        // program's run and used by nothing else meanwhile.
        let ev = unsafe { &mut (*rec).event };
        fill_header(&mut ev.header, kind as u32, st.server, st.event_flags);
        ev.nr = st.nr;
        ev.flags = 0;
        ev.ret = ret;
        ev.args = st.args;
        // Field by field, each a volatile store: a struct assignment, or
        // plain stores LLVM merges, become calls to a byte-wise `memset`
        // subprogram (26 and 16 bytes here: a loop of ~170 instructions
        // per record, seen in `bpftool prog dump xlated`). The address bytes
        // are read only for a family.
        zero!(
            ev.addr.family,
            ev.addr.port,
            ev.addr.sock_type,
            ev.addr.flags,
            ev.stream_offset,
            ev.mode,
            ev.len1,
            ev.len2,
            ev.data_len,
            ev.data_missing,
            ev.local_port,
            ev.target_pid,
            ev.file_ino,
            ev.file_dev
        );
        Some(Rec { rec, probe })
    }

    #[inline(always)]
    pub fn ev(&mut self) -> &mut SysEvent {
        // SAFETY: see `new`; `&mut self` keeps the borrow unique.
        unsafe { &mut (*self.rec).event }
    }

    /// Counts a push or read this record had to do without.
    #[inline(always)]
    pub fn error(&self, reason: Reason) {
        probe_error(self.probe, reason);
    }

    #[inline(always)]
    fn tail(&mut self) -> usize {
        let ev = self.ev();
        ev.len1 as usize + ev.len2 as usize + ev.data_len as usize
    }

    /// The free space after what was pushed, at most `max` bytes.
    #[inline(always)]
    fn slot(&mut self, max: usize) -> &mut [u8] {
        let off = self.tail() & SLOT_MASK;
        // SAFETY: see `new`; `off` is masked below `2 * PATH_MAX` and `max`
        // is at most `DATA_MAX`, so the range lies inside `data`.
        unsafe { &mut (&mut (*self.rec).data)[off..off + max] }
    }

    /// First byte of path 1 (0 when there is none), as the record holds it:
    /// never a second read of user memory that could differ from the first.
    #[inline(always)]
    pub fn path1_first(&mut self) -> u8 {
        if self.ev().len1 == 0 {
            return 0;
        }
        // SAFETY: see `new`; index 0 of the data array.
        unsafe { (*self.rec).data[0] }
    }

    /// Where path 1 lies in the record, and its length.
    #[inline(always)]
    pub fn path1(&mut self) -> (*const u8, usize) {
        let n = self.ev().len1 as usize;
        // SAFETY: see `new`; path 1 starts the data array.
        (unsafe { (*self.rec).data.as_ptr() }, n)
    }

    /// Pushes a NUL-terminated user string as path 1 or 2; returns its length.
    /// Path 1 from user memory flags the record `SYS_USER_MEMORY`.
    #[inline(always)]
    pub fn push_user_str(&mut self, ptr: u64, second: bool, trunc_flag: u32) -> usize {
        if ptr == 0 {
            return 0;
        }
        let slot = self.slot(PATH_MAX);
        // SAFETY: the helper checks the user pointer and writes at most
        // `slot.len()` bytes into the slice.
        let n = match unsafe { bpf_probe_read_user_str_bytes(ptr as *const u8, slot) } {
            Ok(s) => s.len(),
            Err(_) => {
                self.error(Reason::UserRead);
                return 0;
            }
        };
        if n + 1 >= PATH_MAX {
            self.ev().flags |= trunc_flag;
        }
        if !second {
            self.ev().flags |= SYS_USER_MEMORY;
        }
        self.set_len(n, second);
        n
    }

    /// Pushes a NUL-terminated kernel string (a copy the kernel already made
    /// of a path, not the caller's memory) as path 1; returns its length.
    #[inline(always)]
    pub fn push_kernel_str(&mut self, ptr: *const u8, trunc_flag: u32) -> usize {
        if ptr.is_null() {
            return 0;
        }
        let slot = self.slot(PATH_MAX);
        // SAFETY: the helper checks the kernel pointer and writes at most
        // `slot.len()` bytes into the slice.
        let n = match unsafe { bpf_probe_read_kernel_str_bytes(ptr, slot) } {
            Ok(s) => s.len(),
            Err(_) => {
                self.error(Reason::KernelRead);
                return 0;
            }
        };
        if n + 1 >= PATH_MAX {
            self.ev().flags |= trunc_flag;
        }
        self.set_len(n, false);
        n
    }

    /// Pushes the kernel-resolved path of a `struct path *` as path 1 or 2.
    #[inline(always)]
    pub fn push_path(&mut self, path: *const u8, second: bool, trunc_flag: u32) -> usize {
        let slot = self.slot(PATH_MAX);
        let Some((n, cut)) = resolve_path(path, slot) else {
            self.error(Reason::PathUnresolved);
            return 0;
        };
        if cut {
            self.ev().flags |= trunc_flag;
        }
        self.set_len(n, second);
        n
    }

    /// Pushes a kernel-resolved path as data (the base directory of a relative path).
    /// A cut base cuts the path joined to it: flagged on path 1.
    #[inline(always)]
    pub fn push_path_data(&mut self, path: *const u8) -> usize {
        let slot = self.slot(PATH_MAX);
        let Some((n, cut)) = resolve_path(path, slot) else {
            self.error(Reason::PathUnresolved);
            return 0;
        };
        if cut {
            self.ev().flags |= SYS_PATH_TRUNCATED;
        }
        self.ev().data_len = n as u32;
        n
    }

    /// Pushes up to `DATA_MAX` bytes of user memory as data; returns the count.
    #[inline(always)]
    pub fn push_user_data(&mut self, ptr: u64, len: usize) -> usize {
        let n = if len > DATA_MAX { DATA_MAX } else { len };
        if n == 0 {
            return 0;
        }
        let slot = self.slot(DATA_MAX);
        // SAFETY: the helper checks the user pointer; `n <= DATA_MAX` bytes
        // fit the slot.
        if unsafe { bpf_probe_read_user_buf(ptr as *const u8, &mut slot[..n]) }.is_err() {
            self.error(Reason::UserRead);
            return 0;
        }
        self.ev().data_len = n as u32;
        n
    }

    #[inline(always)]
    fn set_len(&mut self, n: usize, second: bool) {
        if second {
            self.ev().len2 = n as u16;
        } else {
            self.ev().len1 = n as u16;
        }
    }

    /// Sends the record; counts the loss when the ring buffer is full.
    #[inline(always)]
    pub fn send(&mut self) {
        let len = core::mem::size_of::<SysEvent>() + self.tail();
        let (server, kind, ktime) = {
            let h = &self.ev().header;
            (h.server, h.kind, h.ktime_ns)
        };
        // SAFETY: the scratch record is `size_of::<SysRecord>()` bytes of
        // plain integers, valid for the program's run.
        let bytes = unsafe { core::slice::from_raw_parts(self.rec as *const u8, core::mem::size_of::<SysRecord>()) };
        if len <= bytes.len() {
            send_bytes(&bytes[..len], server, kind, wake_flags(ktime));
        }
    }
}
