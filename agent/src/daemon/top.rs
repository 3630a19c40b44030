//! What `mcpwatch top` asks the agent for each second: the watched servers
//! (with their mode and start time), the counters it turns into rates (tool
//! calls, from the MCP layer), the last alerts, loss and each sink's backlog
//! (from the metrics registry, so `top` and Prometheus agree).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{agent::Agent, control::Status};
use crate::alerts::Alert;

/// Alerts kept for `top` (newest last).
pub const RECENT_ALERTS: usize = 64;

/// The agent's answer to `top`.
#[derive(Serialize, Deserialize, Debug, Default, PartialEq, Eq)]
pub struct TopSnapshot {
    /// What `status` says (watched pids per server, events, ring loss, probe errors).
    pub status: Status,
    /// Per server: how it is judged and when its oldest process started.
    pub servers: Vec<ServerInfo>,
    /// Tool calls seen since start, per server and tool.
    pub tool_calls: Vec<ToolCount>,
    /// The last alerts, oldest first.
    pub alerts: Vec<RecentAlert>,
    /// Alerts raised since start.
    pub alerts_total: u64,
    pub sinks: Vec<SinkState>,
    /// Event lines the events file could not take.
    pub events_dropped: u64,
}

#[derive(Serialize, Deserialize, Debug, Default, PartialEq, Eq)]
pub struct ServerInfo {
    pub name: String,
    /// `audit`, `enforce` or `undeclared`.
    pub mode: String,
    /// Unix time (seconds) its oldest watched process started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
}

#[derive(Serialize, Deserialize, Debug, Default, PartialEq, Eq, Clone)]
pub struct ToolCount {
    pub server: String,
    pub tool: String,
    pub calls: u64,
}

#[derive(Serialize, Deserialize, Debug, Default, PartialEq, Eq, Clone)]
pub struct RecentAlert {
    /// Alert sequence id (`top` shows each once).
    pub id: String,
    pub ts: String,
    pub rule: String,
    pub severity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    pub summary: String,
}

impl From<&Alert> for RecentAlert {
    fn from(a: &Alert) -> Self {
        Self {
            id: a.id.clone(),
            ts: a.ts.clone(),
            rule: a.rule.clone(),
            severity: a.severity.as_str().to_owned(),
            server: a.server.clone(),
            tool: a.tool.clone(),
            summary: a.summary.clone(),
        }
    }
}

/// One sink as `top` shows it: what waits, what it delivered, what was lost.
#[derive(Serialize, Deserialize, Debug, Default, PartialEq, Eq)]
pub struct SinkState {
    pub name: String,
    /// Alerts waiting (memory queue and spool).
    pub backlog: u64,
    pub spool_bytes: u64,
    pub delivered: u64,
    /// Lost for this sink (spool full or unwritable).
    pub dropped: u64,
    /// Refused for good by the receiver (dead-lettered).
    pub refused: u64,
}

/// The last [`RECENT_ALERTS`] alerts.
#[derive(Debug, Default)]
pub struct RecentAlerts(VecDeque<RecentAlert>);

impl RecentAlerts {
    pub fn push(&mut self, a: &Alert) {
        if self.0.len() == RECENT_ALERTS {
            self.0.pop_front();
        }
        self.0.push_back(a.into());
    }
}

impl Agent {
    pub(super) fn top(&self) -> TopSnapshot {
        let status = self.status();
        let servers = status
            .servers
            .iter()
            .map(|s| ServerInfo {
                name: s.name.clone(),
                mode: self.policy.mode_label(&s.name).to_owned(),
                started: s.pids.iter().filter_map(|&p| started(p)).min(),
            })
            .collect();
        // The MCP layer's own counts: exact, not folded like the metric's labels.
        let tool_calls = self
            .mcp
            .tool_counters()
            .map(|(server, tool, c)| ToolCount {
                server: self.names.server_name(server).unwrap_or("?").to_owned(),
                tool: tool.to_owned(),
                calls: c.calls,
            })
            .collect();
        let mut sinks: BTreeMap<String, SinkState> = BTreeMap::new();
        for (family, set) in [
            ("mcpwatch_sink_backlog_alerts", set_backlog as fn(&mut SinkState, u64)),
            ("mcpwatch_sink_spool_bytes", |s, v| s.spool_bytes = v),
            ("mcpwatch_sink_alerts_delivered_total", |s, v| s.delivered = v),
            ("mcpwatch_sink_alerts_dropped_total", |s, v| s.dropped = v),
            ("mcpwatch_sink_alerts_dead_lettered_total", |s, v| s.refused = v),
        ] {
            for (l, v) in self.metrics.samples(family) {
                let name = label(&l, "sink");
                let s = sinks.entry(name.clone()).or_insert_with(|| SinkState {
                    name,
                    ..Default::default()
                });
                set(s, v.max(0.0) as u64);
            }
        }
        TopSnapshot {
            status,
            servers,
            tool_calls,
            alerts: self.recent_alerts.0.iter().cloned().collect(),
            alerts_total: self.alerts,
            sinks: sinks.into_values().collect(),
            events_dropped: self.events_dropped_seen,
        }
    }
}

fn set_backlog(s: &mut SinkState, v: u64) {
    s.backlog = v;
}

fn label(l: &BTreeMap<String, String>, k: &str) -> String {
    l.get(k).cloned().unwrap_or_default()
}

/// When a process started (unix seconds), from /proc.
fn started(pid: u32) -> Option<u64> {
    let stat = procfs::process::Process::new(pid as i32).ok()?.stat().ok()?;
    let boot = procfs::boot_time_secs().ok()?;
    Some(boot + stat.starttime / procfs::ticks_per_second())
}
