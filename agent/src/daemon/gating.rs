//! The agent's side of the gate: the settings a gate is relayed with (its
//! manifest's `gate` section, the pins it ships and this host's local
//! approvals) and the alerts of its decisions.

use serde_json::json;

use super::{
    agent::Agent,
    control::{GateRequest, Registered},
};
use crate::{
    alerts::rules,
    kernel::watchset::WatchSet as _,
    mcp::{
        McpLine,
        gate::{Decision, GateEvent, GateSpec, Outcome, Unapproved, WithheldTool, approvals::Approvals},
    },
    output::events::Clock,
};

impl Agent {
    /// The gate of `server` (`None`: not gated): manifest pins and local
    /// approvals together.
    pub(super) fn gate_spec(&mut self, server: &str, asked: bool) -> Option<GateSpec> {
        let mut spec = self.policy.gate_of(server, asked)?;
        match Approvals::new(&self.state_dir).approved_here(server) {
            Ok(local) => spec.approved.extend(local),
            Err(e) => log::warn!("gate of {server}: {e}; only the manifest's pins approve its tools"),
        }
        Some(spec)
    }

    pub(super) fn registered(
        &mut self,
        server: String,
        sandbox: Option<crate::enforce::sandbox::Sandbox>,
        gate: bool,
    ) -> Registered {
        let gate = self.gate_spec(&server, gate);
        // The gate reports what it finds on the wire; the capture underneath must not again.
        self.mcp.set_gated(&server, gate.is_some());
        Registered { server, sandbox, gate }
    }

    /// A gate's request: answered for the server the caller is watched under.
    pub(super) fn gate_request(&mut self, req: GateRequest) {
        let Some(w) = self.watched.state(req.pid) else {
            let _ = req
                .reply
                .send(Err(format!("pid {} is not a watched server's gate", req.pid)));
            return;
        };
        let Some(server) = self.names.server_name(w.server).map(str::to_owned) else {
            let _ = req.reply.send(Err("server unknown".into()));
            return;
        };
        if let Some(event) = req.report {
            self.gate_alert(w.server, &server, req.pid, event);
            // A report wants no settings back (the gate ignores them):
            // resolving them would read the approvals file at every audited call.
            let _ = req.reply.send(Ok(GateSpec::default()));
            return;
        }
        let spec = self.gate_spec(&server, true).unwrap_or_default();
        let _ = req.reply.send(Ok(spec));
    }

    /// Withheld tools whose approved definition changed are rug pulls the
    /// gate blocked: each is alerted as one (`mcp.rug_pull.changed`, blocked).
    fn gate_blocked_rug_pulls(&mut self, id: u32, server: &str, pid: u32, tools: &[WithheldTool], a: &Approvals) {
        let approved = a.load(server).map(|f| f.approved).unwrap_or_default();
        let changed: Vec<(&WithheldTool, Option<String>)> = tools
            .iter()
            .filter(|t| t.why == Unapproved::Changed)
            .map(|t| (t, approved.get(&t.name).map(|a| a.description.clone())))
            .collect();
        if changed.is_empty() {
            return;
        }
        for a in self.mcp.gate_blocked((server, id), &changed, (pid, Clock::now_ktime())) {
            self.mcp_alert(a);
        }
    }

    /// The audit line of a judged call (`gate.allowed`, `gate.denied`) and its metrics.
    fn gate_audit(&mut self, id: u32, server: &str, pid: u32, d: &Decision) {
        let latency_s = d.latency_ns as f64 / 1e9;
        self.metrics.gate_decision(server, &d.tool, d.outcome.name(), latency_s);
        let kind = match d.outcome {
            Outcome::Allowed => "gate.allowed",
            Outcome::Denied => "gate.denied",
        };
        let mut fields = serde_json::Map::new();
        fields.insert("rule".into(), json!(d.rule));
        if let Some(r) = &d.reason {
            fields.insert("reason".into(), json!(r));
        }
        fields.insert("latency_us".into(), json!(d.latency_ns as f64 / 1e3));
        self.mcp_line(McpLine {
            kind,
            server: id,
            pid,
            ktime_ns: Clock::now_ktime(),
            tool: Some(d.tool.clone()),
            call_id: d.call_id.clone(),
            fields,
        });
    }

    fn gate_alert(&mut self, id: u32, server: &str, pid: u32, event: GateEvent) {
        if let GateEvent::Call(d) = &event {
            self.gate_audit(id, server, pid, d);
        }
        let (rule, summary, tool, call_id) = match &event {
            GateEvent::Call(d) if d.outcome == Outcome::Denied => (
                &rules::GATE_DENIED,
                format!(
                    "gate of server {server} refused a call of tool {} ({}{})",
                    d.tool,
                    d.rule,
                    d.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
                ),
                Some(d.tool.clone()),
                d.call_id.clone(),
            ),
            GateEvent::Call(d) if d.rule == "unlisted_allow" => (
                &rules::GATE_UNLISTED_ALLOWED,
                format!(
                    "gate of server {server} let unapproved tool {} through (unlisted: allow)",
                    d.tool
                ),
                Some(d.tool.clone()),
                d.call_id.clone(),
            ),
            // An approved call: its audit line is its record.
            GateEvent::Call(_) => return,
            GateEvent::Withheld { tools } => {
                let approvals = Approvals::new(&self.state_dir);
                self.gate_blocked_rug_pulls(id, server, pid, tools, &approvals);
                if let Err(e) = approvals.record_pending(server, tools) {
                    log::warn!("gate of {server}: recording withheld tools: {e}");
                }
                let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
                (
                    &rules::GATE_WITHHELD,
                    format!(
                        "gate of server {server} withheld unapproved tool(s) {} from tools/list (mcpwatch approve {server})",
                        names.join(", ")
                    ),
                    (names.len() == 1).then(|| names[0].to_owned()),
                    None,
                )
            }
            GateEvent::AllowedUnlisted { tool, call_id, why } => (
                &rules::GATE_UNLISTED_ALLOWED,
                format!("gate of server {server} let unapproved tool {tool} through ({why:?}, unlisted: allow)"),
                Some(tool.clone()),
                call_id.clone(),
            ),
            GateEvent::Refused { from, reason } => (
                &rules::GATE_REFUSED_MESSAGE,
                format!("gate of server {server} refused a message from the {from}: {reason}"),
                None,
                None,
            ),
            GateEvent::Secret {
                tool,
                call_id,
                place,
                finding,
                more,
            } => (
                crate::mcp::secrets::rule_of(*place, finding),
                crate::mcp::secrets::summary(server, tool, call_id.as_deref(), *place, finding, *more, "the gate"),
                Some(tool.clone()),
                call_id.clone(),
            ),
        };
        let ctx = self.context(id, Clock::now_ktime(), pid, false, false);
        let mut a = self.factory.raise_about(rule, summary, &ctx);
        a.tool = tool;
        a.call_id = call_id;
        a.evidence = json!({ "gate": event });
        self.emit_alert(&a);
    }
}
