//! Kernel-side drops other than a full ring: the `PROBE_ERRORS` per-CPU
//! counters (probe x reason, see `agent_common::probe_errors`), read as
//! deltas since the last poll so every drop is reported once.

use agent_common::probe_errors::{PROBE_ERRORS_LEN, Probe, Reason, slot};
use aya::maps::{MapData, PerCpuArray};

/// One counter that moved: (probe, reason, new count since the last poll).
pub type ProbeErrorDelta = (&'static str, &'static str, u64);

/// Where the counters come from: the kernel map, or a table in unit tests.
pub trait ProbeErrorSource {
    /// The sum over CPUs of slot `index`, `None` when unreadable.
    fn total(&self, index: u32) -> Option<u64>;
}

impl ProbeErrorSource for PerCpuArray<MapData, u64> {
    fn total(&self, index: u32) -> Option<u64> {
        self.get(&index, 0).ok().map(|per_cpu| per_cpu.iter().sum())
    }
}

/// The counters and what was already reported.
pub struct ProbeErrors<S = PerCpuArray<MapData, u64>> {
    source: S,
    seen: [u64; PROBE_ERRORS_LEN as usize],
}

impl<S: ProbeErrorSource> ProbeErrors<S> {
    pub fn new(source: S) -> Self {
        Self {
            source,
            seen: [0; PROBE_ERRORS_LEN as usize],
        }
    }

    /// What was reported, by slot (a kept `PROBE_ERRORS` map goes on
    /// counting across agents: the next one starts from here).
    pub fn seen(&self) -> &[u64] {
        &self.seen
    }

    /// Starts from what a previous agent reported on the same map.
    pub fn set_seen(&mut self, seen: &[u64]) {
        for (s, v) in self.seen.iter_mut().zip(seen) {
            *s = *v;
        }
    }

    /// Counters that moved since the last poll: (probe name, reason name,
    /// new count), names as in `mcpwatch_probe_errors_total{probe,reason}`.
    pub fn poll(&mut self) -> Vec<ProbeErrorDelta> {
        let mut out = Vec::new();
        for index in 0..PROBE_ERRORS_LEN {
            let Some(total) = self.source.total(index) else {
                continue;
            };
            let seen = &mut self.seen[index as usize];
            if total > *seen {
                if let Some((probe, reason)) = slot(index) {
                    out.push((Probe::name(probe), Reason::name(reason), total - *seen));
                }
                *seen = total;
            }
        }
        out
    }

    /// Everything counted since the agent started, by (probe, reason), for
    /// the status.
    pub fn totals(&self) -> Vec<ProbeErrorDelta> {
        (0..PROBE_ERRORS_LEN)
            .filter(|&i| self.seen[i as usize] > 0)
            .filter_map(|i| slot(i).map(|(p, r)| (p.name(), r.name(), self.seen[i as usize])))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use agent_common::probe_errors::index;

    use super::*;

    struct Table(RefCell<Vec<u64>>);

    impl ProbeErrorSource for &Table {
        fn total(&self, index: u32) -> Option<u64> {
            self.0.borrow().get(index as usize).copied()
        }
    }

    #[test]
    fn each_drop_is_reported_once_by_name() {
        let table = Table(RefCell::new(vec![0; PROBE_ERRORS_LEN as usize]));
        let mut errors = ProbeErrors::new(&table);
        assert!(errors.poll().is_empty());
        table.0.borrow_mut()[index(Probe::Net, Reason::SockaddrUnreadable) as usize] = 2;
        table.0.borrow_mut()[index(Probe::Fork, Reason::MapFull) as usize] = 1;
        assert_eq!(
            errors.poll(),
            [("net", "sockaddr_unreadable", 2), ("fork", "map_full", 1)]
        );
        assert!(errors.poll().is_empty(), "reported again");
        table.0.borrow_mut()[index(Probe::Net, Reason::SockaddrUnreadable) as usize] = 5;
        assert_eq!(errors.poll(), [("net", "sockaddr_unreadable", 3)]);
        assert_eq!(
            errors.totals(),
            [("net", "sockaddr_unreadable", 5), ("fork", "map_full", 1)]
        );
    }
}
