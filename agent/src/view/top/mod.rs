//! `mcpwatch top`: the running agent as a live screen. [`Model`] turns the
//! agent's snapshots (one a second, see `daemon::top`) into what is shown —
//! calls/s per tool over a rolling window, alerts newest first, the
//! connection's state — and [`ui`] draws it.

pub mod ui;

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use crate::daemon::top::{RecentAlert, TopSnapshot};

/// The window calls/s is measured over.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Alerts kept on screen (newest first).
const ALERTS_KEPT: usize = 200;

/// Calls per (server, tool) at one refresh.
type CallCounts = BTreeMap<(String, String), u64>;

/// The panes `tab` moves between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    Servers,
    Tools,
    Alerts,
}

impl Pane {
    pub fn next(self) -> Self {
        match self {
            Pane::Servers => Pane::Tools,
            Pane::Tools => Pane::Alerts,
            Pane::Alerts => Pane::Servers,
        }
    }

    pub fn prev(self) -> Self {
        self.next().next()
    }
}

/// Whether the agent answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Up,
    /// Lost (why), since when; `top` keeps asking.
    Down {
        error: String,
        since: Instant,
    },
}

/// One tool's line: its calls and its rate.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolRate {
    pub server: String,
    pub tool: String,
    pub calls: u64,
    pub per_s: f64,
}

pub struct Model {
    pub link: Link,
    /// The agent restarted at least once while `top` ran (said on screen).
    pub reconnects: u32,
    pub snapshot: Option<TopSnapshot>,
    /// Tool-call counts seen at each refresh inside the window.
    history: VecDeque<(Instant, CallCounts)>,
    /// Alerts newest first, each once.
    pub alerts: VecDeque<RecentAlert>,
    pub pane: Pane,
    /// Servers whose name contains this (empty: all).
    pub filter: String,
    /// Typing a filter (after `/` or `s`).
    pub editing: bool,
    /// First row shown in each pane.
    pub scroll: [usize; 3],
}

impl Default for Model {
    fn default() -> Self {
        Self {
            link: Link::Connecting,
            reconnects: 0,
            snapshot: None,
            history: VecDeque::new(),
            alerts: VecDeque::new(),
            pane: Pane::Servers,
            filter: String::new(),
            editing: false,
            scroll: [0; 3],
        }
    }
}

impl Model {
    /// A fresh snapshot, taken at `now`.
    pub fn update(&mut self, snap: TopSnapshot, now: Instant) {
        if matches!(self.link, Link::Down { .. }) {
            self.reconnects += 1;
        }
        // A restarted agent counts from zero again: rates start over.
        let restarted = self
            .snapshot
            .as_ref()
            .is_some_and(|old| snap.status.events < old.status.events);
        if restarted || matches!(self.link, Link::Down { .. }) {
            self.history.clear();
        }
        self.link = Link::Up;
        let counts = snap
            .tool_calls
            .iter()
            .map(|t| ((t.server.clone(), t.tool.clone()), t.calls))
            .collect();
        self.history.push_back((now, counts));
        while self
            .history
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.history.pop_front();
        }
        for a in &snap.alerts {
            if !self.alerts.iter().any(|k| k.id == a.id && k.ts == a.ts) {
                self.alerts.push_front(a.clone());
            }
        }
        self.alerts.truncate(ALERTS_KEPT);
        self.snapshot = Some(snap);
    }

    /// The agent did not answer.
    pub fn lost(&mut self, error: String, now: Instant) {
        match &mut self.link {
            Link::Down { error: e, .. } => *e = error,
            _ => self.link = Link::Down { error, since: now },
        }
    }

    /// Tools of the shown servers, busiest first: calls/s over the window
    /// (from the oldest refresh kept to the newest).
    pub fn tool_rates(&self) -> Vec<ToolRate> {
        let Some((t1, last)) = self.history.back() else {
            return Vec::new();
        };
        let (t0, first) = self.history.front().expect("not empty");
        let dt = t1.duration_since(*t0).as_secs_f64();
        let mut out: Vec<ToolRate> = last
            .iter()
            .filter(|((server, _), _)| self.shows(server))
            .map(|((server, tool), &calls)| {
                let before = first.get(&(server.clone(), tool.clone())).copied().unwrap_or(0);
                ToolRate {
                    server: server.clone(),
                    tool: tool.clone(),
                    calls,
                    per_s: match dt > 0.0 {
                        true => calls.saturating_sub(before) as f64 / dt,
                        false => 0.0,
                    },
                }
            })
            .collect();
        out.sort_by(|a, b| b.per_s.total_cmp(&a.per_s).then(b.calls.cmp(&a.calls)));
        out
    }

    /// Alerts of the shown servers, newest first.
    pub fn shown_alerts(&self) -> impl Iterator<Item = &RecentAlert> {
        self.alerts
            .iter()
            .filter(|a| self.filter.is_empty() || a.server.as_deref().is_some_and(|s| self.shows(s)))
    }

    /// Whether the server filter lets `server` through.
    pub fn shows(&self, server: &str) -> bool {
        self.filter.is_empty() || server.contains(self.filter.as_str())
    }

    /// Moves the focused pane's first row by `by`.
    pub fn scroll(&mut self, by: isize) {
        let i = self.pane as usize;
        self.scroll[i] = self.scroll[i].saturating_add_signed(by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::top::ToolCount;

    fn snap(events: u64, calls: &[(&str, &str, u64)], alerts: &[(&str, &str)]) -> TopSnapshot {
        let mut s = TopSnapshot::default();
        s.status.events = events;
        s.tool_calls = calls
            .iter()
            .map(|(server, tool, calls)| ToolCount {
                server: server.to_string(),
                tool: tool.to_string(),
                calls: *calls,
            })
            .collect();
        s.alerts = alerts
            .iter()
            .map(|(id, server)| RecentAlert {
                id: id.to_string(),
                ts: "t".into(),
                rule: "cred.ssh".into(),
                severity: "high".into(),
                server: Some(server.to_string()),
                ..Default::default()
            })
            .collect();
        s
    }

    #[test]
    fn rate_is_calls_over_the_window_and_restarts_with_the_agent() {
        let t0 = Instant::now();
        let mut m = Model::default();
        m.update(snap(10, &[("fs", "read_file", 4)], &[]), t0);
        m.update(snap(20, &[("fs", "read_file", 14)], &[]), t0 + Duration::from_secs(5));
        let r = m.tool_rates();
        assert_eq!((r[0].calls, r[0].per_s), (14, 2.0));
        // Past the window, the oldest refresh no longer counts.
        m.update(snap(30, &[("fs", "read_file", 14)], &[]), t0 + Duration::from_secs(12));
        assert_eq!(m.tool_rates()[0].per_s, 0.0);
        // An agent that restarted (fewer events) starts the rates over.
        m.update(snap(1, &[("fs", "read_file", 1)], &[]), t0 + Duration::from_secs(13));
        assert_eq!(m.tool_rates()[0].per_s, 0.0);
    }

    #[test]
    fn alerts_are_newest_first_once_each_and_filtered_by_server() {
        let t = Instant::now();
        let mut m = Model::default();
        m.update(snap(1, &[], &[("1", "fs"), ("2", "evil")]), t);
        m.update(snap(2, &[], &[("1", "fs"), ("2", "evil"), ("3", "fs")]), t);
        let ids: Vec<&str> = m.shown_alerts().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["3", "2", "1"]);
        m.filter = "ev".into();
        let ids: Vec<&str> = m.shown_alerts().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["2"]);
    }

    #[test]
    fn a_lost_agent_is_counted_as_a_reconnect_when_it_answers_again() {
        let t = Instant::now();
        let mut m = Model::default();
        m.update(snap(5, &[], &[]), t);
        m.lost("connection refused".into(), t);
        m.lost("no such file".into(), t + Duration::from_secs(1));
        assert!(matches!(&m.link, Link::Down { error, since } if error == "no such file" && *since == t));
        m.update(snap(1, &[], &[]), t + Duration::from_secs(2));
        assert_eq!((m.link.clone(), m.reconnects), (Link::Up, 1));
    }
}
