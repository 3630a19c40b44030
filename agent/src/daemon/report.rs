//! What the agent reports besides events: the MCP layer's lines and alerts,
//! tool-call counts, watched-process gauges, kernel loss, and the watched
//! map's safety net against /proc.

use std::{collections::HashMap as StdHashMap, path::Path};

use agent_common::{EventKind, LossKey, config::WATCH_PENDING, probe_errors::Reason};

use super::agent::Agent;
use crate::kernel::watchset::WatchSet;
use crate::{
    alerts::rules,
    kernel::decode::StdioChunk,
    mcp::{McpAlert, McpLine, Output},
    output::events::{Clock, Record},
    pipeline::procs::Proc,
    policy::activity::ProcContext,
};

impl Agent {
    /// A captured stdio chunk of a watched server: the MCP conversation.
    pub(super) fn on_stdio(&mut self, chunk: StdioChunk) {
        self.stdio_bytes += chunk.data.len() as u64;
        let server = chunk.header.server;
        let name = self.names.server_name(server).unwrap_or("?").to_owned();
        let out = self.mcp.on_chunk(&name, &chunk);
        for roots in self.mcp.take_client_roots() {
            self.policy.client_roots(&name, roots);
        }
        self.mcp_outputs(out);
    }

    /// Brings `mcpwatch_tool_calls_total` up to the MCP layer's own counts.
    pub(super) fn export_tool_calls(&mut self) {
        let counts: Vec<(u32, String, u64)> = self
            .mcp
            .tool_counters()
            .map(|(server, tool, c)| (server, tool.to_owned(), c.calls))
            .collect();
        for (server, tool, calls) in counts {
            let seen = self.tool_calls_seen.entry((server, tool.clone())).or_insert(0);
            let name = self.names.server_name(server).unwrap_or("?");
            for _ in *seen..calls {
                self.metrics.tool_call(name, &tool);
            }
            *seen = calls.max(*seen);
        }
    }

    /// Periodic MCP reports (garbage, cut messages, abandoned calls).
    pub(super) fn mcp_tick(&mut self) {
        let out = self.mcp.tick(Clock::now_ktime());
        self.mcp_outputs(out);
        // Once a tick, not per chunk: scrapes are seconds apart anyway.
        self.export_tool_calls();
        self.metrics.mcp(self.mcp.stats());
    }

    pub(super) fn mcp_outputs(&mut self, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Line(l) => self.mcp_line(l),
                Output::Alert(a) => self.mcp_alert(a),
            }
        }
    }

    pub(super) fn mcp_line(&mut self, l: McpLine) {
        let p = self.procs.get_or_load(l.pid).cloned().unwrap_or(Proc {
            pid: l.pid,
            ..Default::default()
        });
        let mut r = self.names.proc_record(l.kind, l.server, l.ktime_ns, &p);
        r.tool = l.tool.as_deref();
        r.call_id = l.call_id.as_deref();
        r.detail = Some(l.fields);
        self.writer.write(&r);
        self.sinks.event(&r);
    }

    pub(super) fn mcp_alert(&mut self, a: McpAlert) {
        let p = self.procs.get_or_load(a.pid).cloned().unwrap_or(Proc {
            pid: a.pid,
            ..Default::default()
        });
        let server = self.names.server_name(a.server).map(str::to_owned);
        // Shipped pins: the manifest is what judged the listing.
        let manifest = match (&server, a.shipped_pins) {
            (Some(n), true) => self.policy.manifest_of(n).map(|(file, _)| file),
            _ => None,
        };
        let ctx = ProcContext {
            server: server.unwrap_or_default(),
            ktime_ns: a.ktime_ns,
            pid: a.pid,
            ppid: p.ppid,
            uid: p.uid,
            exe: p.exe,
            argv: p.argv,
            ancestry: self.procs.ancestry(a.pid),
            tool: a.tool,
            call_id: a.call_id,
            ..Default::default()
        };
        let mut alert = self.factory.raise_about(a.rule, a.summary, &ctx);
        alert.manifest = manifest;
        // Findings folded into this alert (one tool definition): the count.
        if let Some(n) = a.evidence.get("count").and_then(serde_json::Value::as_u64) {
            alert.count = n;
        }
        alert.evidence = a.evidence;
        self.emit_alert(&alert);
    }

    /// Watched processes per server, for the gauges.
    pub(super) fn refresh_watched(&mut self) {
        let mut per_server: StdHashMap<u32, usize> = StdHashMap::new();
        for (_, w) in self.watched.entries() {
            if w.flags & WATCH_PENDING == 0 {
                *per_server.entry(w.server).or_default() += 1;
            }
        }
        let named: Vec<(&str, usize)> = per_server
            .iter()
            .map(|(id, n)| (self.names.server_name(*id).unwrap_or("?"), *n))
            .collect();
        self.metrics.watched(&named);
        self.bounds_tick(&per_server);
    }

    /// The heartbeat alert: alive, and what it watches, through every sink.
    pub(super) fn heartbeat(&mut self, uptime: std::time::Duration) {
        let st = self.status();
        let mut alert = self.factory.raise(
            &rules::AGENT_HEARTBEAT,
            Clock::now_ktime(),
            format!(
                "mcpwatch agent alive: {} servers, {} processes watched",
                st.servers.len(),
                st.watched.len()
            ),
        );
        alert.evidence = serde_json::json!({
            "uptime_s": uptime.as_secs(),
            "version": env!("CARGO_PKG_VERSION"),
            "servers": st.servers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            "processes_watched": st.watched.len(),
            "events": st.events,
            "lost": st.lost,
        });
        self.emit_alert(&alert);
    }

    /// Saves what the next agent needs to read the kept kernel objects:
    /// the server names behind the ids, the kernel counters reported, the
    /// enforced servers' cgroups.
    pub(super) fn save_handover(&mut self) {
        (self.handover.servers, self.handover.last_server_id) = self.names.servers.entries();
        self.handover.loss = self.loss_seen.iter().map(|(k, n)| (k.server, k.kind, *n)).collect();
        self.handover.loss.sort_unstable();
        self.handover.probe_errors = self.probe_errors.seen().to_vec();
        self.handover.cgroups = self.cgroup_net.as_ref().map(|c| c.records()).unwrap_or_default();
        if let Err(e) = self.handover.save(&self.state_dir) {
            log::error!("the next agent may misname servers or report loss twice: {e}");
        }
    }

    /// Reports ring-buffer loss counted by the kernel since the last check.
    pub(super) fn report_loss(&mut self) {
        let mut moved = false;
        let entries: Vec<(LossKey, u64)> = self
            .loss
            .iter()
            .flatten()
            .map(|(k, per_cpu)| (k, per_cpu.iter().sum::<u64>()))
            .collect();
        for (key, total) in entries {
            let seen = self.loss_seen.entry(key).or_insert(0);
            if total <= *seen {
                continue;
            }
            let lost = total - *seen;
            *seen = total;
            moved = true;
            self.lost += lost;
            let kind = EventKind::from_u32(key.kind).map(EventKind::name).unwrap_or("unknown");
            let server = self.names.servers.name(key.server);
            self.loss_fold.ring(server, kind, lost);
            self.metrics.lost(server, kind, lost);
            self.metrics.event(server, "loss");
            log::warn!(
                "{lost} {kind} events of server {} lost in the kernel (ring buffer full)",
                server.unwrap_or("-")
            );
            let r = Record {
                ts: self.names.clock.rfc3339(Clock::now_ktime()).into(),
                kind: "loss",
                server,
                event_kind: Some(kind),
                lost: Some(lost),
                ..Default::default()
            };
            self.writer.write(&r);
            self.sinks.event(&r);
        }
        // Drops the probes counted themselves: an unreadable argument, a full map...
        for (probe, reason, n) in self.probe_errors.poll() {
            moved = true;
            self.loss_fold.probe(probe, reason, n);
            self.metrics.probe_errors(probe, reason, n);
            self.metrics.event(None, "loss");
            self.kernel_state_lost(probe, reason, n);
            let r = Record {
                ts: self.names.clock.rfc3339(Clock::now_ktime()).into(),
                kind: "loss",
                probe: Some(probe),
                reason: Some(reason),
                lost: Some(n),
                ..Default::default()
            };
            self.writer.write(&r);
            self.sinks.event(&r);
        }
        if moved {
            self.save_handover();
        }
        let decode_errors = self.decode_errors - std::mem::replace(&mut self.decode_errors_seen, self.decode_errors);
        if decode_errors > 0 {
            self.loss_fold.agent("kernel_record", "undecodable", decode_errors);
        }
        let dropped = self.writer.dropped();
        if dropped > self.events_dropped_seen {
            let n = dropped - std::mem::replace(&mut self.events_dropped_seen, dropped);
            self.metrics.events_dropped(n);
            self.loss_fold.agent("events_output", "write_failed", n);
        }
        for (sink, total) in self.sinks.dropped() {
            let seen = self.sink_drops_seen.entry(sink.clone()).or_insert(0);
            if total > *seen {
                self.loss_fold.sink(&sink, total - *seen);
                *seen = total;
            }
        }
        // The SOC learns of it through the sinks, at most once per interval.
        if let Some(alert) = self.loss_fold.due(&self.factory, Clock::now_ktime()) {
            log::warn!("{}", alert.summary);
            self.emit_alert(&alert);
        }
    }

    /// Logs a probe-error delta, and alerts when kernel tracking state was
    /// lost (what follows is unseen, not merely degraded).
    fn kernel_state_lost(&mut self, probe: &str, reason: &str, n: u64) {
        let (rule, summary) = if reason == Reason::WatchedFull.name() {
            let s = format!(
                "the watched map is full: {n} new processes ({probe}) not followed in the kernel; raise --watched-max"
            );
            (&rules::AGENT_WATCHED_MAP_FULL, s)
        } else {
            log::warn!("{n} {probe} records dropped or degraded in the kernel: {reason}");
            return;
        };
        log::error!("{summary}");
        let alert = self.factory.raise(rule, Clock::now_ktime(), summary);
        self.emit_alert(&alert);
    }

    /// Removes watched-map entries whose process is gone (should stay 0).
    pub(super) fn gc_watched(&mut self) {
        let stale: Vec<u32> = self
            .watched
            .keys()
            .flatten()
            .filter(|pid| !Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        for pid in stale {
            if self.watched.unwatch(pid) {
                self.gc_removed += 1;
                self.procs.remove(pid);
                log::warn!("removed stale watched pid {pid} (its exit was not seen)");
            }
        }
    }
}
