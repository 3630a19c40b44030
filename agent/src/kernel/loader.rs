//! Loads the kernel programs: mounts what they need, resolves kernel offsets
//! from BTF, loads and attaches, and hands out the maps.

use std::path::{Path, PathBuf};

use agent_common::{
    AgentConfig, LossKey, WatchedProc,
    config::{WATCHED_MAX_ENTRIES, WATCHED_MAX_LIMIT},
};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{BtfTracePoint, RawTracePoint},
};

use crate::kernel::{btf, mounts, probe_errors::ProbeErrors, stdio::StdioChannels};

/// The eBPF object built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcpwatch"));

/// Every program in the object: (program name, BTF tracepoint).
const TRACEPOINTS: &[(&str, &str)] = &[
    ("sched_process_fork", "sched_process_fork"),
    ("sched_process_exec", "sched_process_exec"),
    ("sched_process_exit", "sched_process_exit"),
];

/// Operations submitted through an io_uring; attached when the kernel has
/// io_uring (its offsets resolved).
const IO_URING_TRACEPOINT: (&str, &str) = ("io_uring_submit_req", "io_uring_submit_req");

/// Raw tracepoints: (program name, tracepoint).
const RAW_TRACEPOINTS: &[(&str, &str)] = &[("sys_enter", "sys_enter"), ("sys_exit", "sys_exit")];

/// Maps pinned with `--pin`.
const PINNABLE: &[&str] = &["WATCHED", "CONFIG", "LOSS", "PROBE_ERRORS"];

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
    #[error("pinning map {name} at {path}: {source}")]
    Pin {
        name: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
}

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Pin the maps under this bpffs directory (for bpftool and other readers).
    pub pin_dir: Option<PathBuf>,
    /// Size of the watched-process map.
    pub watched_max: Option<u32>,
    /// Size of the event ring buffer in bytes (a power of two, page multiple).
    pub ring_bytes: Option<u32>,
}

/// The loaded, attached programs and their maps. Dropping it detaches
/// everything and closes the maps.
pub struct Probes {
    watched: Option<HashMap<MapData, u32, WatchedProc>>,
    config: Option<Array<MapData, AgentConfig>>,
    loss: Option<PerCpuHashMap<MapData, LossKey, u64>>,
    probe_errors: Option<PerCpuArray<MapData, u64>>,
    stdio: Option<StdioChannels>,
    /// Optional fields the kernel lacks, with the feature switched off.
    pub disabled: Vec<(String, btf::OffsetError)>,
    pinned: Vec<PathBuf>,
    // Owns programs and links: detached before the mounts go.
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

    /// Files pinned at load (removed by [`Probes::unpin`]).
    pub fn pinned(&self) -> &[PathBuf] {
        &self.pinned
    }

    /// Removes the pinned files so nothing outlives the agent.
    pub fn unpin(&mut self) {
        for p in self.pinned.drain(..) {
            if let Err(e) = std::fs::remove_file(&p) {
                log::warn!("cannot remove pinned map {}: {e}", p.display());
            }
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
        let (_, owned) = mounts::ensure(fstype, target)?;
        // Pins may be kept after exit: never unmount the bpffs they live on.
        if fstype == "bpf" && opts.pin_dir.is_some() {
            std::mem::forget(owned);
            continue;
        }
        owned_mounts.extend(owned);
    }

    let kernel_btf = btf::KernelBtf::running()?;
    let resolved = btf::resolve(&kernel_btf)?;
    drop(kernel_btf);
    // The parsed BTF is megabytes: give it back before aya parses its own.
    release_free_memory();
    for (feature, why) in &resolved.disabled {
        log::warn!("{feature} switched off: {why}");
    }
    log::debug!("kernel offsets: {:?}", resolved.offsets);

    let aya_btf = Btf::from_sys_fs()?;
    let mut loader = EbpfLoader::new();
    loader
        .btf(Some(&aya_btf))
        .override_global("OFFSETS", &resolved.offsets, true)
        // STASH is task-local storage, a map type aya creates but has no
        // userspace wrapper for (userspace never reads it).
        .allow_unsupported_maps();
    loader.map_max_entries("WATCHED", opts.watched_max.unwrap_or_else(default_watched_max));
    if let Some(n) = opts.ring_bytes {
        loader.map_max_entries("EVENTS", n);
    }
    let mut ebpf = loader.load(OBJECT)?;
    let io_uring = !resolved.disabled.iter().any(|(f, _)| f == btf::IO_URING_OPS);
    attach_all(&mut ebpf, &aya_btf, io_uring)?;

    let mut pinned = Vec::new();
    if let Some(dir) = &opts.pin_dir {
        let _ = std::fs::create_dir_all(dir);
        if !on_bpffs(dir) {
            return Err(LoadError::NotBpffs(dir.clone()));
        }
        for &name in PINNABLE {
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            let map = ebpf.map(name).ok_or(LoadError::MissingMap(name))?;
            map.pin(&path).map_err(|source| LoadError::Pin {
                name,
                path: path.clone(),
                source,
            })?;
            pinned.push(path);
        }
    }

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
        pinned,
        _ebpf: ebpf,
        _mounts: owned_mounts,
    };
    Ok((probes, events))
}

/// Loads and attaches every program of `ebpf` at the agent's hook points
/// (also the benchmark's floor, which has the same programs).
pub fn attach_all(ebpf: &mut Ebpf, btf: &Btf, io_uring: bool) -> Result<(), LoadError> {
    if io_uring {
        // Optional: kernels before 6.0 name this tracepoint differently, and
        // io_uring may be built out; the rest of the watch does not need it.
        let (name, tracepoint) = IO_URING_TRACEPOINT;
        let program: &mut BtfTracePoint = program(ebpf, name)?;
        if let Err(e) = program.load(tracepoint, btf).and_then(|()| program.attach().map(drop)) {
            log::warn!("io_uring operations switched off: {name}: {e}");
        }
    }
    for &(name, tracepoint) in TRACEPOINTS {
        let program: &mut BtfTracePoint = program(ebpf, name)?;
        let err = |source| LoadError::Program { name, source };
        program.load(tracepoint, btf).map_err(err)?;
        program.attach().map_err(err)?;
    }
    for &(name, tracepoint) in RAW_TRACEPOINTS {
        let program: &mut RawTracePoint = program(ebpf, name)?;
        let err = |source| LoadError::Program { name, source };
        program.load().map_err(err)?;
        program.attach(tracepoint).map_err(err)?;
    }
    Ok(())
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
