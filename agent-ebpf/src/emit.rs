//! Ring-buffer output with loss accounting: a failed write is never silent.
//!
//! Wakeups are rationed: waking the reader costs about as much as the event
//! itself, and a reader that keeps up would be woken for every event. A
//! record wakes the reader only when no record woke it for `WAKE_GAP_NS`;
//! the others are submitted without a wakeup. The reader, once woken, polls
//! the ring every millisecond until it stays empty (`agent::run`), so nothing
//! waits much longer than that, and the ring (8 MiB) cannot fill between two
//! polls short of gigabytes per second. Asking the ring how full it is
//! (`bpf_ringbuf_query`) was measured: it reads the reader's position, a cache
//! line the reader keeps writing on another CPU, and cost more than the rest
//! of the decision. Process lifecycle records always wake it: pending
//! discovery decisions wait on them.

use agent_common::{
    LossKey,
    probe_errors::{Probe, Reason, index},
};
use aya_ebpf::bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};

use crate::maps::{EVENTS, LAST_WAKEUP, LOSS, PROBE_ERRORS};

/// At most one wakeup per this interval.
const WAKE_GAP_NS: u64 = 1_000_000;

/// Submit flags for a record made at `ktime_ns` (its header's boot-time
/// clock): see the module documentation.
#[inline(always)]
pub fn wake_flags(ktime_ns: u64) -> u64 {
    let Some(last) = LAST_WAKEUP.get_ptr_mut(0) else {
        return 0;
    };
    // Racy by design: two CPUs may both wake the reader once.
    // SAFETY: `last` points into the array map's value, valid for the program's run.
    if ktime_ns.wrapping_sub(unsafe { *last }) < WAKE_GAP_NS {
        return BPF_RB_NO_WAKEUP as u64;
    }
    // SAFETY: as above; a plain store of a u64.
    unsafe { *last = ktime_ns };
    BPF_RB_FORCE_WAKEUP as u64
}

/// Submit flags for a process lifecycle record: wake the reader now.
pub const WAKE_NOW: u64 = BPF_RB_FORCE_WAKEUP as u64;

/// Counts one lost event for (server, kind) on this CPU.
#[inline(always)]
pub fn count_loss(server: u32, kind: u32) {
    let key = LossKey { server, kind };
    match LOSS.get_ptr_mut(key) {
        // SAFETY: a per-CPU value: no other program touches it meanwhile.
        Some(n) => unsafe { *n += 1 },
        None => {
            let _ = LOSS.insert(key, 1u64, 0);
        }
    }
}

/// Counts one time `probe` gave up for `reason` on this CPU (see
/// `agent_common::probe_errors`).
#[inline(always)]
pub fn probe_error(probe: Probe, reason: Reason) {
    if let Some(n) = PROBE_ERRORS.get_ptr_mut(index(probe, reason)) {
        // SAFETY: a per-CPU array slot: no other program touches it meanwhile.
        unsafe { *n += 1 };
    }
}

/// Sends a fixed-size record, counting the loss when the ring buffer is full.
#[inline(always)]
pub fn send<T: 'static>(record: &T, server: u32, kind: u32, flags: u64) {
    if EVENTS.output::<T>(record, flags).is_err() {
        count_loss(server, kind);
    }
}

/// Sends the first `len` bytes of a scratch record.
#[inline(always)]
pub fn send_bytes(bytes: &[u8], server: u32, kind: u32, flags: u64) {
    if EVENTS.output::<[u8]>(bytes, flags).is_err() {
        count_loss(server, kind);
    }
}
