//! `agent.event_loss`: what the agent could not see, folded into at most one
//! alert per interval so a SOC learns of the loss without an alert storm.
//! Counts are kept per (server, event kind) for a full ring, per
//! (probe, reason) for the probes' own drops, per sink for the alerts a sink
//! dropped, and reset once reported.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Alert, AlertFactory, rules};

/// At most one loss alert per this many nanoseconds.
pub const INTERVAL_NS: u64 = 10_000_000_000;

/// Loss counted since the last `agent.event_loss`.
#[derive(Debug, Default)]
pub struct LossFold {
    /// (server name or "-", event kind) -> records the kernel could not queue.
    ring: BTreeMap<(String, &'static str), u64>,
    /// (probe, reason) -> records the probes dropped or degraded.
    probes: BTreeMap<(&'static str, &'static str), u64>,
    /// (what, reason) -> records lost in the agent itself (undecodable
    /// records, event lines it could not write).
    agent: BTreeMap<(&'static str, &'static str), u64>,
    /// sink -> alerts it dropped.
    sinks: BTreeMap<String, u64>,
    /// When the last alert was raised (kernel ns), `None` before the first.
    last: Option<u64>,
}

impl LossFold {
    pub fn ring(&mut self, server: Option<&str>, kind: &'static str, n: u64) {
        *self.ring.entry((server.unwrap_or("-").to_owned(), kind)).or_default() += n;
    }

    pub fn probe(&mut self, probe: &'static str, reason: &'static str, n: u64) {
        *self.probes.entry((probe, reason)).or_default() += n;
    }

    pub fn agent(&mut self, what: &'static str, reason: &'static str, n: u64) {
        *self.agent.entry((what, reason)).or_default() += n;
    }

    pub fn sink(&mut self, sink: &str, n: u64) {
        *self.sinks.entry(sink.to_owned()).or_default() += n;
    }

    fn total(&self) -> u64 {
        self.ring
            .values()
            .chain(self.probes.values())
            .chain(self.agent.values())
            .chain(self.sinks.values())
            .sum()
    }

    /// The alert for everything counted, when there is loss and the last
    /// alert is at least [`INTERVAL_NS`] old; the counts start again.
    pub fn due(&mut self, factory: &AlertFactory, now_ns: u64) -> Option<Alert> {
        let total = self.total();
        if total == 0 || self.last.is_some_and(|l| now_ns.saturating_sub(l) < INTERVAL_NS) {
            return None;
        }
        let ring: Vec<_> = std::mem::take(&mut self.ring)
            .into_iter()
            .map(|((server, kind), lost)| json!({ "server": server, "event_kind": kind, "lost": lost }))
            .collect();
        let probes: Vec<_> = std::mem::take(&mut self.probes)
            .into_iter()
            .map(|((probe, reason), lost)| json!({ "probe": probe, "reason": reason, "lost": lost }))
            .collect();
        let agent: Vec<_> = std::mem::take(&mut self.agent)
            .into_iter()
            .map(|((what, reason), lost)| json!({ "what": what, "reason": reason, "lost": lost }))
            .collect();
        let sinks: Vec<_> = std::mem::take(&mut self.sinks)
            .into_iter()
            .map(|(sink, dropped)| json!({ "sink": sink, "dropped": dropped }))
            .collect();
        let since = self.last.replace(now_ns);
        let mut a = factory.raise(
            &rules::AGENT_EVENT_LOSS,
            now_ns,
            format!("mcpwatch lost or degraded {total} records: what watched servers did is partly unseen"),
        );
        a.pid = std::process::id();
        a.count = total;
        a.evidence = json!({
            "lost": total,
            "since_ktime_ns": since,
            "ring": ring,
            "probes": probes,
            "agent": agent,
            "sinks": sinks,
        });
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::events::Clock;

    #[test]
    fn loss_folds_into_one_alert_per_interval_with_its_counts() {
        let f = AlertFactory::new(Clock::new());
        let mut fold = LossFold::default();
        assert!(fold.due(&f, 1).is_none(), "no loss, no alert");
        fold.ring(Some("burst"), "file", 5);
        fold.ring(Some("burst"), "file", 2);
        fold.probe("net", "user_read", 1);
        let a = fold.due(&f, 100).expect("first loss is reported at once");
        assert_eq!(a.rule, "agent.event_loss");
        assert_eq!(a.severity, crate::alerts::Severity::High);
        assert_eq!(a.count, 8);
        assert_eq!(
            a.evidence["ring"][0],
            json!({ "server": "burst", "event_kind": "file", "lost": 7 })
        );
        assert_eq!(a.evidence["probes"][0]["reason"], "user_read");
        fold.ring(None, "net", 3);
        fold.agent("events_file", "cap", 4);
        fold.sink("siem", 2);
        assert!(fold.due(&f, 100 + INTERVAL_NS - 1).is_none(), "rate-limited");
        let b = fold.due(&f, 100 + INTERVAL_NS).expect("next interval");
        assert_eq!(b.count, 9, "counts since the last alert only");
        assert_eq!(b.evidence["sinks"][0], json!({ "sink": "siem", "dropped": 2 }));
        assert_eq!(b.evidence["ring"][0]["server"], "-");
        assert_eq!(b.evidence["agent"][0]["lost"], 4);
        assert!(fold.due(&f, 200 + 3 * INTERVAL_NS).is_none(), "counts reset");
    }
}
