//! Which processes are watched as which server, kept on disk in the state
//! directory so a restarted agent finds them again under the same names.
//! A process is known by its pid *and* its start time (field 22 of
//! `/proc/PID/stat`, clock ticks after boot): a pid reused by another
//! process since is not adopted.

use std::{
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// File name under the state directory.
pub const FILE: &str = "registrations.json";
/// Roots remembered at most (beyond, the oldest are forgotten first).
const MAX: usize = 4096;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub server: String,
    pub pid: u32,
    pub start_time: u64,
    /// Launched by the wrapper (sandboxed): never the kill layer's.
    #[serde(default)]
    pub wrapped: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: not a registration list: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The start time of `pid`, `None` when it is gone.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    start_time_of(&stat)
}

/// Field 22 of a `/proc/PID/stat` line; the command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last ')'.
fn start_time_of(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow: the 22nd is the 20th of those.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[derive(Debug, Default)]
pub struct Registrations {
    path: PathBuf,
    entries: Vec<Registration>,
}

impl Registrations {
    /// Reads what a previous agent left in `state_dir` (none: empty).
    pub fn load(state_dir: &Path) -> Result<Self, RegistrationError> {
        let path = state_dir.join(FILE);
        let entries = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| RegistrationError::Parse {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(RegistrationError::Io { path, source }),
        };
        Ok(Self { path, entries })
    }

    /// An empty list that saves to `state_dir` (after a load failed).
    pub fn empty(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(FILE),
            entries: Vec::new(),
        }
    }

    /// The registrations whose process still runs (same pid, same start
    /// time); the others are forgotten.
    pub fn live(&mut self) -> Vec<Registration> {
        self.entries.retain(|r| start_time(r.pid) == Some(r.start_time));
        self.entries.clone()
    }

    /// Remembers `pid` as the root of `server` and saves.
    pub fn add(&mut self, server: &str, pid: u32, wrapped: bool) -> Result<(), RegistrationError> {
        let Some(start_time) = start_time(pid) else {
            return Ok(());
        };
        self.entries.retain(|r| r.pid != pid);
        self.entries.push(Registration {
            server: server.to_owned(),
            pid,
            start_time,
            wrapped,
        });
        // Exited entries go at the next prune (reading /proc for each here
        // would make every registration cost the whole list).
        if self.entries.len() > MAX {
            let excess = self.entries.len() - MAX;
            self.entries.drain(..excess);
        }
        self.save()
    }

    /// Forgets what exited; saves when something was.
    pub fn prune(&mut self) -> Result<(), RegistrationError> {
        let before = self.entries.len();
        self.live();
        if self.entries.len() == before {
            return Ok(());
        }
        self.save()
    }

    /// Written whole and renamed: a crash leaves the old list or the new one.
    fn save(&self) -> Result<(), RegistrationError> {
        let io_err = |source| RegistrationError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(&self.entries).map_err(|e| io_err(io::Error::other(e)))?;
        std::fs::write(&tmp, body).map_err(io_err)?;
        std::fs::rename(&tmp, &self.path).map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_parentheses_in_the_name() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(start_time_of(stat), Some(987654));
        assert!(start_time(std::process::id()).is_some());
    }

    #[test]
    fn only_the_same_process_is_adopted_again() {
        let dir = std::env::temp_dir().join(format!("mcpwatch-reg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let me = std::process::id();
        let mut r = Registrations::load(&dir).unwrap();
        r.add("fs", me, true).unwrap();
        // A reused pid: same number, another start time.
        r.entries.push(Registration {
            server: "impostor".into(),
            pid: 1,
            start_time: u64::MAX,
            wrapped: false,
        });
        r.save().unwrap();
        let mut again = Registrations::load(&dir).unwrap();
        let live = again.live();
        assert_eq!(live.len(), 1);
        assert_eq!((live[0].server.as_str(), live[0].pid), ("fs", me));
        std::fs::write(dir.join(FILE), "not json").unwrap();
        assert!(matches!(
            Registrations::load(&dir),
            Err(RegistrationError::Parse { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
