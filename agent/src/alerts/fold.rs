//! Alerts folded per operation: a package manager run inside a server (the
//! program and its subtree, from its exec to its exit) touches hundreds of
//! files, each an alert of the same rule. They are held and reported when
//! the run ends as one alert per rule: the exact count, the first alert's
//! fields, a few example targets and the run (program, pid, tool call).
//!
//! Never folded: credential alerts (every distinct credential path is its
//! own alert), enforcement denials, anything critical (never delayed). A run
//! that lasts is reported once per window, so nothing is held for longer; at
//! shutdown everything held is reported.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{Value, json};

use super::{Alert, Severity, rules};
use crate::enforce::Layer;

/// Examples an alert names at most (its count stays exact).
pub const MAX_EXAMPLES: usize = 5;

/// A package manager run: the process that ran it (its pid is the run's
/// identity) and the program's name (`npm`, `pip`, `cargo`...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Operation {
    pub program: String,
    pub pid: u32,
}

struct Held {
    first: Alert,
    count: u64,
    examples: Vec<String>,
}

struct Run {
    op: Operation,
    /// When its oldest held alert happened.
    since: u64,
    /// By rule and enforcement layer (a would-block is told apart).
    held: BTreeMap<(String, Option<Layer>), Held>,
}

/// The alerts held per run, by (server, run pid).
pub struct OperationFold {
    window_ns: u64,
    runs: HashMap<(String, u32), Run>,
}

/// Whether `a` may wait for the end of its run.
pub fn foldable(a: &Alert) -> bool {
    !rules::is_credential(&a.rule) && a.rule != rules::ENFORCE_DENIED.id && a.severity < Severity::Critical
}

/// What an alert was about, in a few words: its path, host, program...
fn example(a: &Alert) -> Option<String> {
    let e = &a.evidence;
    let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
    let port = e.get("port").and_then(Value::as_u64);
    s("path")
        .or_else(|| s("unix_path"))
        .or_else(|| {
            let host = s("hostname").or_else(|| s("address"))?;
            Some(port.map_or(host.clone(), |p| format!("{host}:{p}")))
        })
        .or_else(|| s("program"))
        .or_else(|| s("target"))
}

impl OperationFold {
    /// Runs are reported at their end, or every `window_ns` while they last.
    pub fn new(window_ns: u64) -> Self {
        Self {
            window_ns,
            runs: HashMap::new(),
        }
    }

    /// Holds `a`, raised inside `op`, when it may wait (see [`foldable`]);
    /// otherwise hands it back to go out now.
    pub fn admit(&mut self, mut a: Alert, op: &Operation) -> Option<Alert> {
        if !foldable(&a) {
            if let Some(e) = a.evidence.as_object_mut() {
                e.insert("operation".into(), json!(op));
            }
            return Some(a);
        }
        let key = (a.server.clone().unwrap_or_default(), op.pid);
        let run = self.runs.entry(key).or_insert_with(|| Run {
            op: op.clone(),
            since: a.ktime_ns,
            held: BTreeMap::new(),
        });
        let ex = example(&a);
        let h = run.held.entry((a.rule.clone(), a.layer)).or_insert_with(|| Held {
            first: a,
            count: 0,
            examples: Vec::new(),
        });
        h.count += 1;
        if let Some(ex) = ex
            && h.examples.len() < MAX_EXAMPLES
            && !h.examples.contains(&ex)
        {
            h.examples.push(ex);
        }
        None
    }

    /// The run of `pid` in `server` ended: its alerts, one per rule.
    pub fn end(&mut self, server: &str, pid: u32) -> Vec<Alert> {
        self.runs
            .remove(&(server.to_owned(), pid))
            .map(report)
            .unwrap_or_default()
    }

    /// The alerts of runs held for a window by `now` (the runs go on).
    pub fn due(&mut self, now: u64) -> Vec<Alert> {
        let due: Vec<_> = self
            .runs
            .iter()
            .filter(|(_, r)| now.saturating_sub(r.since) >= self.window_ns)
            .map(|(k, _)| k.clone())
            .collect();
        due.into_iter()
            .filter_map(|k| self.runs.remove(&k))
            .flat_map(report)
            .collect()
    }

    /// Everything held (at shutdown).
    pub fn drain(&mut self) -> Vec<Alert> {
        self.runs.drain().flat_map(|(_, r)| report(r)).collect()
    }
}

/// One alert per rule of `run`: the first, with the count, the examples
/// and the run in its evidence.
fn report(run: Run) -> Vec<Alert> {
    let op = run.op;
    run.held
        .into_values()
        .map(|h| {
            let mut a = h.first;
            if let Some(e) = a.evidence.as_object_mut() {
                e.insert("operation".into(), json!(op));
                e.insert("examples".into(), json!(h.examples));
            }
            if h.count > 1 {
                let shown = h.examples.len() as u64;
                let more = if h.count > shown {
                    format!(" and {} more", h.count - shown)
                } else {
                    String::new()
                };
                let during = a.tool.as_deref().map(|t| format!(" during {t}")).unwrap_or_default();
                a.summary = format!(
                    "{}: {} (pid {}){during}: {} x {}: {}{more}",
                    a.server.as_deref().unwrap_or("?"),
                    op.program,
                    op.pid,
                    h.count,
                    a.rule,
                    h.examples.join(", "),
                );
            }
            a.count = h.count;
            a
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(rule: &str, path: &str, t: u64) -> Alert {
        let mut a = crate::alerts::test_alert(format!("{t}-1"), "t".into(), t, 1);
        a.rule = rule.into();
        a.severity = Severity::Medium;
        a.server = Some("s".into());
        a.tool = Some("install".into());
        a.evidence = json!({ "path": path });
        a
    }

    fn npm() -> Operation {
        Operation {
            program: "npm".into(),
            pid: 40,
        }
    }

    #[test]
    fn a_run_reports_one_alert_per_rule_with_the_exact_count_and_a_few_examples() {
        let mut f = OperationFold::new(60_000_000_000);
        for i in 0..89 {
            assert!(
                f.admit(alert("file.write_undeclared", &format!("/m/f{i}"), i), &npm())
                    .is_none()
            );
        }
        assert!(
            f.admit(alert("file.read_undeclared", "/etc/npmrc", 90), &npm())
                .is_none()
        );
        assert!(f.end("s", 41).is_empty(), "another run");
        let out = f.end("s", 40);
        assert_eq!(out.len(), 2);
        let w = out.iter().find(|a| a.rule == "file.write_undeclared").unwrap();
        assert_eq!(w.count, 89);
        assert_eq!(w.id, "0-1", "the first alert's identity");
        assert_eq!(w.evidence["examples"].as_array().unwrap().len(), MAX_EXAMPLES);
        assert_eq!(w.evidence["operation"], json!({"program": "npm", "pid": 40}));
        assert_eq!(
            w.summary,
            "s: npm (pid 40) during install: 89 x file.write_undeclared: /m/f0, /m/f1, /m/f2, /m/f3, /m/f4 and 84 more"
        );
        let r = out.iter().find(|a| a.rule == "file.read_undeclared").unwrap();
        assert_eq!(
            (r.count, r.summary.as_str()),
            (1, "mcpwatch test alert: delivery works")
        );
        assert!(f.end("s", 40).is_empty(), "reported once");
    }

    #[test]
    fn credentials_denials_and_critical_alerts_go_out_at_once() {
        let mut f = OperationFold::new(60_000_000_000);
        let cred = f.admit(alert("cred.ssh", "/h/.ssh/id_rsa", 1), &npm()).unwrap();
        assert_eq!(cred.evidence["operation"]["program"], "npm", "it names the run");
        assert_eq!(cred.count, 1);
        let denied = alert(rules::ENFORCE_DENIED.id, "/x", 2);
        assert!(f.admit(denied, &npm()).is_some());
        let mut shell = alert("exec.reverse_shell", "/bin/sh", 3);
        shell.severity = Severity::Critical;
        assert!(f.admit(shell, &npm()).is_some());
        assert!(f.drain().is_empty());
    }

    #[test]
    fn a_long_run_is_reported_once_a_window_and_shutdown_drains_it() {
        let mut f = OperationFold::new(100);
        f.admit(alert("file.write_undeclared", "/a", 10), &npm());
        f.admit(alert("file.write_undeclared", "/b", 20), &npm());
        assert!(f.due(109).is_empty());
        let out = f.due(110);
        assert_eq!(out.iter().map(|a| a.count).collect::<Vec<_>>(), [2]);
        f.admit(alert("file.write_undeclared", "/c", 120), &npm());
        let mut would = alert("file.write_undeclared", "/d", 121);
        would.layer = Some(Layer::Landlock);
        f.admit(would, &npm());
        let out = f.drain();
        assert_eq!(out.len(), 2, "a would-block is its own alert");
        assert!(out.iter().all(|a| a.count == 1));
    }
}
