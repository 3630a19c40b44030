//! `mcpwatch agent`: the daemon. One task owns the maps and the enrichment
//! state; each event takes one pass: decode -> process table -> discovery ->
//! JSON line.

use std::{
    collections::HashMap as StdHashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use agent_common::{
    AgentConfig, EventKind, LossKey, WatchedProc,
    config::{CONFIG_DISCOVER_EXEC, WATCH_PENDING, WATCH_ROOT},
};
use anyhow::Context as _;
use aya::maps::{Array, HashMap, MapData, PerCpuHashMap, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    alerts::{self, Alert, AlertAncestor},
    config::Config,
    daemon::control::{ControlMsg, ControlSocket, ServerStatus, Status, WatchRequest},
    kernel::decode::{self, Addr, Event, Exec, FdKind, Header, StdioChunk, Sys},
    kernel::loader::{self, LoadOptions},
    kernel::stdio::StdioChannels,
    mcp::{ActivityKind, CallTag, Mcp, McpAlert, McpLine, McpOptions, Output},
    output::events::{Ancestor, Clock, DnsRecord, EventWriter, Record},
    output::http::{Endpoint, Readiness},
    output::metrics::Metrics,
    output::sinks::Sinks,
    pipeline::discovery::Rules,
    pipeline::dns,
    pipeline::procs::{Proc, ProcTable, read_proc},
    pipeline::servers::{Servers, validate_name},
    pipeline::sysview,
    policy::{
        self, Policy,
        activity::{Activity, ProcContext},
        reload::Sources,
    },
};

/// Kernel event kinds, for counters that start at 0 for each server.
const KERNEL_KINDS: [EventKind; 8] = EventKind::ALL;

/// How often loss is checked and dead entries pruned.
const TICK: Duration = Duration::from_secs(1);
/// How long the shutdown keeps draining the ring for slow sinks.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);
/// Records handled before the sink tasks get a turn.
const DRAIN_BATCH: usize = 512;
/// Free places every sink queue must have before a record is handled (a
/// record raises a few alerts at most; the queues hold 4096).
const SINK_ROOM: usize = 2048;
/// How often the ring is polled while records keep coming.
const POLL: Duration = Duration::from_millis(1);
/// Empty polls in a row before waiting for the kernel's wakeup again (more
/// than the kernel's 1 ms wakeup gap: a record submitted without a wakeup is
/// always seen by a poll).
const IDLE_POLLS: u32 = 3;
/// Freed heap is handed back when the ring goes quiet, at most this often.
const TRIM_GAP: Duration = Duration::from_secs(1);
/// How often the watched map is checked against /proc (a safety net).
const GC_EVERY_TICKS: u64 = 30;

#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    pub events_out: Option<PathBuf>,
    pub rules: Rules,
    pub socket: PathBuf,
    pub load: LoadOptions,
    pub keep_pins: bool,
    pub mcp: McpOptions,
    /// Manifests and host configurations.
    pub policy: Sources,
    /// The configuration file, with the command line's overrides applied.
    pub config: Config,
}

/// Everything the event loop owns besides the ring buffer.
struct State {
    watched: HashMap<MapData, u32, WatchedProc>,
    /// Which pipes are the servers' wire, for the stdio capture.
    stdio: StdioChannels,
    /// `mcpwatch_events_total` children by (server id, kind).
    event_counters: StdHashMap<(u32, EventKind), prometheus::IntCounter>,
    config: Array<MapData, AgentConfig>,
    policy: Policy,
    loss: PerCpuHashMap<MapData, LossKey, u64>,
    names: Names,
    procs: ProcTable,
    rules: Rules,
    writer: EventWriter,
    metrics: Metrics,
    sinks: Sinks,
    metrics_address: Option<String>,
    /// Loss already reported, per key.
    loss_seen: StdHashMap<LossKey, u64>,
    events: u64,
    lost: u64,
    decode_errors: u64,
    gc_removed: u64,
    alerts: u64,
    agent_pid: u32,
    /// This binary (the wrapper is never discovered by rules).
    self_exe: String,
    /// Pending (undecided) processes and the pending children they forked.
    pending: StdHashMap<u32, Vec<u32>>,
    /// What watched stdio servers say: tool calls, pins, poisoning.
    mcp: Mcp,
    /// Tool calls already counted in the metrics, per (server, tool).
    tool_calls_seen: StdHashMap<(u32, String), u64>,
    /// Addresses learnt from DNS answers, per server.
    hosts: dns::HostCache,
    /// Files each server wrote recently (for write-then-exec).
    written: Written,
    /// stdin/stdout bytes captured.
    stdio_bytes: u64,
}

/// Files each server wrote, with when: an exec of one of them soon after is
/// a dropper's signature.
#[derive(Default)]
struct Written {
    at: StdHashMap<(u32, String), u64>,
    order: std::collections::VecDeque<(u32, String)>,
}

impl Written {
    /// How long a write makes a later exec suspicious.
    const WINDOW_NS: u64 = 600 * 1_000_000_000;
    const MAX: usize = 16384;

    fn record(&mut self, server: u32, path: String, ktime: u64) {
        let key = (server, path);
        if self.at.insert(key.clone(), ktime).is_none() {
            self.order.push_back(key);
            if self.order.len() > Self::MAX
                && let Some(old) = self.order.pop_front()
            {
                self.at.remove(&old);
            }
        }
    }

    fn recent(&self, server: u32, path: &str, now: u64) -> bool {
        self.at
            .get(&(server, path.to_owned()))
            .is_some_and(|&t| now.saturating_sub(t) <= Self::WINDOW_NS)
    }
}

pub async fn run(opts: AgentOptions) -> anyhow::Result<()> {
    let metrics = Metrics::new().context("creating the metrics registry")?;
    let ready = Arc::new(Readiness::default());
    // Bind before loading anything: a taken port fails fast and leaves nothing behind.
    let endpoint = match opts.config.metrics.enabled {
        true => Some(Endpoint::bind(opts.config.metrics.address).await?),
        false => None,
    };
    let metrics_address = endpoint.as_ref().and_then(Endpoint::local_addr);
    let sinks = Sinks::start(&opts.config, &metrics).context("starting the alert sinks")?;
    let (probes, ring) = loader::load(&opts.load).context("loading the kernel programs")?;
    let mut probes = probes;
    let control = ControlSocket::bind(&opts.socket)?;
    let writer = match &opts.events_out {
        Some(p) => EventWriter::file(p).with_context(|| format!("opening {}", p.display()))?,
        None => EventWriter::stdout(),
    };
    let config: Array<MapData, AgentConfig> = probes.take_config();
    let clock = Clock::new();
    let (policy, policy_alerts) = Policy::new(opts.policy.clone(), clock, opts.config.policy.limits());

    let mut state = State {
        watched: probes.take_watched(),
        stdio: probes.take_stdio(),
        config,
        policy,
        loss: probes.take_loss(),
        names: Names {
            servers: Servers::default(),
            clock,
            ts_cache: Default::default(),
        },
        procs: ProcTable::seed_from_proc(),
        rules: opts.rules.clone(),
        writer,
        metrics: metrics.clone(),
        sinks,
        metrics_address: metrics_address.map(|a| a.to_string()),
        loss_seen: StdHashMap::new(),
        events: 0,
        lost: 0,
        decode_errors: 0,
        gc_removed: 0,
        alerts: 0,
        agent_pid: std::process::id(),
        self_exe: std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        pending: StdHashMap::new(),
        mcp: Mcp::new(&opts.mcp),
        tool_calls_seen: StdHashMap::new(),
        hosts: dns::HostCache::default(),
        written: Written::default(),
        stdio_bytes: 0,
        event_counters: StdHashMap::new(),
    };
    state.set_discovery().context("writing the CONFIG map")?;
    for a in &policy_alerts {
        state.emit_alert(a);
    }
    state.sync_pins();
    state.startup_scan();
    state.writer.flush();
    loader::release_free_memory();

    let (tx, mut rx) = mpsc::channel(64);
    let socket_path = control.path().to_owned();
    let ctl = tokio::spawn(control.serve(tx));
    let http = endpoint.map(|e| tokio::spawn(e.serve(metrics, ready.clone())));
    if let Some(a) = metrics_address {
        log::info!("metrics on http://{a}/metrics");
    }
    state.refresh_watched();
    ready.tick();
    // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd owns it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("polling the ring buffer")?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(TICK);
    let mut ticks = 0u64;
    log::info!(
        "mcpwatch agent running: {} processes in table, {} discovery rules, control socket {}",
        state.procs.len(),
        state.rules.0.len(),
        socket_path.display()
    );

    // The kernel rations wakeups (agent-ebpf/src/emit.rs): once woken, poll
    // every millisecond until the ring stayed empty a few times in a row.
    let mut polls_left = 0u32;
    let mut last_trim = std::time::Instant::now();
    // Records left in the ring by a bounded drain: drain again as soon as the
    // sink tasks (same thread) had their turn.
    let mut backlog = false;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("ring buffer poll")?;
                backlog = drain(guard.get_inner_mut(), &mut state).1;
                guard.clear_ready();
                state.writer.flush();
                polls_left = IDLE_POLLS;
            }
            _ = tokio::task::yield_now(), if backlog => {
                let (n, more) = drain(ring.get_mut(), &mut state);
                backlog = more;
                if n > 0 {
                    state.writer.flush();
                    polls_left = IDLE_POLLS;
                }
            }
            _ = tokio::time::sleep(POLL), if polls_left > 0 && !backlog => {
                let (n, more) = drain(ring.get_mut(), &mut state);
                backlog = more;
                if n > 0 {
                    state.writer.flush();
                    polls_left = IDLE_POLLS;
                } else {
                    polls_left -= 1;
                    // A burst is over: hand its freed heap back (at most once a second).
                    if polls_left == 0 && last_trim.elapsed() >= TRIM_GAP {
                        loader::release_free_memory();
                        last_trim = std::time::Instant::now();
                    }
                }
            }
            Some(msg) = rx.recv() => {
                // Events already in the ring come first: they happened before.
                backlog = drain(ring.get_mut(), &mut state).1;
                state.control(msg);
                state.writer.flush();
            }
            _ = tick.tick() => {
                ticks += 1;
                backlog = drain(ring.get_mut(), &mut state).1;
                state.report_loss();
                state.policy_tick();
                state.procs.prune_dead();
                state.mcp_tick();
                state.refresh_watched();
                ready.tick();
                if ticks.is_multiple_of(GC_EVERY_TICKS) {
                    state.gc_watched();
                    // Bursts leave freed heap behind: hand it back.
                    loader::release_free_memory();
                }
                state.writer.flush();
            }
            _ = sighup.recv() => {
                log::info!("SIGHUP: reloading manifests and host configurations");
                backlog = drain(ring.get_mut(), &mut state).1;
                let alerts = state.policy.reload();
                state.after_reload(alerts);
                state.writer.flush();
            }
            _ = sigint.recv() => { log::info!("SIGINT: shutting down"); break; }
            _ = sigterm.recv() => { log::info!("SIGTERM: shutting down"); break; }
        }
    }

    ctl.abort();
    let _ = ctl.await;
    // Everything left, giving the sinks their turns (for a few seconds: a
    // sink stuck on a stalled disk must not hold the shutdown).
    let deadline = std::time::Instant::now() + SHUTDOWN_DRAIN;
    while drain(ring.get_mut(), &mut state).1 && std::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
    state.report_loss();
    state.mcp_tick();
    state.writer.flush();
    std::mem::take(&mut state.sinks).shutdown().await;
    if let Some(h) = http {
        h.abort();
    }
    if opts.keep_pins {
        for p in probes.pinned() {
            log::info!("leaving {} pinned (--keep-pins)", p.display());
        }
    } else {
        probes.unpin();
    }
    // Dropping the probes detaches every program and closes every map.
    drop(state);
    drop(ring);
    drop(probes);
    log::info!("detached; bye");
    Ok(())
}

/// Handles the records in the ring, at most `DRAIN_BATCH` of them and only
/// while every sink's queue has `SINK_ROOM` free: the sink tasks run on this
/// thread between drains, and a burst of alerts must wait in the ring (or be
/// counted lost by the kernel there), never overflow a sink's queue. Returns
/// how many were handled and whether some may be left.
fn drain(ring: &mut RingBuf<MapData>, state: &mut State) -> (usize, bool) {
    let mut n = 0;
    while n < DRAIN_BATCH {
        if state.sinks.room() < SINK_ROOM {
            return (n, true);
        }
        match ring.next() {
            Some(item) => state.handle(&item),
            None => return (n, false),
        }
        n += 1;
    }
    (n, true)
}

/// The executable that really runs: the interpreter for scripts, made absolute
/// through /proc when exec was given a relative path.
fn exec_exe(e: &Exec) -> String {
    let path = e.interp.as_deref().unwrap_or(&e.filename);
    if path.starts_with('/') {
        return path.to_owned();
    }
    std::fs::read_link(format!("/proc/{}/exe", e.header.pid))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| path.to_owned())
}

/// Turns ids and kernel times into the names and timestamps lines carry.
struct Names {
    servers: Servers,
    clock: Clock,
    /// Timestamp text up to the second, reused within it.
    ts_cache: std::cell::RefCell<(u64, String)>,
}

impl Names {
    fn server_name(&self, id: u32) -> Option<&str> {
        self.servers.name(id)
    }

    fn ts(&self, ktime_ns: u64) -> String {
        self.clock.rfc3339_cached(ktime_ns, &mut self.ts_cache.borrow_mut())
    }

    /// The fields every line has, from what the table knows of the process.
    fn proc_record<'a>(&'a self, kind: &'a str, server: u32, ktime_ns: u64, p: &'a Proc) -> Record<'a> {
        Record {
            ts: self.ts(ktime_ns),
            kind,
            server: self.server_name(server),
            pid: p.pid,
            ppid: p.ppid,
            uid: p.uid,
            exe: p.exe_json(),
            argv: p.argv_json(),
            ..Default::default()
        }
    }

    /// A kernel event's line: the header's fields win over the table's.
    fn base_record<'a>(&'a self, h: &'a Header, kind: &'a str, p: Option<&'a Proc>) -> Record<'a> {
        Record {
            ts: self.ts(h.ktime_ns),
            kind,
            server: self.server_name(h.server),
            pid: h.pid,
            ppid: h.ppid,
            uid: h.uid,
            exe: p.map(Proc::exe_json).unwrap_or_default(),
            argv: p.map(Proc::argv_json).unwrap_or_default(),
            tid: (h.tid != h.pid).then_some(h.tid),
            gid: Some(h.gid),
            comm: Some(&h.comm),
            ..Default::default()
        }
    }
}

impl State {
    fn handle(&mut self, bytes: &[u8]) {
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
            Event::Sys(s) if s.header.kind == EventKind::Net && sysview::op(s) == "connect" => {
                Some(ActivityKind::Connect)
            }
            Event::Fork(_) | Event::Exit(_) | Event::Sys(_) => Some(ActivityKind::Other),
            Event::Stdio(_) => None,
        };
        let tag = activity.and_then(|k| self.mcp.note_activity(event.header().server, k));
        let h = event.header();
        self.count_event(h.server, h.kind);
        match event {
            Event::Exec(e) => self.on_exec(e, tag.as_ref()),
            Event::Stdio(c) => self.on_stdio(c),
            Event::Fork(f) => {
                let h = &f.header;
                let parent = self.procs.get_or_load(h.pid).cloned().unwrap_or_default();
                self.procs.insert(Proc {
                    pid: f.child_pid,
                    ppid: h.pid,
                    uid: h.uid,
                    exe: parent.exe.clone(),
                    argv: parent.argv.clone(),
                    server: Some(h.server),
                    ..Default::default()
                });
                let mut r = self.names.base_record(h, EventKind::Fork.name(), Some(&parent));
                r.child_pid = Some(f.child_pid);
                tag_record(&mut r, tag.as_ref());
                self.writer.write(&r);
            }
            Event::Exit(x) => {
                let h = &x.header;
                // Calls it leaves unanswered are closed while the table still knows it.
                let closed = self.mcp.on_exit(h.pid, h.ktime_ns);
                self.mcp_outputs(closed);
                let gone = self.procs.remove(h.pid);
                let mut r = self.names.base_record(h, EventKind::Exit.name(), gone.as_ref());
                r.exit_code = x.exit_code;
                r.signal = x.signal;
                tag_record(&mut r, tag.as_ref());
                self.writer.write(&r);
            }
            Event::Sys(s) => self.on_sys(s, tag.as_ref()),
        }
    }

    /// `mcpwatch_events_total` for (server, kind): the counter is looked up
    /// once per pair, not per event.
    fn count_event(&mut self, server: u32, kind: EventKind) {
        let counter = match self.event_counters.get(&(server, kind)) {
            Some(c) => c,
            None => {
                let c = self.metrics.event_counter(self.names.server_name(server), kind.name());
                self.event_counters.entry((server, kind)).or_insert(c)
            }
        };
        counter.inc();
    }

    /// A file, net, dns or risky syscall of a watched process.
    fn on_sys(&mut self, s: Sys, tag: Option<&CallTag>) {
        let h = &s.header;
        // Borrowed, not cloned: exe and argv would be copied for every event.
        self.procs.get_or_load(h.pid);
        let proc = self.procs.get(h.pid);
        let kind = h.kind;
        let mut r = self.names.base_record(h, kind.name(), proc);
        r.syscall = Some(s.name);
        r.result = Some(s.ret);
        r.error = sysview::errno_name(s.ret);
        let mut extra: Option<Record> = None;
        match kind {
            EventKind::File => {
                let access = sysview::access(&s);
                let path = sysview::absolute_path(&s);
                if sysview::writes(&access) && s.ret >= 0 {
                    let target = if matches!(sysview::op(&s), "rename" | "link") {
                        s.path2.as_deref().map(|p2| match &s.base {
                            Some(b) if !p2.starts_with('/') => sysview::normalize(&format!("{b}/{p2}")),
                            _ => sysview::normalize(p2),
                        })
                    } else {
                        path.clone()
                    };
                    if let Some(t) = target {
                        self.written.record(h.server, t, h.ktime_ns);
                    }
                }
                r.op = Some(sysview::op(&s));
                r.path_resolved = Some(s.resolved);
                r.path_truncated = Some(s.path_truncated);
                if sysview::op(&s) == "open" {
                    r.path_as_given = if s.resolved {
                        s.path2.as_deref()
                    } else {
                        s.path.as_deref()
                    };
                } else {
                    r.path_as_given = s.path.as_deref();
                    r.path2 = s.path2.as_deref();
                }
                if let Some((target, file)) = path.as_deref().and_then(|p| sysview::other_proc_access(p, h.pid)) {
                    let mut x = self.names.base_record(h, EventKind::Risky.name(), proc);
                    x.op = Some("proc_access");
                    x.risk = Some(match file {
                        "mem" => "process_memory",
                        "environ" => "process_environment",
                        _ => "process_maps",
                    });
                    x.target_pid = Some(target);
                    x.path = path.clone();
                    x.result = Some(s.ret);
                    x.error = sysview::errno_name(s.ret);
                    extra = Some(x);
                }
                r.path = path;
                r.access = Some(access);
            }
            EventKind::Net => {
                r.op = Some(sysview::op(&s));
                r.proto = sysview::proto(s.sock_type, s.addr.as_ref());
                r.local_port = s.local_port;
                if let Some(a) = &s.addr {
                    r.family = Some(sysview::family(a, sysview::is_v6(a)));
                    match a {
                        Addr::Ip { ip, port, .. } => {
                            r.addr = Some(ip.to_string());
                            r.port = Some(*port);
                            r.hostname = self.hosts.lookup(h.server, ip).map(str::to_owned);
                        }
                        Addr::Unix { path, .. } => r.unix_path = Some(path),
                    }
                    if sysview::op(&s) == "listen" && s.ret == 0 {
                        let exposed = sysview::exposed(a);
                        r.exposed = Some(exposed);
                        if exposed {
                            let mut x = self.names.base_record(h, "exposed", proc);
                            x.op = Some("listen");
                            x.family = r.family;
                            x.proto = r.proto;
                            x.addr = r.addr.clone();
                            x.port = r.port;
                            extra = Some(x);
                        }
                    }
                }
            }
            EventKind::Dns => {
                let Some(msg) = dns::parse(&s.data) else {
                    log::debug!("pid {}: unparsable DNS message of {} bytes", h.pid, s.data.len());
                    return;
                };
                if msg.response && !msg.answers.is_empty() {
                    self.hosts.learn(h.server, &msg.name, &msg.answers);
                }
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
            }
            EventKind::Risky => {
                let (risk, target, note) = sysview::risk(&s);
                r.op = Some(sysview::op(&s));
                r.risk = Some(risk);
                r.target_pid = target;
                r.note = note;
                r.path = s.path.clone();
                r.path2 = s.path2.as_deref();
            }
            _ => {}
        }
        tag_record(&mut r, tag);
        let hostname = r.hostname.clone();
        self.writer.write(&r);
        if let Some(mut x) = extra {
            tag_record(&mut x, tag);
            self.writer.write(&x);
        }
        let activities = policy::adapt::sys(&s, hostname.as_deref());
        self.evaluate(h.server, h.ktime_ns, h.pid, &activities);
    }

    /// An event of a process the kernel holds as pending. Returns it as a
    /// watched event when its server is known (decided now by the rules, or
    /// inherited from a parent decided earlier), None when it stays unwatched.
    fn resolve_pending(&mut self, mut event: Event) -> Option<Event> {
        let pid = event.header().pid;
        let known = self.procs.get(pid).and_then(|p| p.server);
        let server = match (&event, known) {
            (_, Some(id)) => {
                // Decided through an ancestor after the kernel marked it.
                self.confirm_watched(pid, id);
                Some(id)
            }
            (Event::Exec(e), None) => {
                let exe = exec_exe(e);
                match self.discover(&exe, &e.argv) {
                    Some(server) if !self.is_agent(pid) => Some(self.watch_tree(pid, &server, "rule")),
                    _ => {
                        self.release_pending(pid);
                        None
                    }
                }
            }
            (Event::Fork(f), None) => {
                // The parent is undecided: the child shares its fate.
                self.pending.entry(pid).or_default().push(f.child_pid);
                self.procs.insert(Proc {
                    pid: f.child_pid,
                    ppid: pid,
                    ..Default::default()
                });
                None
            }
            (Event::Exit(_), None) => {
                self.pending.remove(&pid);
                self.procs.remove(pid);
                None
            }
            // The kernel follows no syscall of a pending process.
            (Event::Sys(_) | Event::Stdio(_), None) => None,
        }?;
        if let Event::Fork(f) = &event {
            self.confirm_watched(f.child_pid, server);
        }
        let h = event.header_mut();
        h.server = server;
        h.unwatched = false;
        Some(event)
    }

    /// Turns a pending kernel entry into a watched one (unless the process is
    /// gone: its exit hook already removed the entry).
    fn confirm_watched(&mut self, pid: u32, server: u32) {
        if let Some(p) = self.procs.get_mut(pid) {
            p.server = Some(server);
        }
        match self.watched.get(&pid, 0) {
            Ok(w) if w.flags & WATCH_PENDING != 0 => {
                let _ = self.watched.insert(pid, WatchedProc { server, flags: 0 }, 0);
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = self.watched.remove(&pid);
                }
            }
            _ => {}
        }
    }

    /// No rule matched: the process and the pending children it forked go
    /// back to unwatched (one hash lookup per hooked event).
    fn release_pending(&mut self, root: u32) {
        let mut todo = vec![root];
        while let Some(pid) = todo.pop() {
            if let Some(children) = self.pending.remove(&pid) {
                todo.extend(children);
            }
            if let Ok(w) = self.watched.get(&pid, 0)
                && w.flags & WATCH_PENDING != 0
            {
                let _ = self.watched.remove(&pid);
            }
            self.stdio.forget_pending(pid);
        }
    }

    fn on_exec(&mut self, e: Exec, tag: Option<&CallTag>) {
        let h = &e.header;
        let exe = e.exe.clone().unwrap_or_else(|| exec_exe(&e));
        let fileless = e.exe_nlink == Some(0) || exe.starts_with("/memfd:");
        let given = match (&e.cwd, e.filename.starts_with('/')) {
            (Some(cwd), false) => sysview::normalize(&format!("{cwd}/{}", e.filename)),
            _ => sysview::normalize(&e.filename),
        };
        let written =
            self.written.recent(h.server, &given, h.ktime_ns) || self.written.recent(h.server, &exe, h.ktime_ns);
        let proc = Proc {
            pid: h.pid,
            ppid: h.ppid,
            uid: h.uid,
            exe,
            argv: e.argv.clone(),
            server: Some(h.server),
            ..Default::default()
        };
        self.procs.insert(proc);
        let ancestry = self.procs.ancestry(h.pid);
        let p = self.procs.get(h.pid);
        let mut r = self.names.base_record(h, EventKind::Exec.name(), p);
        r.filename = Some(&e.filename);
        r.interp = e.interp.as_deref();
        r.argv_truncated = Some(e.argv_truncated);
        r.cwd = e.cwd.as_deref();
        r.stdio = Some(e.stdio.map(FdKind::name));
        r.fileless = Some(fileless);
        r.written_then_exec = Some(written);
        r.ancestry = Some(ancestry.iter().map(|(pid, exe)| Ancestor { pid: *pid, exe }).collect());
        tag_record(&mut r, tag);
        self.writer.write(&r);
        let activity = Activity::Exec(policy::adapt::exec(&e, fileless, written));
        self.evaluate(h.server, h.ktime_ns, h.pid, &[activity]);
    }

    /// Hands activities to the policy and delivers its alerts.
    fn evaluate(&mut self, server: u32, ktime_ns: u64, pid: u32, activities: &[Activity]) {
        if activities.is_empty() {
            return;
        }
        // Ancestry and cwd cost allocations and a readlink: an exec needs them
        // to be judged, a file or network event only when it raises an alert.
        let exec = activities.iter().any(|a| matches!(a, Activity::Exec(_)));
        let dir = activities.iter().any(|a| matches!(a, Activity::File(f) if f.directory));
        let ctx = self.context(server, ktime_ns, pid, exec, exec || dir);
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

    fn is_agent(&self, pid: u32) -> bool {
        pid == self.agent_pid
    }

    /// Watches `root` and every process already below it (children forked
    /// before userspace saw the root). Returns the server id.
    fn watch_tree(&mut self, root: u32, server: &str, reason: &str) -> u32 {
        let id = self.names.servers.id(server);
        let kinds = KERNEL_KINDS.map(EventKind::name);
        self.metrics.server_seen(server, &kinds);
        for pid in ProcTable::descendants_from_proc(root) {
            self.pending.remove(&pid);
            let flags = if pid == root { WATCH_ROOT } else { 0 };
            if let Err(e) = self.watched.insert(pid, WatchedProc { server: id, flags }, 0) {
                log::error!("cannot watch pid {pid} as {server}: {e}");
                continue;
            }
            // Exited before the insert: its exit hook ran already, so undo.
            let Some(mut p) = read_proc(pid) else {
                let _ = self.watched.remove(&pid);
                continue;
            };
            p.server = Some(id);
            let now = Clock::now_ktime();
            let mut r = self.names.proc_record("watch", id, now, &p);
            r.reason = Some(reason);
            self.writer.write(&r);
            self.metrics.event(Some(server), "watch");
            log::info!("watching pid {pid} ({}) as {server} ({reason})", p.exe);
            self.procs.insert(p);
            if pid == root {
                let source = self.stdio.register_root(pid);
                log::info!("stdio of pid {pid}: {}", source.describe());
                let ctx = self.context(id, now, pid, true, true);
                for a in self.policy.on_watch(&ctx) {
                    self.emit_alert(&a);
                }
                // Now bound to its manifest: its shipped pins follow.
                self.sync_pins();
            }
        }
        id
    }

    /// The server a process starts: `--watch` rules, then host configurations
    /// and manifests' `match` rules.
    fn discover(&self, exe: &str, argv: &[String]) -> Option<String> {
        // The wrapper registers itself under the name it was given.
        if !self.self_exe.is_empty() && exe == self.self_exe {
            return None;
        }
        self.rules
            .matches(exe, argv)
            .map(str::to_owned)
            .or_else(|| self.policy.discover(exe, argv))
    }

    /// Tells the kernel whether exec events of unwatched processes are wanted.
    fn set_discovery(&mut self) -> Result<(), aya::maps::MapError> {
        let on = !self.rules.is_empty() || self.policy.discovers();
        let flags = if on { CONFIG_DISCOVER_EXEC } else { 0 };
        self.config.set(0, AgentConfig { flags, _pad: 0 }, 0)
    }

    /// Reloads on change; delivers repeat summaries.
    fn policy_tick(&mut self) {
        if let Some(alerts) = self.policy.poll() {
            log::info!("manifests or host configurations changed: reloaded");
            self.after_reload(alerts);
        }
        for a in self.policy.tick(Clock::now_ktime()) {
            self.emit_alert(&a);
        }
    }

    fn after_reload(&mut self, alerts: Vec<alerts::Alert>) {
        for a in &alerts {
            self.emit_alert(a);
        }
        if let Err(e) = self.set_discovery() {
            log::error!("cannot update discovery in the CONFIG map: {e}");
        }
        self.sync_pins();
        // Servers started before their rule existed are found now.
        self.startup_scan();
    }

    /// Hands the tool pins manifests ship to the MCP layer; a live server
    /// whose pins changed is checked against them at once.
    fn sync_pins(&mut self) {
        let out = self
            .mcp
            .set_expected_pins(self.policy.expected_pins(), Clock::now_ktime());
        self.mcp_outputs(out);
    }

    /// What the policy needs to know of the process that acted.
    fn context(&mut self, server: u32, ktime_ns: u64, pid: u32, ancestry: bool, cwd: bool) -> ProcContext {
        let ancestry = if ancestry { self.procs.ancestry(pid) } else { Vec::new() };
        let p = self.procs.get(pid).cloned().unwrap_or_default();
        let parent_argv = self.procs.get(p.ppid).map(|pp| pp.argv.clone()).unwrap_or_default();
        let call = self.mcp.current_call(server);
        let tools_in_flight = match &call {
            Some(c) if c.in_flight > 1 => self.mcp.tools_in_flight(server),
            _ => Vec::new(),
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
            cwd: if cwd { policy::adapt::cwd(pid) } else { None },
            // The MCP tool call in flight: alerts name the tool that caused them.
            tool: call.as_ref().map(|c| c.tool.clone()),
            call_id: call.map(|c| c.call_id),
            tools_in_flight,
        }
    }

    fn startup_scan(&mut self) {
        if self.rules.is_empty() && !self.policy.discovers() {
            return;
        }
        let mut matched: Vec<(u32, String)> = Vec::new();
        for pid in ProcTable::descendants_from_proc(1) {
            let Some(p) = self.procs.get(pid) else { continue };
            if p.exe.is_empty() || p.server.is_some() || pid == self.agent_pid {
                continue;
            }
            // A descendant of a matched process is covered by its ancestor.
            if matched.iter().any(|(root, _)| self.is_below(pid, *root)) {
                continue;
            }
            if let Some(server) = self.discover(&p.exe, &p.argv) {
                matched.push((pid, server));
            }
        }
        for (pid, server) in matched {
            self.watch_tree(pid, &server, "scan");
        }
    }

    fn is_below(&self, pid: u32, root: u32) -> bool {
        let mut cur = pid;
        for _ in 0..64 {
            match self.procs.get(cur) {
                Some(p) if p.ppid == root => return true,
                Some(p) if p.ppid > 1 => cur = p.ppid,
                _ => return false,
            }
        }
        false
    }

    fn control(&mut self, msg: ControlMsg) {
        match msg {
            ControlMsg::Watch(req) => {
                let res = self.register(&req);
                let _ = req.reply.send(res);
            }
            ControlMsg::Status(reply) => {
                let _ = reply.send(self.status());
            }
            ControlMsg::TestAlert { pid, reply } => {
                let ktime = Clock::now_ktime();
                let id = format!("{ktime}-{}", self.alerts + 1);
                let alert = alerts::test_alert(id.clone(), self.names.clock.rfc3339(ktime), ktime, pid);
                self.emit_alert(&alert);
                let _ = reply.send(id);
            }
        }
    }

    fn register(&mut self, req: &WatchRequest) -> Result<String, String> {
        validate_name(&req.server).map_err(|e| e.to_string())?;
        if let Ok(w) = self.watched.get(&req.pid, 0) {
            // A watched process cannot launder itself into another server.
            let current = self.names.server_name(w.server).unwrap_or("?").to_owned();
            log::warn!(
                "pid {} asked to be watched as {} but is already watched as {current}",
                req.pid,
                req.server
            );
            return Ok(current);
        }
        self.watch_tree(req.pid, &req.server, "wrapper");
        self.watched.get(&req.pid, 0).map(|_| req.server.clone()).map_err(|e| {
            format!(
                "could not add pid {} (uid {}) to the watched map: {e}",
                req.pid, req.uid
            )
        })
    }

    fn status(&self) -> Status {
        let mut entries: Vec<(u32, WatchedProc)> = self.watched.iter().flatten().collect();
        entries.sort_unstable_by_key(|(pid, _)| *pid);
        let mut st = Status {
            events: self.events,
            lost: self.lost,
            gc_removed: self.gc_removed,
            stdio_bytes: self.stdio_bytes,
            metrics_address: self.metrics_address.clone(),
            ..Default::default()
        };
        for (pid, w) in entries {
            if w.flags & WATCH_PENDING != 0 {
                st.pending.push(pid);
                continue;
            }
            st.watched.push(pid);
            let name = self.names.server_name(w.server).unwrap_or("?").to_owned();
            match st.servers.iter_mut().find(|s| s.name == name) {
                Some(s) => s.pids.push(pid),
                None => st.servers.push(ServerStatus { name, pids: vec![pid] }),
            }
        }
        st
    }

    /// A captured stdio chunk of a watched server: the MCP conversation.
    fn on_stdio(&mut self, chunk: StdioChunk) {
        self.stdio_bytes += chunk.data.len() as u64;
        let server = chunk.header.server;
        let name = self.names.server_name(server).unwrap_or("?").to_owned();
        let out = self.mcp.on_chunk(&name, &chunk);
        self.mcp_outputs(out);
    }

    /// Brings `mcpwatch_tool_calls_total` up to the MCP layer's own counts.
    fn export_tool_calls(&mut self) {
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
    fn mcp_tick(&mut self) {
        let out = self.mcp.tick(Clock::now_ktime());
        self.mcp_outputs(out);
        // Once a tick, not per chunk: scrapes are seconds apart anyway.
        self.export_tool_calls();
    }

    fn mcp_outputs(&mut self, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Line(l) => self.mcp_line(l),
                Output::Alert(a) => self.mcp_alert(a),
            }
        }
    }

    fn mcp_line(&mut self, l: McpLine) {
        let p = self.procs.get_or_load(l.pid).cloned().unwrap_or(Proc {
            pid: l.pid,
            ..Default::default()
        });
        let mut r = self.names.proc_record(l.kind, l.server, l.ktime_ns, &p);
        r.tool = l.tool.as_deref();
        r.call_id = l.call_id.as_deref();
        r.detail = Some(l.fields);
        self.writer.write(&r);
    }

    fn mcp_alert(&mut self, a: McpAlert) {
        let p = self.procs.get_or_load(a.pid).cloned().unwrap_or(Proc {
            pid: a.pid,
            ..Default::default()
        });
        let ancestry = self.procs.ancestry(a.pid);
        self.alerts += 1;
        let alert = Alert {
            id: format!("{}-{}", a.ktime_ns, self.alerts),
            ts: self.names.clock.rfc3339(a.ktime_ns),
            ktime_ns: a.ktime_ns,
            rule: a.rule.to_owned(),
            severity: a.severity,
            summary: a.summary,
            host: alerts::hostname(),
            server: self.names.server_name(a.server).map(str::to_owned),
            manifest: if a.evidence["baseline"] == "manifest" {
                // Shipped pins: the manifest is what judged the listing.
                self.names
                    .server_name(a.server)
                    .and_then(|n| self.policy.manifest_of(n))
                    .map(|(file, _)| file)
            } else {
                None
            },
            pid: a.pid,
            ppid: p.ppid,
            uid: p.uid,
            exe: p.exe,
            argv: p.argv,
            ancestry: ancestry
                .into_iter()
                .map(|(pid, exe)| alerts::AlertAncestor { pid, exe })
                .collect(),
            evidence: a.evidence,
            declared: None,
            mitre: None,
            tool: a.tool,
            call_id: a.call_id,
            count: 1,
            repeat_of: None,
        };
        self.emit_alert(&alert);
    }

    /// The one way out for alerts: a `kind: "alert"` line in the event
    /// stream, the alert metrics (with the latency from the triggering
    /// kernel event) and every configured sink (queued, never waited on).
    fn emit_alert(&mut self, alert: &Alert) {
        self.alerts += 1;
        log::warn!("alert {} [{}] {}", alert.rule, alert.severity.as_str(), alert.summary);
        self.writer.write_alert(alert);
        let latency_ns = Clock::now_ktime().saturating_sub(alert.ktime_ns);
        self.metrics.event(alert.server.as_deref(), "alert");
        self.metrics.alert(
            alert.server.as_deref(),
            &alert.rule,
            alert.severity.as_str(),
            latency_ns as f64 / 1e9,
        );
        self.sinks.send(alert);
    }

    /// Watched processes per server, for the gauges.
    fn refresh_watched(&mut self) {
        let mut per_server: StdHashMap<u32, usize> = StdHashMap::new();
        for (_, w) in self.watched.iter().flatten() {
            if w.flags & WATCH_PENDING == 0 {
                *per_server.entry(w.server).or_default() += 1;
            }
        }
        let named: Vec<(&str, usize)> = per_server
            .iter()
            .map(|(id, n)| (self.names.server_name(*id).unwrap_or("?"), *n))
            .collect();
        self.metrics.watched(&named);
    }

    /// Reports ring-buffer loss counted by the kernel since the last check.
    fn report_loss(&mut self) {
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
            self.lost += lost;
            let kind = EventKind::from_u32(key.kind).map(EventKind::name).unwrap_or("unknown");
            let server = self.names.servers.name(key.server);
            self.metrics.lost(server, kind, lost);
            self.metrics.event(server, "loss");
            log::warn!(
                "{lost} {kind} events of server {} lost in the kernel (ring buffer full)",
                server.unwrap_or("-")
            );
            let r = Record {
                ts: self.names.clock.rfc3339(Clock::now_ktime()),
                kind: "loss",
                server,
                event_kind: Some(kind),
                lost: Some(lost),
                ..Default::default()
            };
            self.writer.write(&r);
        }
    }

    /// Removes watched-map entries whose process is gone (should stay 0).
    fn gc_watched(&mut self) {
        let stale: Vec<u32> = self
            .watched
            .keys()
            .flatten()
            .filter(|pid| !Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        for pid in stale {
            if self.watched.remove(&pid).is_ok() {
                self.gc_removed += 1;
                self.procs.remove(pid);
                log::warn!("removed stale watched pid {pid} (its exit was not seen)");
            }
        }
    }
}

/// Marks a kernel event's line with the tool call it happened during.
fn tag_record<'a>(r: &mut Record<'a>, tag: Option<&'a CallTag>) {
    if let Some(t) = tag {
        r.tool = Some(&t.tool);
        r.call_id = Some(&t.call_id);
        r.calls_in_flight = (t.in_flight > 1).then_some(t.in_flight);
    }
}
