//! What the next agent needs to read the kernel objects this one keeps
//! (`kernel/keep.rs`), saved in the state directory: which set of pins it
//! describes (the marker), the server each id in `WATCHED` and in the ring's
//! records names, and the kernel counters already reported (the pinned
//! `LOSS` and `PROBE_ERRORS` keep counting across agents: what the previous
//! one reported is not reported again), and the enforced servers' cgroups
//! (their allowlists are in the kept maps).

use std::{
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::enforce::cgroup::CgroupRecord;

/// File name under the state directory.
pub const FILE: &str = "kernel-objects.json";

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Handover {
    /// The pin directory and the marker of the set of pins described.
    pub pin_dir: PathBuf,
    pub marker: String,
    /// Server names by id, and the last id given (a forgotten server's id
    /// is never given again).
    pub servers: Vec<(u32, String)>,
    #[serde(default)]
    pub last_server_id: u32,
    /// Ring loss already reported: (server id, event kind, total).
    #[serde(default)]
    pub loss: Vec<(u32, u32, u64)>,
    /// Probe-error counters already reported, by slot.
    #[serde(default)]
    pub probe_errors: Vec<u64>,
    /// The enforced servers' cgroups, whose allowlists are in the kept maps.
    #[serde(default)]
    pub cgroups: Vec<CgroupRecord>,
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct HandoverError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl Handover {
    /// What the previous agent saved; `None` when absent or unreadable
    /// (then the pins it describes are not reused: logged).
    pub fn load(state_dir: &Path) -> Option<Self> {
        let path = state_dir.join(FILE);
        let text = match crate::untrusted::read_text(&path, 4 << 20) {
            Ok(t) => t,
            Err(e) if e.is_not_found() => return None,
            Err(e) => {
                log::warn!("{e}");
                return None;
            }
        };
        serde_json::from_str(&text)
            .map_err(|e| log::warn!("{}: not a kernel-objects record: {e}", path.display()))
            .ok()
    }

    /// The marker to expect in `pin_dir`, if this record describes it.
    pub fn marker_for(&self, pin_dir: &Path) -> Option<&str> {
        (self.pin_dir == pin_dir).then_some(self.marker.as_str())
    }

    /// Written whole and renamed: a crash leaves the old record or the new one.
    pub fn save(&self, state_dir: &Path) -> Result<(), HandoverError> {
        let path = state_dir.join(FILE);
        let err = |source| HandoverError {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(err)?;
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(self).map_err(|e| err(io::Error::other(e)))?;
        std::fs::write(&tmp, body).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_names_only_its_pin_dir() {
        let dir = std::env::temp_dir().join(format!("mcpwatch-handover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(Handover::load(&dir).is_none());
        let h = Handover {
            pin_dir: "/sys/fs/bpf/mcpwatch".into(),
            marker: "object-ab-w1-r2_3".into(),
            servers: vec![(2, "fs".into()), (3, "git".into())],
            last_server_id: 4,
            loss: vec![(1, 2, 30)],
            probe_errors: vec![0, 4],
            cgroups: Vec::new(),
        };
        h.save(&dir).unwrap();
        let back = Handover::load(&dir).unwrap();
        assert_eq!(back, h);
        assert_eq!(
            back.marker_for(Path::new("/sys/fs/bpf/mcpwatch")),
            Some("object-ab-w1-r2_3")
        );
        assert_eq!(back.marker_for(Path::new("/sys/fs/bpf/other")), None);
        std::fs::write(dir.join(FILE), "{").unwrap();
        assert!(Handover::load(&dir).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
