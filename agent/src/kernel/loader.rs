//! Loads the kernel programs: mounts what they need, has a loading process
//! load, attach and pin them (`kernel/apart.rs`: the kernel's BTF is parsed
//! there, never here), and opens the maps and the programs attached later
//! from their pins.

use std::path::{Path, PathBuf};

use agent_common::{
    AgentConfig, LossKey, WatchedProc,
    config::{EVENTS_RING_BYTES, WATCHED_MAX_ENTRIES, WATCHED_MAX_LIMIT},
};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap};
use aya::programs::links::PinnedLink;
use serde::{Deserialize, Serialize};

use crate::kernel::{
    apart, btf,
    keep::{self, KeepDir, NamedLinks},
    mounts,
    objects::{Handed, Objects, Unavailable},
    probe_errors::ProbeErrors,
    stdio::StdioChannels,
};

/// The eBPF object built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcpwatch"));

/// The eBPF object (empty in a check-only build).
pub fn object() -> &'static [u8] {
    OBJECT
}

/// A small private copy of the object, for the checks that attach one
/// program and throw it away (`enforce-check`'s cgroup and kill probes).
pub fn load_for_check() -> Result<aya::Ebpf, String> {
    aya::EbpfLoader::new()
        .allow_unsupported_maps()
        .map_max_entries("EVENTS", 4096)
        .map_max_entries("WATCHED", 1024)
        .load(OBJECT)
        .map_err(|e| e.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the eBPF object is empty: this binary was built with AYA_BUILD_SKIP=1")]
    NoObject,
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error("resolving kernel structure offsets: {0}")]
    Offsets(#[from] btf::OffsetError),
    #[error("reading kernel BTF for the BTF tracepoints: {0}")]
    Btf(#[from] aya::BtfError),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot pin in {0}: not inside a bpffs mount")]
    NotBpffs(PathBuf),
    #[error("the object has no map {0}")]
    MissingMap(&'static str),
    #[error("keeping the kernel objects: {0}")]
    Keep(#[from] keep::KeepError),
    #[error("pinning {name} for the agent: {source}")]
    Pin {
        name: &'static str,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("{}: {source}", path.display())]
    Handoff {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not a source: its text is the whole chain the loading process reported.
    #[error("in the loading process: {0}")]
    Apart(apart::ApartError),
    #[error("opening what the loading process pinned: {0}")]
    Open(#[from] Unavailable),
    #[error("a previous agent's link {name}: {why}")]
    LaterLink { name: String, why: String },
}

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The bpffs directory the kernel objects are pinned in (default
    /// [`keep::DEFAULT_DIR`]).
    pub pin_dir: Option<PathBuf>,
    /// The marker the state directory recorded for the pins (see
    /// `daemon/handover.rs`): a kept set is reused only when it is this one.
    pub expected_marker: Option<String>,
    /// Size of the watched-process map.
    pub watched_max: Option<u32>,
    /// Size of the event ring buffer in bytes (a power of two, page multiple).
    pub ring_bytes: Option<u32>,
}

impl LoadOptions {
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_dir.clone().unwrap_or_else(|| PathBuf::from(keep::DEFAULT_DIR))
    }
}

/// Where the kernel objects come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// Kept by a previous agent: the watched set and the ring carried on.
    Kept,
    /// Created now; `discarded` says why what a previous agent left was not
    /// reused (none: nothing was there).
    Fresh { discarded: Option<String> },
}

/// The attached programs' maps, opened from their pins (see `keep.rs`).
/// The programs stay attached while their links are pinned, and detach
/// once [`Probes::release`] removed the pins.
pub struct Probes {
    watched: Option<HashMap<MapData, u32, WatchedProc>>,
    config: Option<Array<MapData, AgentConfig>>,
    loss: Option<PerCpuHashMap<MapData, LossKey, u64>>,
    probe_errors: Option<PerCpuArray<MapData, u64>>,
    stdio: Option<StdioChannels>,
    pub origin: Origin,
    /// The marker of this set of pins (recorded in the state directory).
    pub marker: String,
    keep: KeepDir,
    /// A previous agent's links of programs attached after the load (the
    /// cgroup programs), attached until [`Probes::keep_links`].
    later: Vec<(String, PinnedLink)>,
    /// The links of the programs attached after the load, pinned.
    links: Vec<PinnedLink>,
    handed: Handed,
    // Closed last.
    _mounts: Vec<mounts::OwnedMount>,
}

impl Probes {
    /// The watched-process map (tgid -> server); once.
    pub fn take_watched(&mut self) -> HashMap<MapData, u32, WatchedProc> {
        self.watched.take().expect("watched map taken once")
    }

    /// The runtime switches; once.
    pub fn take_config(&mut self) -> Array<MapData, AgentConfig> {
        self.config.take().expect("config map taken once")
    }

    /// Per-CPU ring-buffer loss counters; once.
    pub fn take_loss(&mut self) -> PerCpuHashMap<MapData, LossKey, u64> {
        self.loss.take().expect("loss map taken once")
    }

    /// Per-CPU counters of kernel-side drops other than a full ring, by
    /// probe and reason; once.
    pub fn take_probe_errors(&mut self) -> ProbeErrors {
        ProbeErrors::new(self.probe_errors.take().expect("probe error map taken once"))
    }

    /// The stdio capture's channel maps; once.
    pub fn take_stdio(&mut self) -> StdioChannels {
        self.stdio.take().expect("stdio maps taken once")
    }

    /// The programs attached after the load and their maps (the cgroup
    /// network allowlist, `kernel/cgroup_net.rs`; the kill layer, `kernel/kill.rs`).
    pub fn objects_mut(&mut self) -> &mut Handed {
        &mut self.handed
    }

    /// Pins the links of programs attached after the load (the cgroup
    /// network programs: `kernel/cgroup_net.rs`) in place of a previous
    /// agent's, which run until then; a previous agent's link of a program
    /// not in `new` (the layer is off now) is detached. Called once, after
    /// those programs are attached (or not).
    pub fn keep_links(&mut self, new: NamedLinks) -> Result<(), keep::KeepError> {
        let later = std::mem::take(&mut self.later);
        let pinned = self.keep.replace(new, later)?;
        self.links.extend(pinned);
        Ok(())
    }

    pub fn pin_dir(&self) -> &Path {
        self.keep.dir()
    }

    /// At a clean stop: removes the pins, so the programs detach and the
    /// maps go when this agent's descriptors close, unless `keep_on_exit`
    /// (an upgrade): then the pins, and the bpffs mount they live on, stay
    /// for the next agent, and the kernel keeps watching meanwhile.
    pub fn release(&mut self, keep_on_exit: bool) {
        if keep_on_exit {
            for m in self._mounts.drain(..) {
                std::mem::forget(m);
            }
            log::info!(
                "leaving the kernel objects pinned in {} for the next agent (keep_sensors_on_exit)",
                self.keep.dir().display()
            );
        } else {
            self.keep.remove_all();
        }
    }
}

fn take<T>(objects: &mut impl Objects, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = objects.take_map(name)?;
    T::try_from(map).map_err(|source| LoadError::Map { name, source })
}

/// Loads and attaches every program (in a loading process); returns them
/// with the event ring buffer.
pub fn load(opts: &LoadOptions) -> Result<(Probes, super::ring::EventRing), LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    let mut owned_mounts = Vec::new();
    // BTF tracepoints attach by BTF id and need no tracefs, but the agent's
    // other users (and later probe families) do: mount both when absent.
    for (fstype, target) in [("tracefs", mounts::TRACEFS), ("bpf", mounts::BPFFS)] {
        owned_mounts.extend(mounts::ensure(fstype, target)?.1);
    }
    let pin_dir = opts.pin_dir();
    let _ = std::fs::create_dir_all(&pin_dir);
    if !on_bpffs(&pin_dir) {
        return Err(LoadError::NotBpffs(pin_dir));
    }
    let request = apart::Request {
        pin_dir: pin_dir.clone(),
        expected_marker: opts.expected_marker.clone(),
        watched_max: opts.watched_max.unwrap_or_else(default_watched_max),
        ring_bytes: opts.ring_bytes.unwrap_or(EVENTS_RING_BYTES),
        agent_tgid: std::process::id(),
    };
    let keep = KeepDir::new(pin_dir);
    let loaded = apart::load(&request).map_err(|e| {
        keep.remove_incomplete();
        LoadError::Apart(e)
    })?;
    for (feature, why) in &loaded.disabled {
        log::warn!("{feature} switched off: {why}");
    }
    match &loaded.origin {
        Origin::Kept => log::info!(
            "taking over the kernel objects a previous agent kept in {}: the watched set and the events queued meanwhile",
            keep.dir().display()
        ),
        Origin::Fresh { discarded: Some(why) } => log::warn!(
            "removed the kernel objects pinned in {}: {why}; starting afresh (what happened meanwhile is not seen)",
            keep.dir().display()
        ),
        Origin::Fresh { discarded: None } => {}
    }
    let mut handed = Handed::open(&keep, &loaded.refused)?;
    let later = loaded
        .later
        .into_iter()
        .map(|name| match keep.open_link(&name) {
            Ok(l) => Ok((name, l)),
            Err(why) => Err(LoadError::LaterLink { name, why }),
        })
        .collect::<Result<_, _>>()?;
    let events = take(&mut handed, "EVENTS")?;
    let probes = Probes {
        watched: Some(take(&mut handed, "WATCHED")?),
        config: Some(take(&mut handed, "CONFIG")?),
        loss: Some(take(&mut handed, "LOSS")?),
        probe_errors: Some(take(&mut handed, "PROBE_ERRORS")?),
        stdio: Some(StdioChannels::new(
            take(&mut handed, "STDIO_FILES")?,
            take(&mut handed, "STDIO_AT_EXEC")?,
        )),
        origin: loaded.origin,
        marker: loaded.marker,
        keep,
        later,
        links: Vec::new(),
        handed,
        _mounts: owned_mounts,
    };
    Ok((probes, events))
}

/// Returns the heap's free pages to the kernel (glibc keeps them otherwise:
/// a burst of events or of control requests leaves freed heap behind).
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Whether `path` is inside a bpffs mount.
pub fn on_bpffs(path: &Path) -> bool {
    mounts::mount_points("bpf").is_ok_and(|m| m.iter().any(|m| path.starts_with(m)))
}

/// Capacity of the watched map: the kernel's `pid_max` (no more processes
/// can exist at once, so a fork can never find it full), within the kernel's
/// own limit; the object's default when `pid_max` cannot be read.
fn default_watched_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map(|n| n.clamp(WATCHED_MAX_ENTRIES, WATCHED_MAX_LIMIT))
        .unwrap_or(WATCHED_MAX_ENTRIES)
}
