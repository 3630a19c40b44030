//! The one place alerts are made: one id sequence for the whole agent, the
//! time, the host and the rule's catalogue severity and technique. The
//! policy, the MCP layer and the agent itself raise alerts through clones of
//! one factory (they share the sequence).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use super::{Alert, AlertAncestor, hostname, rules::RuleId};
use crate::output::events::Clock;

#[derive(Clone, Debug)]
pub struct AlertFactory {
    clock: Clock,
    host: Arc<str>,
    seq: Arc<AtomicU64>,
}

/// The process an alert is about.
#[derive(Clone, Debug, Default)]
pub struct Subject {
    pub server: Option<String>,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub exe: String,
    pub argv: Vec<String>,
    /// Nearest first: (pid, exe).
    pub ancestry: Vec<(u32, String)>,
    /// MCP tool call in flight.
    pub tool: Option<String>,
    pub call_id: Option<String>,
}

impl AlertFactory {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            host: hostname().into(),
            seq: Arc::default(),
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Alerts made so far, by every clone.
    pub fn made(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    /// An alert of `rule` about what happened at `ktime_ns`: id
    /// `<ktime>-<sequence>`, unique on this host for the agent's life.
    pub fn raise(&self, rule: RuleId, ktime_ns: u64, summary: String) -> Alert {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        Alert::of_rule(
            rule,
            format!("{ktime_ns}-{n}"),
            self.clock.rfc3339(ktime_ns),
            ktime_ns,
            summary,
            self.host.to_string(),
        )
    }

    /// [`AlertFactory::raise`] about a process.
    pub fn raise_about(&self, rule: RuleId, ktime_ns: u64, summary: String, s: Subject) -> Alert {
        let mut a = self.raise(rule, ktime_ns, summary);
        a.server = s.server;
        a.pid = s.pid;
        a.ppid = s.ppid;
        a.uid = s.uid;
        a.exe = s.exe;
        a.argv = s.argv;
        a.ancestry = s
            .ancestry
            .into_iter()
            .map(|(pid, exe)| AlertAncestor { pid, exe })
            .collect();
        a.tool = s.tool;
        a.call_id = s.call_id;
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{Severity, rules};

    #[test]
    fn clones_share_one_sequence_and_rules_bring_their_severity_and_technique() {
        let f = AlertFactory::new(Clock::new());
        let g = f.clone();
        let a = f.raise(&rules::CRED_SSH, 7, "x".into());
        let b = g.raise(&rules::MCP_RUG_PULL_ADDED, 7, "y".into());
        assert_eq!((a.id.as_str(), b.id.as_str()), ("7-1", "7-2"));
        assert_eq!(f.made(), 2);
        assert_eq!(a.severity, Severity::High);
        assert_eq!(a.mitre.unwrap().id, "T1552.004");
        assert_eq!(b.severity, Severity::Medium);
        assert_eq!(b.rule, "mcp.rug_pull.added");
    }
}
