//! Where manifests and host configurations come from, and noticing changes.
//!
//! Files are polled (size, mtime, inode) on the agent's one-second tick and
//! reloaded on SIGHUP. Polling rather than inotify: it needs no extra thread
//! or dependency, it sees editors' write-to-temp-then-rename and files that
//! appear in directories created later (a new user's `~/.cursor`), and costs a
//! few dozen `stat` calls a second. The engine swaps its manifests inside the
//! event loop between two events: watching never stops.

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    hostconfig::{self, HostConfigError, HostServer},
    manifest::{Manifest, ManifestError},
};

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
type Snapshot = BTreeMap<PathBuf, Option<(u64, i128, u64)>>;

/// What one load produced.
#[derive(Default)]
pub struct Loaded {
    /// Good manifests, by file (a broken file keeps its last good version).
    pub manifests: BTreeMap<PathBuf, Arc<Manifest>>,
    pub hosts: Vec<HostServer>,
    /// Errors found by this load, each new one once.
    pub errors: Vec<ManifestError>,
    pub host_errors: Vec<HostConfigError>,
}

impl Sources {
    fn manifest_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in &self.manifest_dirs {
            let Ok(rd) = std::fs::read_dir(d) else { continue };
            let mut files: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().is_some_and(|e| e == "json")
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().ends_with(".schema.json"))
                })
                .collect();
            files.sort();
            out.extend(files);
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
        let mut out = Loaded::default();
        let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
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
            match parsed {
                Ok(m) => {
                    names.insert(m.name.clone(), f.clone());
                    out.manifests.insert(f, Arc::new(m));
                }
                Err(e) => {
                    if let Some(old) = previous.get(&f) {
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
                Ok(h) => out.hosts.extend(h),
                Err(e) => out.host_errors.push(e),
            }
        }
        out
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
}
