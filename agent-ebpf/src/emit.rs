//! Ring-buffer output with loss accounting: a failed write is never silent.

use agent_common::LossKey;

use crate::maps::{EVENTS, LOSS};

/// Counts one lost event for (server, kind) on this CPU.
#[inline(always)]
pub fn count_loss(server: u32, kind: u32) {
    let key = LossKey { server, kind };
    match LOSS.get_ptr_mut(key) {
        Some(n) => unsafe { *n += 1 },
        None => {
            let _ = LOSS.insert(key, 1u64, 0);
        }
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
