//! What the agent answers: control-socket requests (watch, gate, status,
//! top, test alert), a wrapper's registration and the sandbox it gets.

use agent_common::{WatchedProc, config::WATCH_PENDING};

use super::{
    agent::Agent,
    control::{ControlMsg, Registered, ServerStatus, Status, WatchRequest},
};
use crate::{
    alerts::rules, enforce::Layer, kernel::watchset::WatchSet, output::events::Clock, pipeline::servers::validate_name,
};

impl Agent {
    pub(super) fn control(&mut self, msg: ControlMsg) {
        match msg {
            ControlMsg::Watch(req) => {
                let res = self.register(&req);
                let _ = req.reply.send(res);
            }
            ControlMsg::Gate(req) => self.gate_request(req),
            ControlMsg::Status(reply) => {
                let _ = reply.send(self.status());
            }
            ControlMsg::Top(reply) => {
                let _ = reply.send(self.top());
            }
            ControlMsg::TestAlert { pid, reply } => {
                let mut alert = self.factory.raise(
                    &rules::AGENT_TEST,
                    Clock::now_ktime(),
                    "mcpwatch test alert: delivery works".into(),
                );
                alert.pid = pid;
                alert.evidence = serde_json::json!({ "requested_by_pid": pid });
                let sinks = self.sinks.track(&alert.id);
                self.emit_alert(&alert);
                let _ = reply.send(super::control::TestAlertSent { id: alert.id, sinks });
            }
        }
    }

    /// The names the enforced servers' resolvers answered: their connects
    /// to those addresses are judged by name, like a DNS answer the server
    /// received itself.
    pub(super) fn learn_resolved(&mut self) {
        let Some(c) = &self.cgroup_net else {
            return;
        };
        for (id, name, addrs) in c.resolved() {
            self.hosts.learn(id, &name, &addrs);
        }
    }

    pub(super) fn register(&mut self, req: &WatchRequest) -> Result<Registered, String> {
        validate_name(&req.server).map_err(|e| e.to_string())?;
        if let Some(w) = self.watched.state(req.pid) {
            // A watched process cannot launder itself into another server
            // (nor shed the sandbox of the server it belongs to).
            let current = self.names.server_name(w.server).unwrap_or("?").to_owned();
            log::warn!(
                "pid {} asked to be watched as {} but is already watched as {current}",
                req.pid,
                req.server
            );
            return Ok(self.registered(current, None, req.gate));
        }
        self.admit_registration(req)?;
        self.watch_tree(req.pid, &req.server, "wrapper");
        // Its sandbox is its boundary: never the kill layer's.
        self.policy.set_wrapped(&req.server);
        if self.watched.state(req.pid).is_none() {
            return Err(format!(
                "could not add pid {} (uid {}) to the watched map",
                req.pid, req.uid
            ));
        }
        let sandbox = self.sandbox_for(req)?;
        Ok(self.registered(req.server.clone(), sandbox, req.gate))
    }

    /// The sandbox the wrapper applies for an enforced server (none in
    /// audit mode: it is still compiled, to mark what it would block). A
    /// missing layer raises `enforce.degraded`, or refuses the server when
    /// the configuration says so.
    fn sandbox_for(&mut self, req: &WatchRequest) -> Result<Option<crate::enforce::sandbox::Sandbox>, String> {
        if req.command.is_empty() {
            return Ok(None);
        }
        let Some((mut sb, mode)) = self.policy.sandbox(&req.server, &req.command, req.cwd.as_deref()) else {
            return Ok(None);
        };
        sb.seccomp_deny = self.enforce.deny_list();
        sb.agent_pid = self.agent_pid;
        sb.missing = self.enforce_missing.clone();
        let ports = (sb.connect_tcp.take(), sb.bind_tcp.take());
        let enforced = mode == crate::policy::manifest::Mode::Enforce;
        // The cgroup layer judges addresses and names; Landlock's TCP port
        // rules stand in for it only where it is missing.
        let cgroup = match &mut self.cgroup_net {
            Some(layer) if sb.net.is_some() && !sb.missing.contains(&Layer::Cgroup) => {
                if enforced {
                    let id = self.names.servers.id(&req.server);
                    layer.enforce(id, req.pid, &sb).map_err(|e| {
                        log::error!("{}: the cgroup network allowlist is not applied: {e}", req.server);
                    })
                } else {
                    Ok(None)
                }
            }
            _ => Err(()),
        };
        if let Ok(port) = cgroup {
            sb.resolver_port = port;
        }
        if enforced && cgroup.is_ok() {
            // The next agent takes the server's cgroup over from this record.
            self.save_handover();
        }
        if cgroup.is_err() {
            (sb.connect_tcp, sb.bind_tcp) = ports;
            sb.net = None;
            if !sb.missing.contains(&Layer::Cgroup) && self.cgroup_net.is_some() {
                sb.missing.push(Layer::Cgroup);
            }
        }
        self.policy.set_sandbox(&req.server, &sb);
        if !enforced {
            return Ok(None);
        }
        if !sb.missing.is_empty() {
            let refused = self.enforce.refuse_degraded;
            let id = self.names.servers.id(&req.server);
            let ctx = self.context(id, Clock::now_ktime(), req.pid, false, false);
            let a = self.policy.degraded_alert(&ctx, &sb.missing, refused);
            self.emit_alert(&a);
            if refused {
                return Err(format!(
                    "{} is in enforce mode and this kernel lacks {} (enforce.refuse_degraded)",
                    req.server,
                    sb.missing.iter().map(|l| l.name()).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Ok(Some(sb))
    }

    pub(super) fn status(&self) -> Status {
        let mut entries: Vec<(u32, WatchedProc)> = self.watched.entries();
        entries.sort_unstable_by_key(|(pid, _)| *pid);
        let mut st = Status {
            events: self.events,
            lost: self.lost,
            probe_errors: self
                .probe_errors
                .totals()
                .into_iter()
                .map(|(p, r, n)| (format!("{p}/{r}"), n))
                .collect(),
            gc_removed: self.gc_removed,
            released_records: self.released_records,
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
}
