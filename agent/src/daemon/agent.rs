//! The agent's state and one pass per event: decode, the pipeline
//! (discovery, process table, observation), the judgement (policy, MCP), one
//! way out for alerts. `watch.rs` decides what is watched, `requests.rs`
//! answers the control socket and wrappers, `report.rs` the
//! periodic reports; `run.rs` is the loop that feeds them.

use std::collections::HashMap as StdHashMap;

use agent_common::{AgentConfig, EventKind, LossKey, WatchedProc, syscalls};
use aya::maps::{Array, HashMap, MapData, PerCpuHashMap};

use crate::{
    alerts::{Alert, AlertAncestor, AlertFactory, loss::LossFold, rules},
    daemon::handover::Handover,
    enforce::{Layer, config::EnforceConfig, kill},
    kernel::{
        decode::{self, Event, Exec, Sys},
        probe_errors::ProbeErrors,
        stdio::StdioChannels,
    },
    mcp::{ActivityKind, CallTag, Mcp},
    output::{
        events::{Clock, DnsRecord, EventWriter},
        lines::{Names, tag_record},
        metrics::Metrics,
        sinks::Sinks,
    },
    pipeline::{
        discovery::{Pending, Rules},
        dns,
        history::{self, WriteHistory},
        observe::{self, SysObservation},
        operation,
        procs::{self, ForkedCall, Proc, ProcTable},
        registrations::Registrations,
    },
    policy::{
        Policy,
        activity::{Activity, ProcContext},
    },
};

/// Everything the event loop owns besides the ring buffer.
pub(super) struct Agent {
    pub(super) watched: HashMap<MapData, u32, WatchedProc>,
    /// Which pipes are the servers' wire, for the stdio capture.
    pub(super) stdio: StdioChannels,
    /// `mcpwatch_events_total` children by (server id, kind).
    pub(super) event_counters: foldhash::HashMap<(u32, EventKind), prometheus::IntCounter>,
    pub(super) config: Array<MapData, AgentConfig>,
    pub(super) policy: Policy,
    pub(super) loss: PerCpuHashMap<MapData, LossKey, u64>,
    /// The probes' own drop counters (besides a full ring).
    pub(super) probe_errors: ProbeErrors,
    pub(super) names: Names,
    pub(super) procs: ProcTable,
    pub(super) rules: Rules,
    pub(super) writer: EventWriter,
    pub(super) metrics: Metrics,
    pub(super) sinks: Sinks,
    pub(super) metrics_address: Option<String>,
    /// Loss already reported, per key.
    pub(super) loss_seen: StdHashMap<LossKey, u64>,
    pub(super) events: u64,
    pub(super) lost: u64,
    pub(super) decode_errors: u64,
    /// Syscall records of pending processes that no rule made a server:
    /// dropped, never judged.
    pub(super) released_records: u64,
    /// Undecodable records already folded into a loss alert.
    pub(super) decode_errors_seen: u64,
    /// Loss not yet reported by an `agent.event_loss` alert.
    pub(super) loss_fold: LossFold,
    /// Alerts each sink dropped, already folded.
    pub(super) sink_drops_seen: StdHashMap<String, u64>,
    /// Watched roots, kept in the state directory across restarts.
    pub(super) registrations: Registrations,
    /// Event lines the writer dropped, already counted.
    pub(super) events_dropped_seen: u64,
    pub(super) gc_removed: u64,
    pub(super) alerts: u64,
    /// Makes every alert (shared with the policy: one id sequence).
    pub(super) factory: AlertFactory,
    pub(super) agent_pid: u32,
    /// This binary (the wrapper is never discovered by rules).
    pub(super) self_exe: String,
    /// Pending (undecided) processes and the pending children they forked.
    pub(super) pending: Pending,
    /// What watched stdio servers say: tool calls, pins, poisoning.
    pub(super) mcp: Mcp,
    /// Tool calls already counted in the metrics, per (server, tool).
    pub(super) tool_calls_seen: StdHashMap<(u32, String), u64>,
    /// Addresses learnt from DNS answers, per server.
    pub(super) hosts: dns::HostCache,
    /// DNS queries awaiting their answer.
    pub(super) queries: dns::Outstanding,
    /// Files each server wrote recently (for write-then-exec).
    pub(super) written: WriteHistory,
    /// stdin/stdout bytes captured.
    pub(super) stdio_bytes: u64,
    /// Names per user, and servers to forget.
    pub(super) bounds: super::bounds::ServerBounds,
    pub(super) state_dir: std::path::PathBuf,
    /// What the next agent needs to read the kept kernel objects.
    pub(super) handover: Handover,
    /// `[enforce]` of the configuration.
    pub(super) enforce: EnforceConfig,
    /// Sandbox layers this kernel lacks (or the configuration simulates missing).
    pub(super) enforce_missing: Vec<Layer>,
    /// The per-server cgroup network allowlist (none: the layer is missing).
    pub(super) cgroup_net: Option<crate::enforce::cgroup::CgroupLayer>,
    /// The kill layer's maps (none: the object lacks them).
    pub(super) kill: Option<crate::kernel::kill::KillMaps>,
    /// What aims at the agent itself (self-protection).
    pub(super) tamper: crate::pipeline::tamper::Guard,
    /// The last alerts, for `mcpwatch top`.
    pub(super) recent_alerts: super::top::RecentAlerts,
    /// What a syscall event gives the policy (reused between events).
    pub(super) activities: Vec<Activity>,
}
impl Agent {
    pub(super) fn handle(&mut self, bytes: &[u8]) {
        // Every process exec'd while discovery rules exist reports its
        // syscalls until userspace decided; those of processes no rule made
        // a server are dropped here, before decoding, and counted.
        if let Some(pid) = decode::pending_syscall_pid(bytes)
            && self.procs.get(pid).and_then(|p| p.server).is_none()
        {
            self.released_records += 1;
            return;
        }
        let event = match decode::decode(bytes) {
            Ok(e) => e,
            Err(e) => {
                self.decode_errors += 1;
                self.metrics.decode_error();
                log::warn!("undecodable event ({} so far): {e}", self.decode_errors);
                return;
            }
        };
        self.events += 1;
        // Events the kernel marked unwatched come from pending processes:
        // resolve them first (a decision, or a server learnt since).
        let event = if event.header().unwatched {
            match self.resolve_pending(event) {
                Some(e) => e,
                None => return,
            }
        } else {
            event
        };
        let activity = match &event {
            Event::Exec(_) => Some(ActivityKind::Exec),
            Event::Sys(s) if s.header.kind == EventKind::File => Some(ActivityKind::File),
            Event::Sys(s) if s.header.kind == EventKind::Net && s.nr == syscalls::CONNECT => {
                Some(ActivityKind::Connect)
            }
            Event::Fork(_) | Event::Exit(_) | Event::Sys(_) => Some(ActivityKind::Other),
            Event::Stdio(_) => None,
        };
        let tag = activity.and_then(|k| self.mcp.note_activity(event.header().server, k));
        // A process forked during a call belongs to that call, whatever the
        // server is doing now.
        let tag = match self.procs.get(event.header().pid).and_then(|p| p.call.as_ref()) {
            Some(c) => Some(c.tag.clone()),
            None => tag,
        };
        let h = event.header();
        self.count_event(h.server, h.kind);
        match event {
            Event::Exec(e) => self.on_exec(e, tag.as_ref()),
            Event::Stdio(c) => self.on_stdio(c),
            Event::Fork(f) => {
                let h = &f.header;
                let parent = self.procs.get_or_load(h.pid).cloned().unwrap_or_default();
                let call = parent.call.clone().or_else(|| {
                    tag.clone().map(|tag| ForkedCall {
                        tools_in_flight: if tag.in_flight > 1 {
                            self.mcp.tools_in_flight(h.server)
                        } else {
                            Vec::new()
                        },
                        tag,
                    })
                });
                self.procs.insert(Proc {
                    pid: f.child_pid,
                    ppid: h.pid,
                    uid: h.uid,
                    exe: parent.exe.clone(),
                    argv: parent.argv.clone(),
                    server: Some(h.server),
                    call,
                    operation: parent.operation.clone(),
                    ..Default::default()
                });
                let mut r = self.names.base_record(h, EventKind::Fork.name(), Some(&parent));
                r.child_pid = Some(f.child_pid);
                tag_record(&mut r, tag.as_ref());
                self.writer.write(&r);
                self.sinks.event(&r);
            }
            Event::Exit(x) => {
                let h = &x.header;
                // Calls it leaves unanswered are closed while the table still knows it.
                let closed = self.mcp.on_exit(h.pid, h.ktime_ns);
                self.mcp_outputs(closed);
                let gone = self.procs.remove(h.pid);
                // A package manager run ends with its process: its folded alerts.
                if let Some(op) = gone
                    .as_ref()
                    .and_then(|p| p.operation.as_ref())
                    .filter(|o| o.pid == h.pid)
                {
                    let server = self.names.server_name(h.server).unwrap_or("?").to_owned();
                    for a in self.policy.end_operation(&server, op.pid) {
                        self.emit_alert(&a);
                    }
                }
                let mut r = self.names.base_record(h, EventKind::Exit.name(), gone.as_ref());
                r.exit_code = x.exit_code;
                r.signal = x.signal;
                tag_record(&mut r, tag.as_ref());
                self.writer.write(&r);
                self.sinks.event(&r);
            }
            Event::Sys(s) => self.on_sys(s, tag.as_ref()),
        }
    }

    /// `mcpwatch_events_total` for (server, kind): the counter is looked up
    /// once per pair, not per event.
    pub(super) fn count_event(&mut self, server: u32, kind: EventKind) {
        let counter = match self.event_counters.get(&(server, kind)) {
            Some(c) => c,
            None => {
                let c = self.metrics.event_counter(self.names.server_name(server), kind.name());
                self.event_counters.entry((server, kind)).or_insert(c)
            }
        };
        counter.inc();
    }

    /// A file, net, dns or risky syscall of a watched process: interpreted
    /// once; the line and the judgement read the same observation.
    pub(super) fn on_sys(&mut self, s: Sys, tag: Option<&CallTag>) {
        let h = &s.header;
        if h.kind == EventKind::Dns {
            return self.on_dns(&s, tag);
        }
        let hosts = &self.hosts;
        let o = observe::sys(&s, |ip| hosts.lookup(h.server, ip).map(str::to_owned));
        // Borrowed, not cloned: exe and argv would be copied for every event.
        self.procs.get_or_load(h.pid);
        if let SysObservation::File(f) = &o
            && let Some(path) = f.written(s.ret)
        {
            let installer = self
                .procs
                .get(h.pid)
                .is_some_and(|p| history::installs_package(&p.exe, &p.argv, path))
                .then_some(h.pid);
            self.written.record(h.server, path, h.ktime_ns, installer);
        }
        let proc = self.procs.get(h.pid);
        let tamper = self.tamper.judge(&s, &o);
        // A line no output takes is not built (at `alerts`, most of the cost
        // of an event); a server without a name is the agent's own line.
        if self.writer.writes_activity() || self.sinks.wants_activity() || self.names.server_name(h.server).is_none() {
            // Handed over where they were built: a record is ~900 bytes,
            // and returning one cost two copies of it per event.
            let (writer, sinks) = (&mut self.writer, &mut self.sinks);
            self.names.sys_records(&s, &o, proc, |r| {
                tag_record(r, tag);
                writer.write(r);
                sinks.event(r);
            });
        }
        // The vector is the agent's, reused: no allocation per event.
        let mut activities = std::mem::take(&mut self.activities);
        o.into_activities(&s, &mut activities);
        if let Some(t) = tamper {
            self.raise_tamper(h.server, h.ktime_ns, h.pid, h.killed, t);
        }
        self.evaluate(h.server, h.ktime_ns, h.pid, h.killed, &activities);
        activities.clear();
        self.activities = activities;
    }

    /// `agent.tamper` about the process that aimed at the agent, with the
    /// tool call in flight; `killed`: the kernel killed it there (enforce).
    fn raise_tamper(&mut self, server: u32, ktime_ns: u64, pid: u32, killed: bool, t: crate::pipeline::tamper::Tamper) {
        let ctx = self.context(server, ktime_ns, pid, true, false);
        let mut a = self.factory.raise_about(&rules::AGENT_TAMPER, t.summary, &ctx);
        a.evidence = t.evidence;
        if let Some(e) = a.evidence.as_object_mut() {
            e.insert("kind".into(), t.kind.into());
            e.insert("killed".into(), killed.into());
        }
        if killed {
            a.layer = Some(Layer::Kill);
        }
        self.emit_alert(&a);
    }

    /// A DNS message: its line, and the names its answers give addresses.
    pub(super) fn on_dns(&mut self, s: &Sys, tag: Option<&CallTag>) {
        let h = &s.header;
        let Some(msg) = dns::parse(&s.data) else {
            log::debug!("pid {}: unparsable DNS message of {} bytes", h.pid, s.data.len());
            return;
        };
        // What the server sends is its own word: a query is remembered, and
        // only an answer received for it on the same socket from the same
        // resolver teaches addresses.
        if let Some(a) = &s.addr
            && let (Some(ip), Some(port)) = (a.ip(), a.port())
        {
            let key = dns::QueryKey::new(h.server, h.pid, s.args[0], msg.id, &msg.name, ip, port);
            if !s.incoming && !msg.response {
                self.queries.sent(key, h.ktime_ns);
            } else if s.incoming && msg.response && self.queries.answered(&key, h.ktime_ns) && !msg.answers.is_empty() {
                self.hosts.learn(h.server, &msg.name, &msg.answers);
            }
        }
        self.procs.get_or_load(h.pid);
        let mut r = self.names.base_record(h, h.kind.name(), self.procs.get(h.pid));
        r.syscall = Some(s.name);
        r.result = Some(s.ret);
        r.error = observe::errno_name(s.ret);
        if let Some(a) = &s.addr {
            r.addr = a.ip().map(|ip| ip.to_string());
            r.port = a.port();
        }
        r.dns = Some(DnsRecord {
            direction: if s.incoming { "answer" } else { "query" },
            id: msg.id,
            name: msg.name,
            qtype: dns::qtype_name(msg.qtype),
            answers: msg.answers.iter().map(|a| a.to_string()).collect(),
        });
        tag_record(&mut r, tag);
        self.writer.write(&r);
        self.sinks.event(&r);
    }

    pub(super) fn on_exec(&mut self, e: Exec, tag: Option<&CallTag>) {
        let h = &e.header;
        let exe = e.exe.clone().unwrap_or_else(|| exec_exe(&e));
        let (server, now, pid) = (h.server, h.ktime_ns, h.pid);
        // Itself and its ancestors: a package manager's install counts as
        // written for everyone but the processes it starts (history.rs).
        let mut lineage: Vec<u32> = self.procs.ancestry(pid).into_iter().map(|(p, _)| p).collect();
        lineage.push(pid);
        let written = &self.written;
        let o = observe::exec(
            &e,
            exe,
            |p| written.recent_for(server, p, now, &lineage),
            &|fd, kind| procs::stdio_kind(pid, fd, kind),
        );
        // An exec keeps the call the process was forked during, and the
        // package manager run it is part of (or starts one).
        let call = self.procs.get(h.pid).and_then(|p| p.call.clone());
        let operation = operation::of_exec(&self.procs, h, &o.exe, &e.argv);
        self.procs.insert(Proc {
            pid: h.pid,
            ppid: h.ppid,
            uid: h.uid,
            exe: o.exe.clone(),
            argv: e.argv.clone(),
            server: Some(h.server),
            call,
            operation,
            ..Default::default()
        });
        let ancestry = self.procs.ancestry(h.pid);
        let mut r = self.names.exec_record(&e, &o, self.procs.get(h.pid), &ancestry);
        tag_record(&mut r, tag);
        self.writer.write(&r);
        self.sinks.event(&r);
        let act = Activity::Exec(o.act);
        let name = self.names.server_name(h.server).unwrap_or("?");
        // What the kernel cannot tell (a pty driven from the network) the agent kills itself.
        let killed = h.killed || (self.policy.kills_from_userspace(name, &act) && kill::now(h.pid));
        self.evaluate(h.server, h.ktime_ns, h.pid, killed, &[act]);
    }

    /// Hands activities to the policy and delivers its alerts; `killed`:
    /// the kill layer killed the process at them.
    pub(super) fn evaluate(&mut self, server: u32, ktime_ns: u64, pid: u32, killed: bool, activities: &[Activity]) {
        if !killed && !activities.iter().any(|a| self.policy.judges(a)) {
            return;
        }
        // Ancestry and cwd cost allocations and a readlink: an exec needs them
        // to be judged, a file or network event only when it raises an alert.
        let exec = activities.iter().any(|a| matches!(a, Activity::Exec(_)));
        let dir = activities
            .iter()
            .any(|a| matches!(a, Activity::File(f) if f.access.directory));
        // A package manager run's alerts are held: they carry their ancestry.
        let held = self.procs.get(pid).is_some_and(|p| p.operation.is_some());
        let mut ctx = self.context(server, ktime_ns, pid, exec || held, exec || dir);
        ctx.killed = killed;
        let mut alerts: Vec<Alert> = activities
            .iter()
            .flat_map(|act| self.policy.evaluate(&ctx, act))
            .collect();
        if !exec && alerts.iter().any(|a| a.pid == pid && a.ancestry.is_empty()) {
            let ancestry: Vec<AlertAncestor> = self
                .procs
                .ancestry(pid)
                .into_iter()
                .map(|(pid, exe)| AlertAncestor { pid, exe })
                .collect();
            for a in alerts.iter_mut().filter(|a| a.pid == pid && a.ancestry.is_empty()) {
                a.ancestry = ancestry.clone();
            }
        }
        for a in &alerts {
            self.emit_alert(a);
        }
    }

    /// What the policy needs to know of the process that acted.
    pub(super) fn context(&mut self, server: u32, ktime_ns: u64, pid: u32, ancestry: bool, cwd: bool) -> ProcContext {
        let ancestry = if ancestry { self.procs.ancestry(pid) } else { Vec::new() };
        let p = self.procs.get(pid).cloned().unwrap_or_default();
        let parent_argv = self.procs.get(p.ppid).map(|pp| pp.argv.clone()).unwrap_or_default();
        let (call, tools_in_flight) = match &p.call {
            // Forked during a call: that call, for the process's whole life.
            Some(c) => (Some(c.tag.clone()), c.tools_in_flight.clone()),
            None => {
                let call = self.mcp.current_call(server);
                let tools = match &call {
                    Some(c) if c.in_flight > 1 => self.mcp.tools_in_flight(server),
                    _ => Vec::new(),
                };
                (call, tools)
            }
        };
        ProcContext {
            server: self.names.server_name(server).unwrap_or("?").to_owned(),
            ktime_ns,
            pid,
            ppid: p.ppid,
            uid: p.uid,
            exe: p.exe,
            argv: p.argv,
            ancestry,
            parent_argv,
            cwd: if cwd { procs::cwd(pid) } else { None },
            // The MCP tool call in flight: alerts name the tool that caused them.
            tool: call.as_ref().map(|c| c.tool.clone()),
            call_id: call.map(|c| c.call_id),
            tools_in_flight,
            killed: false,
            operation: p.operation,
        }
    }

    /// The one way out for alerts: a `kind: "alert"` line in the event
    /// stream, the alert metrics (with the latency from the triggering
    /// kernel event) and every configured sink (queued, never waited on).
    pub(super) fn emit_alert(&mut self, alert: &Alert) {
        self.alerts += 1;
        self.recent_alerts.push(alert);
        // The alert itself goes to the sinks: the daemon's log names it only
        // at debug level, so an alert storm does not flood the log.
        log::debug!("alert {} [{}] {}", alert.rule, alert.severity.as_str(), alert.summary);
        self.writer.write_alert(alert);
        let latency_ns = Clock::now_ktime().saturating_sub(alert.ktime_ns);
        self.metrics.event(alert.server.as_deref(), "alert");
        self.metrics.alert(
            alert.server.as_deref(),
            &alert.rule,
            alert.severity.as_str(),
            latency_ns as f64 / 1e9,
        );
        if let Some(l) = alert.layer
            && (alert.would_block || alert.rule == rules::ENFORCE_DENIED.id)
        {
            self.metrics
                .enforcement(alert.server.as_deref(), l.name(), !alert.would_block);
        }
        self.sinks.send(alert);
    }
}

/// The executable that really runs: the interpreter for scripts, made absolute
/// through /proc when exec was given a relative path.
pub(super) fn exec_exe(e: &Exec) -> String {
    let path = e.interp.as_deref().unwrap_or(&e.filename);
    if path.starts_with('/') {
        return path.to_owned();
    }
    std::fs::read_link(format!("/proc/{}/exe", e.header.pid))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| path.to_owned())
}
