//! Discovery: `--watch NAME=PATTERN` rules find servers started without the
//! wrapper, at every exec and in the start-up scan of /proc; processes the
//! kernel holds as pending wait here for that decision.

use std::{collections::HashMap, str::FromStr};

use agent_common::{WatchedProc, config::WATCH_PENDING};

use regex::Regex;

use crate::{
    kernel::watchset::WatchSet,
    pipeline::{
        launch::Launch,
        servers::{NameError, validate_name},
    },
};

/// Watch processes whose exe or argv matches `pattern` as server `server`.
#[derive(Clone, Debug)]
pub struct WatchRule {
    pub server: String,
    pub pattern: Regex,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("watch rule {0:?} is not NAME=PATTERN")]
    Syntax(String),
    #[error("watch rule {rule:?}: {source}")]
    Name {
        rule: String,
        #[source]
        source: NameError,
    },
    #[error("watch rule {rule:?}: bad pattern: {source}")]
    Pattern {
        rule: String,
        #[source]
        source: regex::Error,
    },
}

impl FromStr for WatchRule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, pat) = s.split_once('=').ok_or_else(|| RuleError::Syntax(s.to_owned()))?;
        if pat.is_empty() {
            return Err(RuleError::Syntax(s.to_owned()));
        }
        validate_name(name).map_err(|source| RuleError::Name {
            rule: s.to_owned(),
            source,
        })?;
        let pattern = Regex::new(pat).map_err(|source| RuleError::Pattern {
            rule: s.to_owned(),
            source,
        })?;
        Ok(Self {
            server: name.to_owned(),
            pattern,
        })
    }
}

/// The rule set, first match wins.
#[derive(Clone, Debug, Default)]
pub struct Rules(pub Vec<WatchRule>);

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The server a process belongs to: a rule's pattern found in the exe path
    /// or in its launch line (up to its script, module or package: never in
    /// a command line a wrapper carries as arguments, see [`Launch`]).
    pub fn matches(&self, exe: &str, argv: &[String]) -> Option<&str> {
        if self.0.is_empty() {
            return None;
        }
        let line = Launch::of(exe, argv).line(argv);
        self.0
            .iter()
            .find(|r| r.pattern.is_match(exe) || r.pattern.is_match(&line))
            .map(|r| r.server.as_str())
    }
}

/// Processes the kernel holds as pending (an exec while discovery rules
/// exist, and what such a process forks) until userspace decides: watched
/// under a server, or released back to unwatched with every pending child.
#[derive(Debug, Default)]
pub struct Pending {
    /// Pending processes and the pending children they forked.
    children: HashMap<u32, Vec<u32>>,
}

impl Pending {
    /// An undecided process forked: the child shares its fate.
    pub fn forked(&mut self, parent: u32, child: u32) {
        self.children.entry(parent).or_default().push(child);
    }

    /// An undecided process exited, or was watched: nothing to decide any more.
    pub fn forget(&mut self, pid: u32) {
        self.children.remove(&pid);
    }

    /// No rule matched: the process and the pending children it forked go
    /// back to unwatched (one hash lookup per hooked event). Returns them.
    pub fn release(&mut self, set: &mut dyn WatchSet, root: u32) -> Vec<u32> {
        let mut todo = vec![root];
        let mut released = Vec::new();
        while let Some(pid) = todo.pop() {
            if let Some(children) = self.children.remove(&pid) {
                todo.extend(children);
            }
            if set.state(pid).is_some_and(|w| w.flags & WATCH_PENDING != 0) {
                set.unwatch(pid);
            }
            released.push(pid);
        }
        released
    }
}

/// Turns a pending entry into a watched one of `server`, unless the process
/// is gone (`alive` false: its exit hook already removed the entry, and a
/// late insert would leave a stale one).
pub fn confirm(set: &mut dyn WatchSet, pid: u32, server: u32, alive: impl Fn(u32) -> bool) {
    if set.state(pid).is_some_and(|w| w.flags & WATCH_PENDING != 0) {
        if let Err(e) = set.watch(pid, WatchedProc { server, flags: 0 }) {
            log::error!("cannot confirm pid {pid} as watched: {e}");
        }
        if !alive(pid) {
            set.unwatch(pid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_match() {
        let r: WatchRule = "fs=server-filesystem".parse().unwrap();
        let rules = Rules(vec![r, "py=^/usr/bin/python3".parse().unwrap()]);
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            rules.matches("/usr/bin/node", &argv(&["node", "/x/server-filesystem/dist/index.js"])),
            Some("fs")
        );
        assert_eq!(
            rules.matches("/usr/bin/python3", &argv(&["python3", "-m", "x"])),
            Some("py")
        );
        assert_eq!(rules.matches("/bin/ls", &argv(&["ls"])), None);
        // A wrapper carrying the server's command line is not the server.
        let fs = &["node", "/x/server-filesystem/dist/index.js"];
        for pre in [
            &["timeout", "30"][..],
            &["strace", "-f"],
            &["/v/bin/python3", "/t/client.py"],
        ] {
            let a: Vec<&str> = pre.iter().chain(fs).copied().collect();
            assert_eq!(rules.matches("/usr/bin/timeout", &argv(&a)), None, "{a:?}");
        }
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        assert!(matches!("noequals".parse::<WatchRule>(), Err(RuleError::Syntax(_))));
        assert!(matches!("a b=x".parse::<WatchRule>(), Err(RuleError::Name { .. })));
        assert!(matches!("a=(".parse::<WatchRule>(), Err(RuleError::Pattern { .. })));
    }

    fn pending(server: u32) -> WatchedProc {
        WatchedProc {
            server,
            flags: WATCH_PENDING,
        }
    }

    #[test]
    fn a_released_process_takes_its_pending_children_along_but_not_watched_ones() {
        let mut set = std::collections::BTreeMap::new();
        for pid in [10, 11, 12] {
            set.insert(pid, pending(0));
        }
        set.insert(13, WatchedProc { server: 7, flags: 0 });
        let mut p = Pending::default();
        p.forked(10, 11);
        p.forked(11, 12);
        let mut released = p.release(&mut set, 10);
        released.sort_unstable();
        assert_eq!(released, [10, 11, 12]);
        assert_eq!(set.keys().copied().collect::<Vec<_>>(), [13], "the watched one stays");
        assert!(p.children.is_empty());
    }

    #[test]
    fn a_confirmed_process_is_watched_unless_it_is_gone() {
        let mut set = std::collections::BTreeMap::new();
        set.insert(20, pending(0));
        set.insert(21, pending(0));
        confirm(&mut set, 20, 3, |_| true);
        assert_eq!(set[&20], WatchedProc { server: 3, flags: 0 });
        confirm(&mut set, 21, 3, |_| false);
        assert!(!set.contains_key(&21), "no stale entry for a process that exited");
        // Already watched elsewhere: a confirmation does not move it.
        set.insert(22, WatchedProc { server: 9, flags: 0 });
        confirm(&mut set, 22, 3, |_| true);
        assert_eq!(set[&22].server, 9);
    }
}
