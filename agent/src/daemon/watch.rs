//! What is watched: discovery rules and host configurations at exec, the
//! pending process trees the kernel holds until userspace decides, the
//! start-up scan, the wrapper's registrations and the kernel's watched map.

use std::path::Path;

use agent_common::{
    AgentConfig, EventKind, WatchedProc,
    config::{CONFIG_DISCOVER_EXEC, WATCH_PENDING, WATCH_ROOT},
};

use super::agent::{Agent, exec_exe};
use crate::{
    alerts::{Alert, rules},
    kernel::decode::Event,
    output::events::Clock,
    pipeline::procs::{Proc, ProcTable, read_proc},
    policy::reload::Loaded,
};
use crate::{kernel::watchset::WatchSet, pipeline::discovery};

impl Agent {
    /// An event of a process the kernel holds as pending. Returns it as a
    /// watched event when its server is known (decided now by the rules, or
    /// inherited from a parent decided earlier), None when it stays unwatched.
    pub(super) fn resolve_pending(&mut self, mut event: Event) -> Option<Event> {
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
                self.pending.forked(pid, f.child_pid);
                self.procs.insert(Proc {
                    pid: f.child_pid,
                    ppid: pid,
                    ..Default::default()
                });
                None
            }
            (Event::Exit(_), None) => {
                self.pending.forget(pid);
                self.procs.remove(pid);
                None
            }
            // A syscall of a process no rule made a server (the kernel
            // reports them until userspace decides): dropped unjudged, counted.
            (Event::Sys(_) | Event::Stdio(_), None) => {
                self.released_records += 1;
                None
            }
        }?;
        if let Event::Fork(f) = &event {
            self.confirm_watched(f.child_pid, server);
        }
        let h = event.header_mut();
        h.server = server;
        h.unwatched = false;
        Some(event)
    }

    /// Turns a pending kernel entry into a watched one.
    pub(super) fn confirm_watched(&mut self, pid: u32, server: u32) {
        if let Some(p) = self.procs.get_mut(pid) {
            p.server = Some(server);
        }
        discovery::confirm(&mut self.watched, pid, server, |pid| {
            Path::new(&format!("/proc/{pid}")).exists()
        });
    }

    /// No rule matched: the pending tree goes back to unwatched.
    pub(super) fn release_pending(&mut self, root: u32) {
        for pid in self.pending.release(&mut self.watched, root) {
            self.stdio.forget_pending(pid);
        }
    }

    pub(super) fn is_agent(&self, pid: u32) -> bool {
        pid == self.agent_pid
    }

    /// Watches `root` and every process already below it (children forked
    /// before userspace saw the root). Returns the server id.
    pub(super) fn watch_tree(&mut self, root: u32, server: &str, reason: &str) -> u32 {
        let id = self.names.servers.id(server);
        if self.names.servers.len() > self.handover.servers.len() {
            // Saved before the kernel carries the id: a next agent that
            // takes the kernel objects over must know what it names.
            self.save_handover();
        }
        let kinds = EventKind::ALL.map(EventKind::name);
        self.metrics.server_seen(server, &kinds);
        // The wrapper registers before it starts anything: the children its
        // pid had before it exec'd `mcpwatch exec` (a shell's background
        // jobs) are not the server's. Found by a rule, scan or restart, the
        // server may have forked before userspace saw it: its tree is.
        let tree = if reason == "wrapper" {
            vec![root]
        } else {
            ProcTable::descendants_from_proc(root)
        };
        for pid in tree {
            self.pending.forget(pid);
            let flags = if pid == root { WATCH_ROOT } else { 0 };
            if let Err(e) = self.watched.watch(pid, WatchedProc { server: id, flags }) {
                log::error!("cannot watch pid {pid} as {server}: {e}");
                continue;
            }
            // Exited before the insert: its exit hook ran already, so undo.
            let Some(mut p) = read_proc(pid) else {
                self.watched.unwatch(pid);
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
                // A restarted agent finds it again under this name.
                if let Err(e) = self.registrations.add(server, pid, reason == "wrapper") {
                    log::error!("pid {pid} will not be found again after a restart: {e}");
                }
                let source = self.stdio.register_root(pid);
                log::info!("stdio of pid {pid}: {}", source.describe());
                let ctx = self.context(id, now, pid, true, true);
                for a in self.policy.on_watch(&ctx, reason == "wrapper") {
                    self.emit_alert(&a);
                }
                // Now bound to its manifest: its shipped pins follow.
                self.sync_pins();
                // Found without the wrapper (a restarted agent's servers are
                // synced once it knows which of them are wrapped).
                if reason == "rule" || reason == "scan" {
                    self.sync_kill();
                }
            }
        }
        id
    }

    /// Makes the kill layer's maps say what the policy wants killed: the
    /// servers in enforce mode the wrapper did not launch. Called when a
    /// server is found or forgotten and after a reload.
    pub(super) fn sync_kill(&mut self) {
        let Some(maps) = self.kill.as_mut() else {
            return;
        };
        let want: Vec<(u32, &crate::enforce::kill::KillSet)> = self
            .policy
            .kill_policies()
            .into_iter()
            .filter_map(|(name, k)| {
                self.names
                    .servers
                    .iter()
                    .find(|(_, n)| *n == name)
                    .map(|(id, _)| (id, k))
            })
            .collect();
        maps.sync(&want);
    }

    /// The server a process starts: `--watch` rules, then host configurations
    /// and manifests' `match` rules.
    pub(super) fn discover(&self, exe: &str, argv: &[String]) -> Option<String> {
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
    pub(super) fn set_discovery(&mut self) -> Result<(), aya::maps::MapError> {
        let on = !self.rules.is_empty() || self.policy.discovers();
        let flags = if on { CONFIG_DISCOVER_EXEC } else { 0 };
        self.config.set(0, AgentConfig { flags, _pad: 0 }, 0)
    }

    /// Watches again the roots a previous agent watched (same pid, same
    /// start time), under the names they had. With the kernel objects
    /// `kept`, the kernel never stopped watching them (`takeover`: no gap);
    /// otherwise they ran unwatched from the previous agent's end
    /// (`restart`: an `agent.watch_gap` each).
    pub(super) fn readopt(&mut self, kept: bool) {
        let reason = if kept { "takeover" } else { "restart" };
        for r in self.registrations.live() {
            if self.is_agent(r.pid) {
                continue;
            }
            let id = self.watch_tree(r.pid, &r.server, reason);
            if r.wrapped {
                // Still in the sandbox the wrapper applied: not the kill layer's.
                self.policy.set_wrapped(&r.server);
            }
            if kept || self.watched.state(r.pid).is_none() {
                continue;
            }
            // Not silent: the SOC learns the server ran unwatched for a while.
            let ctx = self.context(id, Clock::now_ktime(), r.pid, true, false);
            let mut alert = self.factory.raise_about(
                &rules::AGENT_WATCH_GAP,
                format!(
                    "server {} (pid {}) was not watched between the previous agent's end and this one's start",
                    r.server, r.pid
                ),
                &ctx,
            );
            alert.evidence = serde_json::json!({ "pid": r.pid, "start_time": r.start_time });
            self.emit_alert(&alert);
        }
        self.sync_kill();
        if kept {
            // Watched processes whose root is gone keep the id the kernel
            // gave them, which the previous agent's names resolve.
            for (pid, w) in self.watched.entries() {
                if w.flags & WATCH_PENDING == 0
                    && let Some(p) = self.procs.get_mut(pid)
                    && p.server.is_none()
                {
                    p.server = Some(w.server);
                }
            }
        }
    }

    pub(super) fn startup_scan(&mut self) {
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

    pub(super) fn is_below(&self, pid: u32, root: u32) -> bool {
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

    /// Delivers repeat summaries.
    pub(super) fn policy_tick(&mut self) {
        for a in self.policy.tick(Clock::now_ktime()) {
            self.emit_alert(&a);
        }
        // Credential files and declared programs as they are on disk now.
        if self.policy.refresh_identities() {
            self.sync_kill();
        }
    }

    /// Delivers every pending repeat summary (SIGTERM/SIGINT: the counts
    /// are reported, not lost with the agent).
    pub(super) fn policy_drain(&mut self) {
        for a in self.policy.drain_repeats() {
            self.emit_alert(&a);
        }
    }

    /// Swaps in what the reload thread loaded (a change, or SIGHUP).
    pub(super) fn policy_loaded(&mut self, loaded: Loaded) {
        log::info!("manifests or host configurations reloaded");
        let alerts = self.policy.apply(loaded);
        self.after_reload(alerts);
    }

    pub(super) fn after_reload(&mut self, alerts: Vec<Alert>) {
        for a in &alerts {
            self.emit_alert(a);
        }
        if let Err(e) = self.set_discovery() {
            log::error!("cannot update discovery in the CONFIG map: {e}");
        }
        self.sync_pins();
        self.sync_kill();
        // Servers started before their rule existed are found now.
        self.startup_scan();
    }

    /// Hands the tool pins manifests ship to the MCP layer; a live server
    /// whose pins changed is checked against them at once.
    pub(super) fn sync_pins(&mut self) {
        let out = self
            .mcp
            .set_expected_pins(self.policy.expected_pins(), Clock::now_ktime());
        self.mcp_outputs(out);
    }
}
