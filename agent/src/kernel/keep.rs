//! Kernel objects that outlive the agent's process: the maps that carry state
//! (the watched set, the event ring, the loss counters...) and the programs'
//! links, pinned in a bpffs directory of the agent's own right after they are
//! attached. A SIGKILLed agent leaves them in place, so the kernel keeps
//! following the watched servers (forks go into `WATCHED`) and queueing
//! their events in the ring, which the next agent reopens and drains (as
//! Tetragon's `--keep-sensors-on-exit`).
//!
//! The directory holds `<MAP>` for each kept map, `links/<program>` for each
//! link, and one marker directory `object-<stamp>_<nonce>`, made last (bpffs refuses
//! names with a dot): the
//! stamp names the eBPF object and the map sizes (a pinned map is reused as
//! it is, so only the same layout may reopen it), the nonce this set of pins
//! (the state directory records it with the server names the kernel's ids
//! stand for). A set without its marker, with another stamp, or that the
//! state directory does not name, is removed and the agent starts afresh.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::programs::links::{FdLink, PinnedLink};
use sha2::{Digest as _, Sha256};

/// Links by the name of their program, to be pinned.
pub type NamedLinks = Vec<(&'static str, FdLink)>;

/// Default pin directory.
pub const DEFAULT_DIR: &str = "/sys/fs/bpf/mcpwatch";

/// The maps that carry state from one agent to the next (per-CPU scratch
/// maps and the read-only offsets do not: each agent has its own).
pub const KEPT_MAPS: &[&str] = &[
    "WATCHED",
    "CONFIG",
    "EVENTS",
    "LAST_WAKEUP",
    "LOSS",
    "PROBE_ERRORS",
    "STDIO_OFFSETS",
    "STDIO_FILES",
    "STDIO_AT_EXEC",
    "STDIO_FDS",
    // The cgroup network allowlist (`kernel/cgroup_net.rs`): the policies of
    // the enforced servers, their allowed destinations (the resolver's
    // included) and the DNS queries in flight. Kept, with the cgroup
    // programs' links, an enforced server's allowlist neither opens nor
    // closes while no agent runs.
    "NET_POLICY",
    "NET_ALLOW",
    "DNS_ORIG",
];

const LINKS: &str = "links";
/// What the loading process (`kernel/apart.rs`) pins for the agent to open
/// once and unpin: the programs attached after the load and the maps that
/// are not kept.
const HANDOFF: &str = "handoff";
/// A link pinned here first, then renamed over the old one (`replace`).
const NEW_PREFIX: &str = "new-";
const MARKER_PREFIX: &str = "object-";
const NONCE_SEP: char = '_';

#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pinning link {}: {source}", path.display())]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeepError + '_ {
    move |source| KeepError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a previous agent left in the directory.
#[derive(Debug)]
pub enum Previous {
    /// Nothing: a first start (or a reboot, or a clean stop before).
    Nothing,
    /// A complete, compatible set: reused. The old links (by program name)
    /// are held open so the old programs stay attached until this agent's are.
    Kept {
        marker: String,
        links: Vec<(String, PinnedLink)>,
    },
    /// Something unusable, removed (the reason is for the log and the
    /// `watch` lines).
    Discarded(String),
}

/// The stamp of an eBPF object loaded with these map sizes.
pub fn stamp(object: &[u8], watched_max: u32, ring_bytes: u32) -> String {
    let hash = Sha256::digest(object);
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-w{watched_max}-r{ring_bytes}")
}

/// What [`KeepDir::commit`] leaves: the marker, this agent's pinned links,
/// and the old links of programs attached later (still pinned).
pub struct Committed {
    pub marker: String,
    pub pinned: Vec<PinnedLink>,
    pub later: Vec<(String, PinnedLink)>,
}

/// The pin directory of one agent. The stamp of the object (see [`stamp`])
/// is an argument of what the loading process decides ([`KeepDir::inspect`],
/// [`KeepDir::commit`]) only: hashing the object would bring its pages
/// (1.5 MB) into the agent's RSS.
#[derive(Debug, Clone)]
pub struct KeepDir {
    dir: PathBuf,
}

impl KeepDir {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn map_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The loading process's handoff directory (see [`HANDOFF`]).
    pub fn handoff_dir(&self) -> PathBuf {
        self.dir.join(HANDOFF)
    }

    /// The pinned link of `program`.
    pub fn open_link(&self, program: &str) -> Result<PinnedLink, String> {
        let path = self.link_path(program);
        PinnedLink::from_pin(&path).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn link_path(&self, program: &str) -> PathBuf {
        self.dir.join(LINKS).join(program)
    }

    /// Marker directories present (normally one at most).
    fn markers(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(MARKER_PREFIX))
            .collect()
    }

    /// Whether anything of ours is in the directory.
    fn anything(&self) -> bool {
        !self.markers().is_empty()
            || KEPT_MAPS.iter().any(|m| self.map_path(m).exists())
            || self.dir.join(LINKS).exists()
            || self.handoff_dir().exists()
    }

    /// Looks at what a previous agent left, for an agent of `stamp`. `expected` is the marker the
    /// state directory recorded (its server names go with these ids);
    /// `required` the programs that must have a pinned link. Anything but a
    /// complete compatible set is removed.
    pub fn inspect(&self, stamp: &str, expected: Option<&str>, required: &[&str]) -> Previous {
        if !self.anything() {
            return Previous::Nothing;
        }
        let reason = match self.usable(stamp, expected, required) {
            Ok((marker, links)) => return Previous::Kept { marker, links },
            Err(reason) => reason,
        };
        self.remove_all();
        Previous::Discarded(reason)
    }

    fn usable(
        &self,
        stamp: &str,
        expected: Option<&str>,
        required: &[&str],
    ) -> Result<(String, Vec<(String, PinnedLink)>), String> {
        let markers = self.markers();
        let [marker] = &markers[..] else {
            return Err(match markers.len() {
                0 => "an incomplete set of pins (no object marker: the previous agent died while pinning)".into(),
                n => format!("{n} object markers"),
            });
        };
        let pinned_stamp = marker[MARKER_PREFIX.len()..]
            .split(NONCE_SEP)
            .next()
            .unwrap_or_default();
        if pinned_stamp != stamp {
            return Err(format!(
                "pinned by another eBPF object or with other map sizes ({pinned_stamp}, this agent: {stamp})"
            ));
        }
        if expected != Some(marker.as_str()) {
            return Err("the state directory does not name these pins (its server names would not match)".into());
        }
        if let Some(m) = KEPT_MAPS.iter().find(|m| !self.map_path(m).exists()) {
            return Err(format!("an incomplete set of pins (map {m} missing)"));
        }
        let mut links = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.dir.join(LINKS)) else {
            return Err("an incomplete set of pins (no links)".into());
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            match PinnedLink::from_pin(e.path()) {
                Ok(l) => links.push((name, l)),
                Err(err) => return Err(format!("link {name} unreadable: {err}")),
            }
        }
        if let Some(p) = required.iter().find(|p| !links.iter().any(|(n, _)| n == *p)) {
            return Err(format!("an incomplete set of pins (link {p} missing)"));
        }
        Ok((marker.clone(), links))
    }

    /// Pins this agent's links in place of the old ones and marks the set
    /// complete. The old links' files are replaced one by one while their
    /// descriptors stay open, so the old programs run until the new ones
    /// are pinned (a few events may be seen twice, none missed); they are
    /// detached when `old` is dropped at the end. Old links of programs
    /// that are not in `new` (attached later: the cgroup programs) stay
    /// pinned and are returned, for [`KeepDir::replace`]. Returns the
    /// marker, the new pinned links and those old ones.
    pub fn commit(
        &self,
        stamp: &str,
        marker: Option<String>,
        new: NamedLinks,
        old: Vec<(String, PinnedLink)>,
    ) -> Result<Committed, KeepError> {
        let links_dir = self.dir.join(LINKS);
        // Incomplete until the marker is back: a death in between is a
        // partial set for the next agent, never a mixed one taken as whole.
        if let Some(m) = &marker {
            let p = self.dir.join(m);
            std::fs::remove_dir(&p).map_err(io_err(&p))?;
        }
        std::fs::create_dir_all(&links_dir).map_err(io_err(&links_dir))?;
        let (old, later): (Vec<_>, Vec<_>) = old
            .into_iter()
            .partition(|(name, _)| new.iter().any(|(n, _)| n == name));
        // Held (files gone) until the new links are pinned.
        let old: Vec<FdLink> = old
            .into_iter()
            .filter_map(|(_, l)| match l.unpin() {
                Ok(fd) => Some(fd),
                Err(e) => {
                    log::warn!("cannot unpin an old link: {e}");
                    None
                }
            })
            .collect();
        let mut pinned = Vec::new();
        for (name, link) in new {
            let path = self.link_path(name);
            let _ = std::fs::remove_file(&path);
            pinned.push(link.pin(&path).map_err(|source| KeepError::Pin { path, source })?);
        }
        drop(old);
        let marker = marker.unwrap_or_else(|| format!("{MARKER_PREFIX}{stamp}{NONCE_SEP}{}", nonce()));
        let p = self.dir.join(&marker);
        std::fs::create_dir(&p).map_err(io_err(&p))?;
        Ok(Committed { marker, pinned, later })
    }

    /// Pins links attached after [`KeepDir::commit`] (the cgroup programs)
    /// over the old ones of the same programs, then detaches every old link
    /// in `later` (replaced, or of a program this agent did not attach).
    /// Each new link is pinned under a temporary name and renamed over the
    /// old one, so the path always holds one of them: a death in between
    /// leaves the programs attached, never a gap.
    pub fn replace(&self, new: NamedLinks, later: Vec<(String, PinnedLink)>) -> Result<Vec<PinnedLink>, KeepError> {
        let mut pinned = Vec::new();
        let pinned_names: Vec<&'static str> = new.iter().map(|(n, _)| *n).collect();
        for (name, link) in new {
            let tmp = self.link_path(&format!("{NEW_PREFIX}{name}"));
            let _ = std::fs::remove_file(&tmp);
            let link = link.pin(&tmp).map_err(|source| KeepError::Pin {
                path: tmp.clone(),
                source,
            })?;
            let path = self.link_path(name);
            std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
            pinned.push(link);
        }
        for (name, old) in later {
            let replaced = name.starts_with(NEW_PREFIX) || pinned_names.contains(&name.as_str());
            if replaced {
                // Its file is the new link's now (or a leftover already
                // removed): closing its descriptor detaches it.
                drop(old);
            } else if let Err(e) = old.unpin() {
                log::warn!("cannot unpin the old link {name}: {e}");
            }
        }
        Ok(pinned)
    }

    /// Removes the handoff directory and what is pinned in it.
    pub fn remove_handoff(&self) {
        let dir = self.handoff_dir();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                remove(&e.path(), false);
            }
        }
        remove(&dir, true);
    }

    /// After a loading process failed: removes a set it left without its
    /// marker (it died while pinning), so no program stays attached for no
    /// agent; a complete set (a previous agent's, untouched) stays.
    pub fn remove_incomplete(&self) {
        self.remove_handoff();
        if self.markers().is_empty() && self.anything() {
            self.remove_all();
        }
    }

    /// Removes every pin of ours (not what others put in the directory):
    /// links first, so the programs detach when their last descriptor goes.
    pub fn remove_all(&self) {
        self.remove_handoff();
        for m in self.markers() {
            remove(&self.dir.join(m), true);
        }
        let links = self.dir.join(LINKS);
        if let Ok(rd) = std::fs::read_dir(&links) {
            for e in rd.flatten() {
                remove(&e.path(), false);
            }
        }
        remove(&links, true);
        for m in KEPT_MAPS {
            remove(&self.map_path(m), false);
        }
        // Ours if empty; left when someone else keeps something in it.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn remove(path: &Path, dir: bool) {
    let r = if dir {
        std::fs::remove_dir(path)
    } else {
        std::fs::remove_file(path)
    };
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => log::warn!("cannot remove {}: {e}", path.display()),
        _ => {}
    }
}

/// A value no earlier set of pins had: the clock and this pid, hashed.
fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let h = Sha256::digest(format!("{t}.{}", std::process::id()));
    h[..6].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_follows_the_object_and_the_map_sizes() {
        let a = stamp(b"object", 4096, 8 << 20);
        assert_eq!(a, stamp(b"object", 4096, 8 << 20));
        assert_ne!(a, stamp(b"other", 4096, 8 << 20));
        assert_ne!(a, stamp(b"object", 8192, 8 << 20));
        assert_ne!(a, stamp(b"object", 4096, 16 << 20));
        assert!(
            !a.contains(NONCE_SEP) && !a.contains('.'),
            "the nonce separator; bpffs refuses dots"
        );
    }

    #[test]
    fn stale_or_unnamed_pins_are_removed_and_others_files_kept() {
        // A plain directory stands for bpffs: only names are looked at.
        let dir = std::env::temp_dir().join(format!("mcpwatch-keep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(LINKS)).unwrap();
        let keep = KeepDir::new(dir.clone());
        let stamp = "abc-w1-r2";
        assert!(matches!(keep.inspect(stamp, None, &[]), Previous::Discarded(r) if r.contains("incomplete")));
        assert!(!dir.exists());
        std::fs::create_dir_all(dir.join("object-old-w1-r2_1")).unwrap();
        std::fs::write(dir.join("WATCHED"), "").unwrap();
        std::fs::write(dir.join("someone-elses"), "").unwrap();
        let expected = Some("object-old-w1-r2_1");
        assert!(
            matches!(keep.inspect(stamp, expected, &[]), Previous::Discarded(r) if r.contains("another eBPF object"))
        );
        assert!(!dir.join("WATCHED").exists() && !dir.join("object-old-w1-r2_1").exists());
        assert!(dir.join("someone-elses").exists(), "not ours: left alone");
        std::fs::create_dir_all(dir.join("object-abc-w1-r2_1")).unwrap();
        assert!(
            matches!(keep.inspect(stamp, Some("object-abc-w1-r2_2"), &[]), Previous::Discarded(r) if r.contains("state directory"))
        );
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(keep.inspect(stamp, None, &[]), Previous::Nothing));
    }
}
