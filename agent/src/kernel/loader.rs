//! Loads the kernel programs: mounts what they need, resolves kernel offsets
//! from BTF, loads and attaches, and hands out the maps.

use std::path::{Path, PathBuf};

use agent_common::{
    AgentConfig, LossKey, WatchedProc,
    config::{EVENTS_RING_BYTES, WATCHED_MAX_ENTRIES, WATCHED_MAX_LIMIT},
};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        BtfTracePoint, RawTracePoint,
        links::{FdLink, PinnedLink},
        raw_trace_point::RawTracePointLinkId,
        tp_btf::BtfTracePointLinkId,
    },
};

use crate::kernel::{
    btf,
    keep::{self, KeepDir, NamedLinks, Previous},
    mounts,
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

/// Every program in the object: (program name, BTF tracepoint).
const TRACEPOINTS: &[(&str, &str)] = &[
    ("sched_process_fork", "sched_process_fork"),
    ("sched_process_exec", "sched_process_exec"),
    ("sched_process_exit", "sched_process_exit"),
    // Every followed syscall, at its exit (`probes::syscalls`).
    ("sys_exit", "sys_exit"),
];

/// Operations submitted through an io_uring; attached when the kernel has
/// io_uring (its offsets resolved).
const IO_URING_TRACEPOINT: (&str, &str) = ("io_uring_submit_req", "io_uring_submit_req");

/// Raw tracepoints: (program name, tracepoint).
const RAW_TRACEPOINTS: &[(&str, &str)] = &[
    // Self-protection: signals watched processes send the agent.
    ("signal_generate", "signal_generate"),
];

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Kept by a previous agent: the watched set and the ring carried on.
    Kept,
    /// Created now; `discarded` says why what a previous agent left was not
    /// reused (none: nothing was there).
    Fresh { discarded: Option<String> },
}

/// The loaded, attached programs and their maps, pinned (see `keep.rs`).
/// Dropping it closes this agent's descriptors: the programs stay attached
/// while their links are pinned, and detach once [`Probes::release`]
/// removed the pins.
pub struct Probes {
    watched: Option<HashMap<MapData, u32, WatchedProc>>,
    config: Option<Array<MapData, AgentConfig>>,
    loss: Option<PerCpuHashMap<MapData, LossKey, u64>>,
    probe_errors: Option<PerCpuArray<MapData, u64>>,
    stdio: Option<StdioChannels>,
    /// Optional fields the kernel lacks, with the feature switched off.
    pub disabled: Vec<(String, btf::OffsetError)>,
    pub origin: Origin,
    /// The marker of this set of pins (recorded in the state directory).
    pub marker: String,
    keep: KeepDir,
    /// A previous agent's links of programs attached after the load (the
    /// cgroup programs), attached until [`Probes::keep_links`].
    later: Vec<(String, PinnedLink)>,
    // Closed before the programs and the mounts go.
    _links: Vec<PinnedLink>,
    _ebpf: Ebpf,
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

    /// The loaded object, for the programs attached elsewhere (the cgroup
    /// network allowlist, `kernel/cgroup_net.rs`).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self._ebpf
    }

    /// Pins the links of programs attached after the load (the cgroup
    /// network programs: `kernel/cgroup_net.rs`) in place of a previous
    /// agent's, which run until then; a previous agent's link of a program
    /// not in `new` (the layer is off now) is detached. Called once, after
    /// those programs are attached (or not).
    pub fn keep_links(&mut self, new: NamedLinks) -> Result<(), keep::KeepError> {
        let later = std::mem::take(&mut self.later);
        let pinned = self.keep.replace(new, later)?;
        self._links.extend(pinned);
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

/// The program `name` of the object, as its concrete type.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let err = |source| LoadError::Program { name, source };
    ebpf.program_mut(name)
        .ok_or(err(aya::programs::ProgramError::NotLoaded))?
        .try_into()
        .map_err(err)
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoadError::MissingMap(name))?;
    T::try_from(map).map_err(|source| LoadError::Map { name, source })
}

/// Loads and attaches every program; returns them with the event ring buffer.
pub fn load(opts: &LoadOptions) -> Result<(Probes, RingBuf<MapData>), LoadError> {
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

    // In a child: the parsed BTF (tens of MiB) never counts in the agent's peak RSS.
    let resolved = btf::apart::resolve_running()?;
    for (feature, why) in &resolved.disabled {
        log::warn!("{feature} switched off: {why}");
    }
    log::debug!("kernel offsets: {:?}", resolved.offsets);

    let watched_max = opts.watched_max.unwrap_or_else(default_watched_max);
    let ring_bytes = opts.ring_bytes.unwrap_or(EVENTS_RING_BYTES);
    let keep = KeepDir::new(pin_dir, keep::stamp(OBJECT, watched_max, ring_bytes));
    let required: Vec<&str> = TRACEPOINTS.iter().chain(RAW_TRACEPOINTS).map(|(p, _)| *p).collect();
    let (origin, marker, old_links) = match keep.inspect(opts.expected_marker.as_deref(), &required) {
        Previous::Kept { marker, links } => {
            log::info!(
                "taking over the kernel objects a previous agent kept in {}: the watched set and the events queued meanwhile",
                keep.dir().display()
            );
            (Origin::Kept, Some(marker), links)
        }
        Previous::Nothing => (Origin::Fresh { discarded: None }, None, Vec::new()),
        Previous::Discarded(why) => {
            log::warn!(
                "removed the kernel objects pinned in {}: {why}; starting afresh (what happened meanwhile is not seen)",
                keep.dir().display()
            );
            (Origin::Fresh { discarded: Some(why) }, None, Vec::new())
        }
    };

    // Removing a stale set may have removed the emptied directory too.
    let _ = std::fs::create_dir_all(keep.dir());
    let aya_btf = Btf::from_sys_fs()?;
    let mut loader = EbpfLoader::new();
    loader
        .btf(Some(&aya_btf))
        .override_global("OFFSETS", &resolved.offsets, true);
    loader.map_max_entries("WATCHED", watched_max);
    loader.map_max_entries("EVENTS", ring_bytes);
    // Opened when pinned (kept), created and pinned at once otherwise.
    let map_paths: Vec<PathBuf> = keep::KEPT_MAPS.iter().map(|m| keep.map_path(m)).collect();
    for (name, path) in keep::KEPT_MAPS.iter().zip(&map_paths) {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(OBJECT)?;
    // Before the programs attach: a signal to the agent counts from the first.
    let mut agent: Array<MapData, u32> = take(&mut ebpf, "TAMPER_AGENT")?;
    agent
        .set(agent_common::tamper::AGENT_TGID, std::process::id(), 0)
        .map_err(|source| LoadError::Map {
            name: "TAMPER_AGENT",
            source,
        })?;
    let io_uring = !resolved.disabled.iter().any(|(f, _)| f == btf::IO_URING_OPS);
    let attached = attach_all(&mut ebpf, &aya_btf, io_uring)?;
    let links = take_links(&mut ebpf, attached)?;
    // Pinned right after attaching: from here a SIGKILL leaves them running.
    let committed = keep.commit(marker, links, old_links)?;

    release_free_memory();
    let events = take(&mut ebpf, "EVENTS")?;
    let probes = Probes {
        watched: Some(take(&mut ebpf, "WATCHED")?),
        config: Some(take(&mut ebpf, "CONFIG")?),
        loss: Some(take(&mut ebpf, "LOSS")?),
        probe_errors: Some(take(&mut ebpf, "PROBE_ERRORS")?),
        stdio: Some(StdioChannels::new(
            take(&mut ebpf, "STDIO_FILES")?,
            take(&mut ebpf, "STDIO_AT_EXEC")?,
        )),
        disabled: resolved.disabled,
        origin,
        marker: committed.marker,
        keep,
        later: committed.later,
        _links: committed.pinned,
        _ebpf: ebpf,
        _mounts: owned_mounts,
    };
    Ok((probes, events))
}

/// A program attached by [`attach_all`], with its link's id.
pub enum Attached {
    Btf(&'static str, BtfTracePointLinkId),
    Raw(&'static str, RawTracePointLinkId),
}

/// Loads and attaches every program of `ebpf` at the agent's hook points
/// (also the benchmark's floor, which has the same programs). The links stay
/// with their programs unless taken.
pub fn attach_all(ebpf: &mut Ebpf, btf: &Btf, io_uring: bool) -> Result<Vec<Attached>, LoadError> {
    let mut attached = Vec::new();
    if io_uring {
        // Optional: kernels before 6.0 name this tracepoint differently, and
        // io_uring may be built out; the rest of the watch does not need it.
        let (name, tracepoint) = IO_URING_TRACEPOINT;
        let program: &mut BtfTracePoint = program(ebpf, name)?;
        match program.load(tracepoint, btf).and_then(|()| program.attach()) {
            Ok(id) => attached.push(Attached::Btf(name, id)),
            Err(e) => log::warn!("io_uring operations switched off: {name}: {e}"),
        }
    }
    for &(name, tracepoint) in TRACEPOINTS {
        let program: &mut BtfTracePoint = program(ebpf, name)?;
        let err = |source| LoadError::Program { name, source };
        program.load(tracepoint, btf).map_err(err)?;
        attached.push(Attached::Btf(name, program.attach().map_err(err)?));
    }
    for &(name, tracepoint) in RAW_TRACEPOINTS {
        let program: &mut RawTracePoint = program(ebpf, name)?;
        let err = |source| LoadError::Program { name, source };
        program.load().map_err(err)?;
        attached.push(Attached::Raw(name, program.attach(tracepoint).map_err(err)?));
    }
    Ok(attached)
}

/// Takes the links from their programs, to be pinned.
fn take_links(ebpf: &mut Ebpf, attached: Vec<Attached>) -> Result<NamedLinks, LoadError> {
    attached
        .into_iter()
        .map(|a| match a {
            Attached::Btf(name, id) => {
                let p: &mut BtfTracePoint = program(ebpf, name)?;
                let link = p.take_link(id).map_err(|source| LoadError::Program { name, source })?;
                Ok((name, FdLink::from(link)))
            }
            Attached::Raw(name, id) => {
                let p: &mut RawTracePoint = program(ebpf, name)?;
                let link = p.take_link(id).map_err(|source| LoadError::Program { name, source })?;
                Ok((name, FdLink::from(link)))
            }
        })
        .collect()
}

/// Returns the heap's free pages to the kernel (glibc keeps them otherwise:
/// start-up parses tens of megabytes of BTF that the agent never needs again).
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
