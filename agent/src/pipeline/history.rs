//! The files each server wrote, with when: the one write history
//! write-then-exec is judged from (an exec of a file the same server wrote
//! shortly before is a dropper's signature). Bounded in time and size.

use std::collections::{HashMap, VecDeque};

#[derive(Default)]
pub struct WriteHistory {
    at: HashMap<(u32, String), u64>,
    order: VecDeque<(u32, String)>,
}

impl WriteHistory {
    /// How long a write makes a later exec suspicious.
    pub const WINDOW_NS: u64 = 600 * 1_000_000_000;
    /// Files remembered at most (the oldest are forgotten first).
    const MAX: usize = 16384;

    pub fn record(&mut self, server: u32, path: &str, ktime_ns: u64) {
        let key = (server, path.to_owned());
        if self.at.insert(key.clone(), ktime_ns).is_none() {
            self.order.push_back(key);
            if self.order.len() > Self::MAX
                && let Some(old) = self.order.pop_front()
            {
                self.at.remove(&old);
            }
        }
    }

    /// Whether `server` wrote `path` within the window before `now`.
    pub fn recent(&self, server: u32, path: &str, now: u64) -> bool {
        self.at
            .get(&(server, path.to_owned()))
            .is_some_and(|&t| now.saturating_sub(t) <= Self::WINDOW_NS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_counts_for_ten_minutes_and_for_its_server_only() {
        let mut h = WriteHistory::default();
        h.record(1, "/tmp/x", 1_000);
        assert!(h.recent(1, "/tmp/x", 1_000 + WriteHistory::WINDOW_NS));
        assert!(!h.recent(1, "/tmp/x", 1_001 + WriteHistory::WINDOW_NS), "too old");
        assert!(!h.recent(2, "/tmp/x", 2_000), "another server's write");
    }
}
