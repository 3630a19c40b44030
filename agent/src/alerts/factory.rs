//! The one place alerts are made: one id sequence for the whole agent, the
//! time, the host and the rule's catalogue severity and technique. The
//! policy, the MCP layer and the agent itself raise alerts through clones of
//! one factory (they share the sequence).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use super::{Alert, AlertAncestor, hostname, rules::RuleId};
use crate::{output::events::Clock, policy::activity::ProcContext};

#[derive(Clone, Debug)]
pub struct AlertFactory {
    clock: Clock,
    host: Arc<str>,
    seq: Arc<AtomicU64>,
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

    /// [`AlertFactory::raise`] about the process that acted, at its time.
    pub fn raise_about(&self, rule: RuleId, summary: String, ctx: &ProcContext) -> Alert {
        let mut a = self.raise(rule, ctx.ktime_ns, summary);
        a.server = (!ctx.server.is_empty()).then(|| ctx.server.clone());
        a.pid = ctx.pid;
        a.ppid = ctx.ppid;
        a.uid = ctx.uid;
        a.exe = ctx.exe.clone();
        a.argv = ctx.argv.clone();
        a.ancestry = ctx
            .ancestry
            .iter()
            .map(|(pid, exe)| AlertAncestor {
                pid: *pid,
                exe: exe.clone(),
            })
            .collect();
        a.tool = ctx.tool.clone();
        a.call_id = ctx.call_id.clone();
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
