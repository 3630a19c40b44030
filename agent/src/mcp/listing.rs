//! A server's `tools/list` answers: pages gathered, each listing scanned for
//! poisoning (once per definition) and shadowing, then compared with the
//! server's pins (rug pulls).

use serde_json::{Value, json};

use super::{
    At, Listed, MAX_LISTED_TOOLS, MAX_SCANNED, Mcp, Output,
    alerts::{poison_alert, rug_pull_alert},
    line, object,
    pins::{Change, Tool},
    poison,
};

/// Findings of one rule in one tool definition folded into one alert show
/// this many of the others as examples.
const FOLD_EXAMPLES: usize = 3;

/// One tool definition is one operation: its findings fold by rule into the
/// first (in the order found), with the rest kept as examples and counted.
fn fold_by_rule(found: Vec<poison::Finding>) -> Vec<(poison::Finding, Vec<poison::Finding>)> {
    let mut out: Vec<(poison::Finding, Vec<poison::Finding>)> = Vec::new();
    for f in found {
        match out.iter_mut().find(|(first, _)| first.rule == f.rule) {
            Some((_, more)) => more.push(f),
            None => out.push((f, Vec::new())),
        }
    }
    out
}

impl Mcp {
    /// One page of a `tools/list` answer; the last one (no `nextCursor`) is checked.
    pub(super) fn listing_page(&mut self, at: At<'_>, result: &Value, out: &mut Vec<Output>) {
        let server = at.server;
        let listing = self.listings.entry(server).or_default();
        listing.tools.extend(Tool::list(result));
        if listing.tools.len() > MAX_LISTED_TOOLS {
            log::warn!(
                "server {} lists more than {MAX_LISTED_TOOLS} tools: listing not checked",
                at.name
            );
            self.listings.remove(&server);
            return;
        }
        if result.get("nextCursor").is_some_and(|c| !c.is_null()) {
            return;
        }
        let tools = self.listings.remove(&server).map(|l| l.tools).unwrap_or_default();
        self.check_listing(at, &tools, out);
        self.listed.insert(
            server,
            Listed {
                name: at.name.to_owned(),
                pid: at.pid,
                tools,
            },
        );
    }

    fn check_listing(&mut self, at: At<'_>, tools: &[Tool], out: &mut Vec<Output>) {
        let At {
            name: server_name,
            server,
            pid,
            ktime_ns,
        } = at;
        let others: Vec<(String, String)> = self
            .known_tools
            .iter()
            .filter(|(id, _)| **id != server)
            .flat_map(|(_, (name, tools))| tools.iter().map(|t| (name.clone(), t.clone())))
            .collect();
        let mut listed = Vec::new();
        for t in tools {
            let pin = t.pin();
            listed.push(json!({"name": t.name, "hash": pin.hash}));
            if self.scanned.len() >= MAX_SCANNED {
                self.scanned.clear();
            }
            if !self.scanned.insert((server, pin.hash.clone())) {
                continue;
            }
            for (f, more) in fold_by_rule(poison::scan_tool(t, &others)) {
                let count = 1 + more.len();
                let mut evidence = json!({ "finding": f, "tool_hash": pin.hash });
                if count > 1 {
                    evidence["count"] = json!(count);
                    evidence["examples"] = json!(more.iter().take(FOLD_EXAMPLES).collect::<Vec<_>>());
                }
                let mut a = poison_alert(at, "tool", (&t.name, None), f, evidence);
                if count > 1 {
                    a.summary = format!("{} (and {} more like it in this definition)", a.summary, count - 1);
                }
                out.push(Output::Alert(a));
            }
        }
        self.known_tools.insert(
            server,
            (server_name.to_owned(), tools.iter().map(|t| t.name.clone()).collect()),
        );
        let f = object(json!({ "tools": listed }));
        out.push(line("mcp_tools", server, pid, ktime_ns, None, f));
        let after_list_changed = self.list_changed.remove(&server).is_some();
        self.check_pins(at, tools, after_list_changed, out);
    }

    /// Compares a listing with the server's pins (pinning it on first sight).
    pub(super) fn check_pins(&mut self, at: At<'_>, tools: &[Tool], after_list_changed: bool, out: &mut Vec<Output>) {
        let At {
            name: server_name,
            server,
            pid,
            ktime_ns,
        } = at;
        let checked = match self.pins.check(server_name, tools) {
            Ok(c) => c,
            Err(e) => {
                log::error!("tool pins of server {server_name}: {e}");
                return;
            }
        };
        if checked.pinned {
            let f = object(json!({ "pins": self.pins.path(server_name), "tool_count": tools.len() }));
            out.push(line("mcp_pinned", server, pid, ktime_ns, None, f));
        }
        // Behind the gate the host sees approved tools only: one appearing
        // is the user's approval (or the gate's alerted `unlisted: allow`),
        // not the server adding it; it joins the pins (`state` baseline).
        let gated = self.gated.contains(server_name);
        let mut approved = Vec::new();
        for c in checked.changes {
            if let (true, Change::Added { tool, new }) = (gated, &c) {
                approved.push((tool.clone(), new.clone()));
                continue;
            }
            out.push(Output::Alert(rug_pull_alert(
                (server_name, server),
                &c,
                checked.baseline,
                after_list_changed,
                pid,
                ktime_ns,
            )));
        }
        if !approved.is_empty()
            && checked.baseline == "state"
            && let Err(e) = self.pins.absorb(server_name, approved)
        {
            log::error!("tool pins of server {server_name}: {e}");
        }
    }
}
