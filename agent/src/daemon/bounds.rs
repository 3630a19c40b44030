//! What servers may leave in the agent. Any local user registers names
//! through the wrapper, and each name costs state (the policy's server, MCP
//! state, DNS answers, a metric series per event kind): a non-root user has
//! at most `[servers] max_per_uid` names not yet forgotten, and a server
//! whose processes have all exited is forgotten `[servers] forget_after_s`
//! later (the grace lets a final scrape see its last values). A refusal is
//! an `agent.registration_refused` alert, at most one per user per minute.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::agent::Agent;
use crate::{alerts::rules, config::ServersConfig, daemon::control::WatchRequest, output::events::Clock};

/// At most one refusal alert per user per window; the rest are counted into
/// the next.
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// Refusals of one user in the current window.
struct Refusals {
    since: Instant,
    /// Refused after the window's alert went out.
    folded: u64,
    last_server: String,
}

pub(super) struct ServerBounds {
    max_per_uid: usize,
    forget_after: Duration,
    /// Names registered by a non-root user, with that user's uid.
    owners: HashMap<String, u32>,
    /// Servers with no process left, since when.
    idle_since: HashMap<u32, Instant>,
    refusals: HashMap<u32, Refusals>,
}

/// A refusal (or refusals folded over a window) to alert about.
pub(super) struct Refusal {
    pub uid: u32,
    pub server: String,
    pub count: u64,
}

impl ServerBounds {
    pub(super) fn new(c: ServersConfig) -> Self {
        Self {
            max_per_uid: c.max_per_uid,
            forget_after: Duration::from_secs(c.forget_after_s),
            owners: HashMap::new(),
            idle_since: HashMap::new(),
            refusals: HashMap::new(),
        }
    }

    /// Whether `uid` may register `server` (a name it does not hold yet
    /// counts against its cap; root has none). `known`: the name is in use
    /// already (no new state). Err: the refusal, for the client.
    pub(super) fn admit(&mut self, uid: u32, server: &str, known: bool) -> Result<(), String> {
        if uid == 0 || known || self.owners.contains_key(server) {
            return Ok(());
        }
        let held = self.owners.values().filter(|&&u| u == uid).count();
        if held >= self.max_per_uid {
            return Err(format!(
                "uid {uid} already has {held} server names registered (at most {}, `[servers] max_per_uid`; a name is \
                 forgotten {} s after its processes exit): {server:?} refused",
                self.max_per_uid,
                self.forget_after.as_secs()
            ));
        }
        self.owners.insert(server.to_owned(), uid);
        Ok(())
    }

    /// Counts a refusal; returns it when it is to be alerted now (the
    /// first of the user's window).
    pub(super) fn refused(&mut self, uid: u32, server: &str, now: Instant) -> Option<Refusal> {
        match self.refusals.get_mut(&uid) {
            Some(r) if now.duration_since(r.since) < REFUSAL_WINDOW => {
                r.folded += 1;
                r.last_server = server.to_owned();
                None
            }
            _ => {
                self.refusals.insert(
                    uid,
                    Refusals {
                        since: now,
                        folded: 0,
                        last_server: server.to_owned(),
                    },
                );
                Some(Refusal {
                    uid,
                    server: server.to_owned(),
                    count: 1,
                })
            }
        }
    }

    /// Refusals folded in windows that ended, one per user.
    pub(super) fn folded_refusals(&mut self, now: Instant) -> Vec<Refusal> {
        let mut out = Vec::new();
        self.refusals.retain(|&uid, r| {
            if now.duration_since(r.since) < REFUSAL_WINDOW {
                return true;
            }
            if r.folded > 0 {
                out.push(Refusal {
                    uid,
                    server: std::mem::take(&mut r.last_server),
                    count: r.folded,
                });
            }
            false
        });
        out
    }

    /// Given the servers that still have processes, the ones to forget now.
    pub(super) fn idle(&mut self, known: &[u32], live: impl Fn(u32) -> bool, now: Instant) -> Vec<u32> {
        let mut out = Vec::new();
        for &id in known {
            if live(id) {
                self.idle_since.remove(&id);
                continue;
            }
            let since = *self.idle_since.entry(id).or_insert(now);
            if now.duration_since(since) >= self.forget_after {
                out.push(id);
            }
        }
        out
    }

    pub(super) fn forget(&mut self, id: u32, name: &str) {
        self.idle_since.remove(&id);
        self.owners.remove(name);
    }
}

impl Agent {
    /// Applies the per-user cap to a registration; a refusal is alerted.
    pub(super) fn admit_registration(&mut self, req: &WatchRequest) -> Result<(), String> {
        let known = self.names.servers.contains(&req.server);
        let Err(e) = self.bounds.admit(req.uid, &req.server, known) else {
            return Ok(());
        };
        log::debug!("pid {}: {e}", req.pid);
        if let Some(r) = self.bounds.refused(req.uid, &req.server, Instant::now()) {
            self.refusal_alert(r, req.pid);
        }
        Err(e)
    }

    fn refusal_alert(&mut self, r: Refusal, pid: u32) {
        let mut alert = self.factory.raise(
            &rules::AGENT_REGISTRATION_REFUSED,
            Clock::now_ktime(),
            format!(
                "uid {} was refused {} server registration(s) (last: {:?}): over its cap of live server names; \
                 those servers run unwatched",
                r.uid, r.count, r.server
            ),
        );
        alert.uid = r.uid;
        alert.pid = pid;
        alert.evidence = serde_json::json!({ "uid": r.uid, "server": r.server, "refused": r.count });
        log::warn!("{}", alert.summary);
        self.emit_alert(&alert);
    }

    /// Forgets servers whose processes all exited long enough ago; alerts
    /// refusals folded in windows that ended.
    pub(super) fn bounds_tick(&mut self, live: &HashMap<u32, usize>) {
        let now = Instant::now();
        for r in self.bounds.folded_refusals(now) {
            self.refusal_alert(r, 0);
        }
        let known: Vec<u32> = self.names.servers.iter().map(|(id, _)| id).collect();
        let idle = self.bounds.idle(&known, |id| live.contains_key(&id), now);
        if idle.is_empty() {
            return;
        }
        // Their last kernel loss is counted before its entries go.
        self.report_loss();
        for id in idle {
            self.forget_server(id);
        }
    }

    /// Frees everything kept of server `id`: its name and id, its policy
    /// and MCP state, DNS answers, counters, kernel loss entries and metric
    /// series. If it runs again it starts afresh under a new id.
    fn forget_server(&mut self, id: u32) {
        let Some(name) = self.names.servers.forget(id) else {
            return;
        };
        self.bounds.forget(id, &name);
        self.event_counters.retain(|(s, _), _| *s != id);
        self.tool_calls_seen.retain(|(s, _), _| *s != id);
        let keys: Vec<_> = self.loss.keys().flatten().filter(|k| k.server == id).collect();
        for k in keys {
            // Already reported: a failure leaves one small entry behind.
            let _ = self.loss.remove(&k);
            self.loss_seen.remove(&k);
        }
        self.hosts.forget(id);
        if self.cgroup_net.as_mut().is_some_and(|c| c.forget(id)) {
            self.save_handover();
        }
        self.mcp.forget_server(id);
        self.policy.forget_server(&name);
        self.sync_kill();
        self.metrics.forget_server(&name);
        log::info!(
            "server {name} forgotten: no process left for {} s",
            self.bounds.forget_after.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(max: usize) -> ServerBounds {
        ServerBounds::new(ServersConfig {
            max_per_uid: max,
            forget_after_s: 10,
        })
    }

    #[test]
    fn a_user_holds_at_most_its_cap_of_names_root_none() {
        let mut b = bounds(2);
        assert!(b.admit(1000, "a", false).is_ok());
        assert!(b.admit(1000, "b", false).is_ok());
        assert!(b.admit(1000, "a", false).is_ok(), "a name it holds");
        assert!(b.admit(1000, "fs", true).is_ok(), "a name in use already");
        let e = b.admit(1000, "c", false).unwrap_err();
        assert!(
            e.contains("uid 1000 already has 2 server names registered (at most 2"),
            "{e}"
        );
        assert!(b.admit(1001, "c", false).is_ok(), "another user");
        assert!(b.admit(0, "d", false).is_ok(), "root");
        b.forget(7, "a");
        assert!(b.admit(1000, "c", false).is_ok(), "a forgotten name frees a place");
    }

    #[test]
    fn refusals_alert_once_per_window_then_fold() {
        let mut b = bounds(0);
        let t = Instant::now();
        assert_eq!(b.refused(5, "x", t).map(|r| r.count), Some(1));
        assert!(b.refused(5, "y", t + Duration::from_secs(1)).is_none());
        assert!(b.refused(5, "z", t + Duration::from_secs(2)).is_none());
        assert!(b.folded_refusals(t + Duration::from_secs(30)).is_empty());
        let f = b.folded_refusals(t + REFUSAL_WINDOW);
        assert_eq!((f[0].uid, f[0].server.as_str(), f[0].count), (5, "z", 2));
        assert!(b.refusals.is_empty());
    }

    #[test]
    fn servers_are_forgotten_after_the_grace_without_processes() {
        let mut b = bounds(4);
        let t = Instant::now();
        assert!(b.idle(&[1, 2], |id| id == 1, t).is_empty());
        assert!(b.idle(&[1, 2], |id| id == 1, t + Duration::from_secs(9)).is_empty());
        assert_eq!(b.idle(&[1, 2], |id| id == 1, t + Duration::from_secs(10)), [2]);
        // A process again: the clock starts over.
        assert!(b.idle(&[1, 2], |_| true, t + Duration::from_secs(11)).is_empty());
        assert!(b.idle(&[1, 2], |_| false, t + Duration::from_secs(12)).is_empty());
    }
}
