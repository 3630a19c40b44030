//! The files each server wrote, with when: the one write history
//! write-then-exec is judged from (an exec of a file the same server wrote
//! shortly before is a dropper's signature). Bounded in time and size.
//!
//! A package manager's own install is not a drop: `npx -y PACKAGE` writes the
//! package into `node_modules/` (its files, the `.bin` link) and then runs
//! its bin, which is the server's declared launch. Such a write remembers the
//! installer's pid, and an exec below that installer does not count it; any
//! other process of the server writing the same file makes it an ordinary
//! write again.

use std::collections::{HashMap, VecDeque};

/// One remembered write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Write {
    at: u64,
    /// The package manager that wrote it as part of an install.
    installer: Option<u32>,
}

#[derive(Default)]
pub struct WriteHistory {
    at: HashMap<(u32, String), Write>,
    order: VecDeque<(u32, String)>,
}

impl WriteHistory {
    /// How long a write makes a later exec suspicious.
    pub const WINDOW_NS: u64 = 600 * 1_000_000_000;
    /// Files remembered at most (the oldest are forgotten first).
    const MAX: usize = 16384;

    /// `installer`: the pid of the package manager that wrote `path` while
    /// installing (see [`installs_package`]), `None` for any other write.
    pub fn record(&mut self, server: u32, path: &str, ktime_ns: u64, installer: Option<u32>) {
        let key = (server, path.to_owned());
        let w = Write {
            at: ktime_ns,
            installer,
        };
        if self.at.insert(key.clone(), w).is_none() {
            self.order.push_back(key);
            if self.order.len() > Self::MAX
                && let Some(old) = self.order.pop_front()
            {
                self.at.remove(&old);
            }
        }
    }

    /// Whether `server` wrote `path` within the window before `now`.
    pub fn recent(&self, server: u32, path: &str, now: u64) -> bool {
        self.recent_for(server, path, now, &[])
    }

    /// Like [`WriteHistory::recent`], for an exec by a process whose lineage
    /// (itself and its ancestors) is `lineage`: a package manager's install
    /// write does not count for the processes it starts.
    pub fn recent_for(&self, server: u32, path: &str, now: u64, lineage: &[u32]) -> bool {
        self.at.get(&(server, path.to_owned())).is_some_and(|w| {
            now.saturating_sub(w.at) <= Self::WINDOW_NS && w.installer.is_none_or(|p| !lineage.contains(&p))
        })
    }
}

/// Whether a write of `path` by a process running `exe` with `argv` is a
/// package manager installing a package: npm/npx writing under `node_modules/`.
pub fn installs_package(exe: &str, argv: &[String], path: &str) -> bool {
    path.contains("/node_modules/") && crate::policy::baseline::is_npm_process(exe, argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_counts_for_ten_minutes_and_for_its_server_only() {
        let mut h = WriteHistory::default();
        h.record(1, "/tmp/x", 1_000, None);
        assert!(h.recent(1, "/tmp/x", 1_000 + WriteHistory::WINDOW_NS));
        assert!(!h.recent(1, "/tmp/x", 1_001 + WriteHistory::WINDOW_NS), "too old");
        assert!(!h.recent(2, "/tmp/x", 2_000), "another server's write");
    }

    #[test]
    fn an_install_write_does_not_count_below_its_installer_only() {
        let bin = "/root/.npm/_npx/c98c/node_modules/.bin/mcp-server-memory";
        let mut h = WriteHistory::default();
        h.record(1, bin, 1_000, Some(40));
        assert!(
            !h.recent_for(1, bin, 2_000, &[42, 41, 40, 1]),
            "npx's own child runs its bin"
        );
        assert!(h.recent_for(1, bin, 2_000, &[77, 1]), "another process of the server");
        // The server then writes the same file itself: an ordinary write.
        h.record(1, bin, 3_000, None);
        assert!(h.recent_for(1, bin, 4_000, &[42, 41, 40, 1]));
    }

    #[test]
    fn only_npm_writing_into_node_modules_is_an_install() {
        let npx = ["node".to_owned(), "/usr/bin/npx".to_owned(), "-y".to_owned()];
        let p = "/root/.npm/_npx/c98c/node_modules/x/dist/index.js";
        assert!(installs_package("/usr/bin/node", &npx, p));
        assert!(!installs_package("/usr/bin/node", &npx, "/tmp/payload.sh"));
        let server = ["node".to_owned(), "/srv/index.js".to_owned()];
        assert!(!installs_package("/usr/bin/node", &server, p));
    }
}
