//! Repeated alerts: the first of a kind goes out in full, the repeats are
//! counted and reported once per window as one alert with `count` and
//! `repeat_of`. A loop reading a thousand different keys cannot flood the SIEM
//! either: past a few distinct alerts per rule and server in a window, the rest
//! are folded into one, except credential alerts: every distinct credential
//! path keeps an alert of its own (twenty decoys must not hide the real key).
//! Repeats are keyed by tool call too: a second tool touching the same file is
//! its own alert. What is pending at shutdown is summarised, not lost.

use std::collections::HashMap;

use crate::alerts::{Alert, rules};

/// How long repeats are folded into the first alert (default).
pub const WINDOW_NS: u64 = 60_000_000_000;
/// Distinct alerts of one rule for one server per window before folding (default).
pub const DISTINCT_MAX: u32 = 20;

/// The folding limits (`[policy] alert_window_s`, `alert_distinct_max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub window_ns: u64,
    pub distinct_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            window_ns: WINDOW_NS,
            distinct_max: DISTINCT_MAX,
        }
    }
}

struct Entry {
    first: Alert,
    since: u64,
    repeats: u64,
}

#[derive(Default)]
pub struct Dedup {
    limits: Limits,
    /// (rule, server, tool, key) -> the first alert and its repeats.
    entries: HashMap<(String, String, String, String), Entry>,
    /// (rule, server) -> (distinct keys this window, window start)
    distinct: HashMap<(String, String), (u32, u64)>,
}

impl Dedup {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Default::default()
        }
    }

    /// Whether `alert` (with `key`, what makes it the same) goes out now.
    /// Repeats are kept for [`Dedup::flush`]. May return a summary of an
    /// expired window first.
    pub fn admit(&mut self, alert: &Alert, key: &str, now: u64) -> (bool, Option<Alert>) {
        let server = alert.server.clone().unwrap_or_default();
        let rk = (alert.rule.clone(), server.clone());
        let d = self.distinct.entry(rk).or_insert((0, now));
        if now.saturating_sub(d.1) >= self.limits.window_ns {
            *d = (0, now);
        }
        let tool = alert.tool.clone().unwrap_or_default();
        let mut k = (alert.rule.clone(), server, tool, key.to_owned());
        let mut summary = None;
        if let Some(e) = self.entries.get(&k)
            && now.saturating_sub(e.since) >= self.limits.window_ns
        {
            let e = self.entries.remove(&k).expect("present");
            summary = summary_of(e, self.limits.window_ns / 1_000_000_000);
        }
        if !self.entries.contains_key(&k) {
            d.0 += 1;
            if d.0 > self.limits.distinct_max && !rules::is_credential(&alert.rule) {
                k.3 = "*".into();
            }
        }
        match self.entries.get_mut(&k) {
            Some(e) => {
                e.repeats += 1;
                (false, summary)
            }
            None => {
                self.entries.insert(
                    k,
                    Entry {
                        first: alert.clone(),
                        since: now,
                        repeats: 0,
                    },
                );
                (true, summary)
            }
        }
    }

    /// Summaries of the windows that ended by `now`.
    pub fn flush(&mut self, now: u64) -> Vec<Alert> {
        let window_s = self.limits.window_ns / 1_000_000_000;
        let expired: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| now.saturating_sub(e.since) >= self.limits.window_ns)
            .map(|(k, _)| k.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|k| self.entries.remove(&k).and_then(|e| summary_of(e, window_s)))
            .collect()
    }
}

impl Dedup {
    /// Summaries of every pending window (at shutdown: the repeats counted
    /// so far are reported rather than lost).
    pub fn drain(&mut self) -> Vec<Alert> {
        let window_s = self.limits.window_ns / 1_000_000_000;
        self.distinct.clear();
        self.entries
            .drain()
            .filter_map(|(_, e)| summary_of(e, window_s))
            .collect()
    }
}

fn summary_of(e: Entry, window_s: u64) -> Option<Alert> {
    if e.repeats == 0 {
        return None;
    }
    let mut a = e.first;
    a.repeat_of = Some(a.id.clone());
    a.id = format!("{}-r", a.id);
    a.count = e.repeats;
    a.summary = format!("{} (and {} more like it in {} s)", a.summary, e.repeats, window_s);
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(rule: &str, id: &str) -> Alert {
        let mut a = crate::alerts::test_alert(id.into(), "t".into(), 0, 1);
        a.rule = rule.into();
        a.server = Some("s".into());
        a
    }

    #[test]
    fn first_in_full_then_a_count() {
        let mut d = Dedup::default();
        assert_eq!(d.admit(&alert("exec.shell", "1"), "/bin/sh", 0), (true, None));
        for i in 0..99 {
            assert!(!d.admit(&alert("exec.shell", "x"), "/bin/sh", 10 + i).0);
        }
        assert!(
            d.admit(&alert("exec.shell", "2"), "/bin/bash", 200).0,
            "another key is another alert"
        );
        assert!(d.flush(WINDOW_NS - 1).is_empty());
        let out = d.flush(WINDOW_NS + 300);
        assert_eq!(out.len(), 1, "only the repeated one summarises");
        assert_eq!(out[0].count, 99);
        assert_eq!(out[0].repeat_of.as_deref(), Some("1"));
        assert!(
            d.admit(&alert("exec.shell", "3"), "/bin/sh", WINDOW_NS + 400).0,
            "a new window starts in full"
        );
    }

    #[test]
    fn many_distinct_keys_fold_into_one() {
        let mut d = Dedup::default();
        let emitted = (0..1000)
            .filter(|i| d.admit(&alert("file.read_undeclared", "a"), &format!("/f{i}"), *i).0)
            .count();
        assert_eq!(emitted as u32, DISTINCT_MAX + 1);
        let out = d.flush(WINDOW_NS + 1000);
        assert_eq!(out.iter().map(|a| a.count).sum::<u64>(), 1000 - emitted as u64);
    }

    #[test]
    fn credential_paths_are_never_folded() {
        let mut d = Dedup::default();
        let emitted = (0..100)
            .filter(|i| d.admit(&alert("cred.ssh", "a"), &format!("/h/.ssh/decoy{i}"), *i).0)
            .count();
        assert_eq!(emitted, 100, "every distinct credential path is an alert");
        assert!(d.admit(&alert("cred.ssh", "b"), "/h/.ssh/id_rsa", 200).0);
        assert!(
            !d.admit(&alert("cred.ssh", "c"), "/h/.ssh/id_rsa", 201).0,
            "a repeat still folds"
        );
    }

    #[test]
    fn another_tool_is_another_alert_and_shutdown_drains() {
        let mut d = Dedup::default();
        let mut a = alert("file.read_undeclared", "1");
        a.tool = Some("peek".into());
        assert!(d.admit(&a, "/f", 0).0);
        assert!(!d.admit(&a, "/f", 1).0);
        let mut b = alert("file.read_undeclared", "2");
        b.tool = Some("grep".into());
        assert!(d.admit(&b, "/f", 2).0, "a second tool on the same file");
        let out = d.drain();
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].count, out[0].repeat_of.as_deref()), (1, Some("1")));
        assert!(d.drain().is_empty());
    }

    #[test]
    fn an_expired_window_summarises_on_the_next_admit() {
        let mut d = Dedup::default();
        d.admit(&alert("exec.shell", "1"), "k", 0);
        d.admit(&alert("exec.shell", "1"), "k", 1);
        let (emit, summary) = d.admit(&alert("exec.shell", "2"), "k", WINDOW_NS + 5);
        assert!(emit);
        assert_eq!(summary.map(|s| s.count), Some(1));
    }
}
