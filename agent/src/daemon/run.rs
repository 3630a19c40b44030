//! `mcpwatch agent`: the daemon's loop, and nothing else. It starts the
//! stages, then waits on the kernel's ring, the control socket, a tick and
//! signals, and hands each to the [`Agent`]; at the end it drains what is
//! left and detaches.

use std::{collections::HashMap as StdHashMap, path::PathBuf, sync::Arc, time::Duration};

use agent_common::{AgentConfig, LossKey};
use anyhow::Context as _;
use aya::maps::{Array, MapData};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use super::agent::Agent;
use crate::{
    alerts::AlertFactory,
    config::Config,
    daemon::control::ControlSocket,
    daemon::handover::Handover,
    kernel::{
        loader::{self, LoadOptions, Origin},
        ring::EventRing,
    },
    mcp::{Mcp, McpOptions},
    output::{
        events::{Clock, EventWriter},
        http::{Endpoint, Readiness},
        lines::Names,
        metrics::Metrics,
        sinks::Sinks,
    },
    pipeline::{
        discovery::Rules, dns, history::WriteHistory, procs::ProcTable, registrations::Registrations, servers::Servers,
    },
    policy::{Policy, reload::Sources},
};

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
/// Ticks that trim the heap after a control request (see `trim_ticks`).
const TRIM_TICKS: u32 = 5;

#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    pub events_out: Option<PathBuf>,
    pub rules: Rules,
    pub socket: PathBuf,
    pub load: LoadOptions,
    /// At a clean stop, leave the kernel objects pinned for the next agent
    /// (an upgrade) instead of detaching.
    pub keep_sensors_on_exit: bool,
    pub mcp: McpOptions,
    /// Manifests and host configurations.
    pub policy: Sources,
    /// The configuration file, with the command line's overrides applied.
    pub config: Config,
    /// Where the configuration was read from (protected: see `pipeline/tamper.rs`).
    pub config_path: Option<PathBuf>,
}

pub async fn run(opts: AgentOptions) -> anyhow::Result<()> {
    // First: an agent without the privileges it needs says so, before an
    // EACCES from the state directory or an EPERM from its first map.
    super::privileges::check()?;
    raise_fd_limit();
    let metrics = Metrics::new().context("creating the metrics registry")?;
    let ready = Arc::new(Readiness::default());
    // Bind before loading anything: a taken port fails fast and leaves nothing behind.
    let endpoint = match opts.config.metrics.enabled {
        true => Some(Endpoint::bind(opts.config.metrics.address).await?),
        false => None,
    };
    let metrics_address = endpoint.as_ref().and_then(Endpoint::local_addr);
    let clock = Clock::new();
    let agent_id = crate::output::agent_id::load_or_create(&opts.config.state_dir)?;
    log::info!("agent id {agent_id}");
    let factory = AlertFactory::new(clock);
    let sinks = Sinks::start(&opts.config, &metrics, &factory).context("starting the alert sinks")?;
    // What the previous agent said about the kernel objects it kept: only
    // the pins it describes are reused (their server ids mean its names).
    let previous = Handover::load(&opts.config.state_dir);
    let mut load = opts.load.clone();
    load.expected_marker = previous
        .as_ref()
        .and_then(|h| h.marker_for(&load.pin_dir()))
        .map(str::to_owned);
    let (probes, ring) = loader::load(&load).context("loading the kernel programs")?;
    let mut probes = probes;
    let kept = probes.origin == Origin::Kept;
    let previous = previous.filter(|_| kept).unwrap_or_default();
    let handover = Handover {
        pin_dir: probes.pin_dir().to_owned(),
        marker: probes.marker.clone(),
        ..previous
    };
    if let Err(e) = handover.save(&opts.config.state_dir) {
        log::error!("the next agent will not reuse the kernel objects: {e}");
    }
    let control = ControlSocket::bind(&opts.socket)?;
    let writer = match &opts.events_out {
        Some(p) => EventWriter::file(p, opts.config.events).with_context(|| format!("opening {}", p.display()))?,
        None => EventWriter::stdout(opts.config.events.format).with_level(opts.config.events.level),
    };
    let config: Array<MapData, AgentConfig> = probes.take_config();
    let (policy, policy_alerts) = Policy::new(opts.policy.clone(), factory.clone(), opts.config.policy.limits());

    let mut state = Agent {
        watched: probes.take_watched(),
        stdio: probes.take_stdio(),
        config,
        policy,
        loss: probes.take_loss(),
        probe_errors: {
            let mut p = probes.take_probe_errors();
            p.set_seen(&handover.probe_errors);
            p
        },
        names: Names {
            servers: Servers::restore(&handover.servers, handover.last_server_id),
            clock,
            ts_cache: Default::default(),
        },
        procs: ProcTable::seed_from_proc(),
        rules: opts.rules.clone(),
        writer,
        metrics: metrics.clone(),
        sinks,
        metrics_address: metrics_address.map(|a| a.to_string()),
        loss_seen: handover
            .loss
            .iter()
            .map(|&(server, kind, n)| (LossKey { server, kind }, n))
            .collect(),
        events: 0,
        lost: 0,
        decode_errors: 0,
        released_records: 0,
        decode_errors_seen: 0,
        loss_fold: Default::default(),
        sink_drops_seen: StdHashMap::new(),
        events_dropped_seen: 0,
        registrations: Registrations::load(&opts.config.state_dir).unwrap_or_else(|e| {
            log::error!("watched servers of a previous run are not adopted again: {e}");
            Registrations::empty(&opts.config.state_dir)
        }),
        gc_removed: 0,
        alerts: 0,
        factory,
        agent_pid: std::process::id(),
        self_exe: std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        pending: Default::default(),
        mcp: Mcp::new(&opts.mcp),
        tool_calls_seen: StdHashMap::new(),
        hosts: dns::HostCache::default(),
        queries: dns::Outstanding::default(),
        written: WriteHistory::default(),
        stdio_bytes: 0,
        event_counters: Default::default(),
        bounds: super::bounds::ServerBounds::new(opts.config.servers),
        state_dir: opts.config.state_dir.clone(),
        handover,
        enforce: opts.config.enforce.clone(),
        enforce_missing: Vec::new(),
        cgroup_net: None,
        kill: None,
        tamper: protected(&opts, probes.pin_dir()),
        recent_alerts: Default::default(),
        activities: Vec::new(),
    };
    state.policy.set_default_mode(opts.config.enforce.default_mode);
    // No silent non-enforcement: what this kernel enforces, per layer, in
    // the log and the metrics.
    let simulated = opts.config.enforce.simulated_missing();
    let previous_cgroups = std::mem::take(&mut state.handover.cgroups);
    let mut cgroup_links = Vec::new();
    let cgroup = if simulated.contains(&crate::enforce::Layer::Cgroup) {
        Err("simulated".to_owned())
    } else {
        match crate::enforce::cgroup::CgroupLayer::start(
            probes.objects_mut(),
            opts.config.enforce.upstream(),
            metrics.clone(),
            &previous_cgroups,
        ) {
            Ok((layer, links)) => {
                let at = format!("attached to {}", layer.root().display());
                state.cgroup_net = Some(layer);
                cgroup_links = links;
                Ok(at)
            }
            Err(e) => Err(e.to_string()),
        }
    };
    // Pinned like the tracepoints' links, replacing a previous agent's
    // (which kept its enforced servers' allowlists in force until now).
    if let Err(e) = probes.keep_links(cgroup_links) {
        log::error!("the cgroup programs are not kept across a restart: {e}");
    }
    // The servers whose cgroups were taken over are judged by the sandbox
    // they run in (their refusals are `enforce.denied`), from their first
    // event on: what was queued while no agent ran included.
    for r in state.cgroup_net.as_ref().map(|c| c.records()).unwrap_or_default() {
        state.policy.set_sandbox(&r.sandbox.server, &r.full_sandbox());
    }
    state.save_handover();
    let kill = if simulated.contains(&crate::enforce::Layer::Kill) {
        Err("simulated".to_owned())
    } else {
        let allow = state.cgroup_net.as_ref().map(|c| c.allow_map());
        match crate::kernel::kill::KillMaps::new(probes.objects_mut(), allow) {
            Ok(maps) => {
                state.kill = Some(maps);
                crate::kernel::kill::probe(probes.objects_mut())
            }
            Err(e) => Err(e.to_string()),
        }
    };
    // Without it, the kill layer's findings say what it would have blocked.
    state.policy.set_kill_missing(kill.is_err());
    let layers = crate::enforce::check::layers(&simulated, &cgroup, &kill);
    for l in &layers {
        let state_word = if l.enforced { "enforced" } else { "NOT enforced" };
        log::info!("enforcement layer {}: {state_word} ({})", l.layer.name(), l.detail);
        state.metrics.enforce_layer(l.layer.name(), l.enforced);
    }
    state.enforce_missing = crate::enforce::check::missing_for_sandbox(&layers);
    state.set_discovery().context("writing the CONFIG map")?;
    for a in &policy_alerts {
        state.emit_alert(a);
    }
    state.sync_pins();
    let mut ring = ring;
    if kept {
        // What the kernel queued while no agent ran happened first.
        let mut n = 0;
        loop {
            let (done, more) = drain(&mut ring, &mut state);
            n += done;
            if !more {
                break;
            }
            tokio::task::yield_now().await;
        }
        log::info!("{n} records queued while no agent ran, handled");
        state.writer.flush();
    }
    // What a previous agent watched first, under the names it had; then the rules.
    state.readopt(kept);
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
    // Manifests and host configurations are read and compiled off the loop.
    let mut reloader = state.policy.reloader().context("starting the policy reload thread")?;
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
    let running = format!(
        "mcpwatch agent running: {} processes in table, {} discovery rules, control socket {}",
        state.procs.len(),
        state.rules.0.len(),
        socket_path.display()
    );
    log::info!("{running}");
    let started = std::time::Instant::now();
    let heartbeat = Duration::from_secs(opts.config.heartbeat_s);
    let mut last_heartbeat = started;
    let mut notifier = super::notify::Notifier::new();
    notifier.ready(&running);

    // The kernel rations wakeups (agent-ebpf/src/emit.rs): once woken, poll
    // every millisecond until the ring stayed empty a few times in a row.
    let mut polls_left = 0u32;
    let mut last_trim = std::time::Instant::now();
    // Ticks that still hand freed heap back after a control request (a
    // registration's state is freed when its server is forgotten, seconds
    // later; its ring records may be drained outside the poll branch).
    let mut trim_ticks = 0u32;
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
            Some(loaded) = reloader.loaded.recv() => {
                backlog = drain(ring.get_mut(), &mut state).1;
                state.policy_loaded(loaded);
                state.writer.flush();
            }
            Some(msg) = rx.recv() => {
                // Events already in the ring come first: they happened before.
                backlog = drain(ring.get_mut(), &mut state).1;
                state.control(msg);
                state.writer.flush();
                trim_ticks = TRIM_TICKS;
            }
            _ = tick.tick() => {
                ticks += 1;
                backlog = drain(ring.get_mut(), &mut state).1;
                state.report_loss();
                state.policy_tick();
                state.procs.prune_dead();
                state.mcp_tick();
                state.refresh_watched();
                if trim_ticks > 0 && last_trim.elapsed() >= TRIM_GAP {
                    trim_ticks -= 1;
                    loader::release_free_memory();
                    last_trim = std::time::Instant::now();
                }
                ready.tick();
                notifier.tick(TICK);
                if !heartbeat.is_zero() && last_heartbeat.elapsed() >= heartbeat {
                    last_heartbeat = std::time::Instant::now();
                    state.heartbeat(started.elapsed());
                }
                if ticks.is_multiple_of(GC_EVERY_TICKS) {
                    state.gc_watched();
                    if let Err(e) = state.registrations.prune() {
                        log::error!("{e}");
                    }
                    // Bursts leave freed heap behind: hand it back.
                    loader::release_free_memory();
                }
                state.writer.flush();
            }
            _ = sighup.recv() => {
                log::info!("SIGHUP: reloading manifests and host configurations, reopening the events file");
                backlog = drain(ring.get_mut(), &mut state).1;
                state.writer.flush();
                state.writer.reopen();
                reloader.force();
            }
            _ = sigint.recv() => {
                if sent_by_watched(ring.get_mut(), &mut state, libc::SIGINT).await {
                    continue;
                }
                log::info!("SIGINT: shutting down");
                break;
            }
            _ = sigterm.recv() => {
                if sent_by_watched(ring.get_mut(), &mut state, libc::SIGTERM).await {
                    continue;
                }
                log::info!("SIGTERM: shutting down");
                break;
            }
        }
    }

    notifier.stopping();
    ctl.abort();
    let _ = ctl.await;
    // Everything left, giving the sinks their turns (for a few seconds: a
    // sink stuck on a stalled disk must not hold the shutdown).
    let deadline = std::time::Instant::now() + SHUTDOWN_DRAIN;
    while drain(ring.get_mut(), &mut state).1 && std::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
    state.report_loss();
    state.policy_drain();
    state.mcp_tick();
    state.writer.flush();
    std::mem::take(&mut state.sinks).shutdown().await;
    if let Some(h) = http {
        h.abort();
    }
    state.save_handover();
    probes.release(opts.keep_sensors_on_exit);
    // Dropping the probes closes every descriptor: unpinned, the programs
    // detach and the maps go.
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
fn drain(ring: &mut EventRing, state: &mut Agent) -> (usize, bool) {
    // Sent before the servers got the answers: named before their connects.
    state.learn_resolved();
    let mut n = 0;
    while n < DRAIN_BATCH {
        if state.sinks.room() < SINK_ROOM {
            ring.publish();
            return (n, true);
        }
        match ring.next() {
            Some(record) => state.handle(record),
            None => return (n, false),
        }
        n += 1;
    }
    // Left with records still queued: the space read so far is the
    // producer's again now, not at the next batch's 64th record.
    ring.publish();
    (n, true)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: any local user can open
/// control connections, and the agent running out of descriptors would stop
/// accepting the wrapper's registration (and opening manifests).
fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 || l.rlim_cur >= l.rlim_max {
            return;
        }
        let soft = l.rlim_cur;
        l.rlim_cur = l.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &l) == 0 {
            log::info!("open files limit raised from {soft} to {}", l.rlim_max);
        } else {
            log::warn!(
                "cannot raise the open files limit from {soft}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// What the agent stands on, for the self-protection rules: a watched
/// process changing any of these is an `agent.tamper` alert.
fn protected(opts: &AgentOptions, pin_dir: &std::path::Path) -> crate::pipeline::tamper::Guard {
    use crate::pipeline::tamper::{Guard, Protected};
    let p = |path: &std::path::Path, what| Protected {
        path: path.to_owned(),
        what,
    };
    let mut list = Vec::new();
    if let Some(c) = &opts.config_path {
        list.push(p(c, "configuration"));
    }
    for d in &opts.policy.manifest_dirs {
        list.push(p(d, "manifests"));
    }
    list.push(p(&opts.config.state_dir, "state (pins, approvals, handover)"));
    list.push(p(&opts.config.spool_dir(), "spool"));
    if let Some(e) = &opts.events_out {
        list.push(p(e, "events file"));
    }
    list.push(p(pin_dir, "bpffs pins"));
    if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
        list.push(p(&exe, "binary"));
    }
    // Paths as the kernel reports them: through symlinks (a /var/run ->
    // /run) the resolved path is what an open names.
    let canonical: Vec<Protected> = list
        .iter()
        .filter_map(|x| {
            let c = std::fs::canonicalize(&x.path).ok()?;
            (c != x.path).then(|| p(&c, x.what))
        })
        .collect();
    list.extend(canonical);
    Guard::new(std::process::id(), list)
}

/// How long a stop signal waits for the record of its sender: the kernel
/// queues the signal before the sender's program writes the record, so the
/// agent may wake first.
const SENDER_RECORD_WAIT: Duration = Duration::from_millis(20);

/// Whether the SIGTERM or SIGINT just received came from a watched process
/// (self-protection: an `agent.tamper` alert was raised for it, and the
/// agent keeps running). The ring is drained first: the sender's record is
/// there, or arrives within [`SENDER_RECORD_WAIT`].
async fn sent_by_watched(ring: &mut EventRing, state: &mut Agent, sig: i32) -> bool {
    // What is queued now, in bounded batches (the sender's record is among
    // the first: the agent was signalled after it was written, or while).
    let catch_up = |ring: &mut EventRing, state: &mut Agent| {
        for _ in 0..64 {
            if !drain(ring, state).1 {
                break;
            }
        }
    };
    catch_up(ring, state);
    if !state.tamper.take_signal(sig) {
        tokio::time::sleep(SENDER_RECORD_WAIT).await;
        catch_up(ring, state);
        if !state.tamper.take_signal(sig) {
            return false;
        }
    }
    state.writer.flush();
    log::warn!("signal {sig} came from a watched process (agent.tamper raised): not stopping");
    true
}
