//! Where manifests and host configurations come from, and noticing changes.
//!
//! Files are polled (size, mtime, inode) once a second and reloaded on
//! SIGHUP, by the [`Reloader`]'s thread: reading and compiling happen off the
//! event loop (a large manifest took seconds to compile, and the loop must
//! keep serving events and the control socket meanwhile). Polling rather
//! than inotify: it sees editors' write-to-temp-then-rename and files that
//! appear in directories created later (a new user's `~/.cursor`), and costs
//! a few dozen `stat` calls a second. The loop swaps in what the thread
//! loaded between two events, in one step: the old policy is in force until
//! then, and watching never stops.

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, mpsc as std_mpsc},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::{
    hostconfig::{self, HostConfigError, HostServer},
    manifest::{Manifest, ManifestError, limits},
};

/// How often the sources are checked for changes.
const POLL: Duration = Duration::from_secs(1);
/// Servers all host configurations together may declare (each is matched
/// against every exec of an unwatched process).
pub const MAX_HOST_SERVERS: usize = 4096;

/// Where the agent reads manifests from when no `--manifests` is given.
pub const DEFAULT_MANIFEST_DIR: &str = "/etc/mcpwatch/manifests";

#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub manifest_dirs: Vec<PathBuf>,
    /// Explicit host configuration files or workspace directories.
    pub host_configs: Vec<PathBuf>,
    /// Also read the per-user host configurations of every home directory.
    pub user_host_configs: bool,
}

/// (size, mtime ns, inode) of every file read, absent ones included.
pub type Snapshot = BTreeMap<PathBuf, Option<(u64, i128, u64)>>;

/// What one load produced.
#[derive(Default)]
pub struct Loaded {
    /// Good manifests, by file (a broken file keeps its last good version).
    pub manifests: BTreeMap<PathBuf, Arc<Manifest>>,
    pub hosts: Vec<HostServer>,
    /// Errors found by this load, each new one once.
    pub errors: Vec<ManifestError>,
    pub host_errors: Vec<HostConfigError>,
    /// Manifest directories that are missing or hold no manifest: every
    /// server would be judged as undeclared, which an operator must hear of.
    pub dir_warnings: Vec<String>,
    /// How long reading and compiling took.
    pub took: Duration,
}

/// A manifest file: `*.json`, the JSON Schema aside.
fn is_manifest(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "json")
        && !p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(".schema.json"))
}

impl Sources {
    fn manifest_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in &self.manifest_dirs {
            let Ok(rd) = std::fs::read_dir(d) else { continue };
            let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| is_manifest(p)).collect();
            files.sort();
            out.extend(files);
        }
        out
    }

    fn dir_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in &self.manifest_dirs {
            let what = match std::fs::read_dir(d) {
                Err(e) => format!("cannot be read ({e})"),
                Ok(mut rd) => {
                    if rd.any(|e| e.is_ok_and(|e| is_manifest(&e.path()))) {
                        continue;
                    }
                    "holds no manifest (*.json)".to_owned()
                }
            };
            out.push(format!(
                "manifest directory {} {what}: no server is declared there, so every server is judged \
                 as undeclared; install the shipped manifests there or give --manifests DIR",
                d.display()
            ));
        }
        out
    }

    fn host_files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .host_configs
            .iter()
            .flat_map(|p| hostconfig::expand_arg(p))
            .collect();
        if self.user_host_configs {
            for h in hostconfig::homes() {
                out.extend(hostconfig::user_files(&h));
            }
        }
        out
    }

    /// The state of every file and directory this would read.
    pub fn snapshot(&self) -> Snapshot {
        let stat = |p: &Path| {
            std::fs::metadata(p).ok().map(|m| {
                (
                    m.len(),
                    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                    m.ino(),
                )
            })
        };
        let mut s = Snapshot::new();
        for d in &self.manifest_dirs {
            s.insert(d.clone(), stat(d));
        }
        for f in self.manifest_files().into_iter().chain(self.host_files()) {
            let st = stat(&f);
            s.insert(f, st);
        }
        s
    }

    /// Loads everything; `previous` supplies the last good version of a file
    /// that is now broken.
    pub fn load(&self, previous: &BTreeMap<PathBuf, Arc<Manifest>>) -> Loaded {
        let started = Instant::now();
        let mut out = Loaded::default();
        let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
        // Patterns of the manifests kept so far, against the total cap.
        let mut patterns = 0usize;
        out.dir_warnings = self.dir_warnings();
        for f in self.manifest_files() {
            // The directory may be writable by others: a FIFO or a huge
            // file is a load error, never a blocked or stalled loop.
            let parsed = crate::untrusted::read_text(&f, crate::untrusted::MANIFEST_MAX_BYTES)
                .map_err(|e| ManifestError {
                    file: f.clone(),
                    line: 0,
                    column: 0,
                    field: ".".into(),
                    what: e.to_string(),
                })
                .and_then(|text| Manifest::parse(&f, &text));
            let parsed = parsed.and_then(|m| match names.get(&m.name) {
                Some(other) => Err(ManifestError {
                    file: f.clone(),
                    line: 0,
                    column: 0,
                    field: "name".into(),
                    what: format!("server {:?} is already declared by {}", m.name, other.display()),
                }),
                None => Ok(m),
            });
            let parsed = parsed.and_then(|m| match patterns + m.patterns {
                n if n > limits::MAX_TOTAL_PATTERNS => Err(ManifestError {
                    file: f.clone(),
                    line: 0,
                    column: 0,
                    field: ".".into(),
                    what: format!(
                        "its {} patterns would bring the manifests' total to {n} (at most {}): refused",
                        m.patterns,
                        limits::MAX_TOTAL_PATTERNS
                    ),
                }),
                _ => Ok(m),
            });
            match parsed {
                Ok(m) => {
                    patterns += m.patterns;
                    names.insert(m.name.clone(), f.clone());
                    out.manifests.insert(f, Arc::new(m));
                }
                Err(e) => {
                    if let Some(old) = previous.get(&f) {
                        patterns += old.patterns;
                        names.insert(old.name.clone(), f.clone());
                        out.manifests.insert(f, old.clone());
                    }
                    out.errors.push(e);
                }
            }
        }
        for f in self.host_files() {
            if !f.exists() {
                continue;
            }
            match hostconfig::parse_file(&f) {
                Ok(h) if out.hosts.len() + h.len() > MAX_HOST_SERVERS => {
                    out.host_errors.push(HostConfigError::TooManyServers {
                        file: f,
                        count: out.hosts.len() + h.len(),
                        cap: MAX_HOST_SERVERS,
                    })
                }
                Ok(h) => out.hosts.extend(h),
                Err(e) => out.host_errors.push(e),
            }
        }
        out.took = started.elapsed();
        out
    }
}

/// Watches the sources from a thread of its own and hands every new load to
/// the event loop through `loaded`.
pub struct Reloader {
    force: std_mpsc::Sender<()>,
    pub loaded: mpsc::Receiver<Loaded>,
}

impl Reloader {
    /// Starts watching `sources`, as last seen in `snapshot` and loaded
    /// into `previous` (the last good version of each manifest).
    pub fn start(
        sources: Sources,
        mut snapshot: Snapshot,
        mut previous: BTreeMap<PathBuf, Arc<Manifest>>,
    ) -> std::io::Result<Self> {
        let (force, requests) = std_mpsc::channel();
        // One load in flight at most: the thread waits for the loop to take it.
        let (tx, loaded) = mpsc::channel(1);
        std::thread::Builder::new()
            .name("policy-reload".into())
            .spawn(move || {
                loop {
                    let forced = match requests.recv_timeout(POLL) {
                        Ok(()) => true,
                        Err(std_mpsc::RecvTimeoutError::Timeout) => false,
                        // The agent is stopping.
                        Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
                    };
                    // SIGHUPs sent while a load ran are one request.
                    while requests.try_recv().is_ok() {}
                    let now = sources.snapshot();
                    if !forced && now == snapshot {
                        continue;
                    }
                    snapshot = now;
                    let l = sources.load(&previous);
                    previous = l.manifests.clone();
                    if tx.blocking_send(l).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Self { force, loaded })
    }

    /// Reloads everything now, changed or not (SIGHUP).
    pub fn force(&self) {
        let _ = self.force.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mcpwatch-reload-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_version() {
        let d = dir("broken");
        let f = d.join("git.json");
        std::fs::write(&f, r#"{"exec": ["git"]}"#).unwrap();
        let src = Sources {
            manifest_dirs: vec![d.clone()],
            ..Default::default()
        };
        let first = src.load(&BTreeMap::new());
        assert!(first.errors.is_empty());
        assert_eq!(first.manifests[&f].name, "git");
        let snap = src.snapshot();
        std::fs::write(&f, "{\"exec\": [\"git\",]\n").unwrap();
        assert_ne!(src.snapshot(), snap, "a change is seen");
        let second = src.load(&first.manifests);
        assert_eq!(second.errors.len(), 1);
        assert_eq!(second.errors[0].file, f);
        assert_eq!(second.manifests[&f].exec.len(), 1, "last good version kept");
        // A new file appears; the schema file is not a manifest.
        std::fs::write(d.join("time.json"), "{}").unwrap();
        std::fs::write(d.join("manifest.schema.json"), "{\"type\": \"object\"}").unwrap();
        let third = src.load(&second.manifests);
        assert_eq!(third.manifests.len(), 2);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let d = dir("dup");
        std::fs::write(d.join("a.json"), r#"{"name": "x"}"#).unwrap();
        std::fs::write(d.join("b.json"), r#"{"name": "x"}"#).unwrap();
        let l = Sources {
            manifest_dirs: vec![d.clone()],
            ..Default::default()
        }
        .load(&BTreeMap::new());
        assert_eq!(l.manifests.len(), 1);
        assert!(l.errors[0].what.contains("already declared"), "{}", l.errors[0]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_missing_or_empty_manifest_directory_is_a_warning() {
        let d = dir("empty");
        std::fs::write(d.join("manifest.schema.json"), "{}").unwrap();
        let missing = d.join("absent");
        let l = Sources {
            manifest_dirs: vec![d.clone(), missing.clone()],
            ..Default::default()
        }
        .load(&BTreeMap::new());
        assert_eq!(l.dir_warnings.len(), 2, "{:?}", l.dir_warnings);
        assert!(l.dir_warnings[0].contains("holds no manifest"), "{}", l.dir_warnings[0]);
        assert!(
            l.dir_warnings[1].contains(&missing.display().to_string()),
            "{}",
            l.dir_warnings[1]
        );
        std::fs::write(d.join("git.json"), r#"{"exec": ["git"]}"#).unwrap();
        let l = Sources {
            manifest_dirs: vec![d.clone()],
            ..Default::default()
        }
        .load(&BTreeMap::new());
        assert!(l.dir_warnings.is_empty(), "{:?}", l.dir_warnings);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
