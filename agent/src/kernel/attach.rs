//! What the loading process does (`kernel/apart.rs`): resolves the kernel
//! offsets from BTF, loads the object (the kept maps opened from their pins,
//! or created and pinned), attaches every tracepoint and pins the links with
//! the set (`keep.rs`), and pins in the handoff directory the programs the
//! agent attaches later and the maps it takes that are not kept.

use std::path::PathBuf;

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::{
        BtfTracePoint, Program, ProgramError, RawTracePoint, links::FdLink, raw_trace_point::RawTracePointLinkId,
        tp_btf::BtfTracePointLinkId,
    },
};

use crate::kernel::{
    apart::{Loaded, Request},
    btf,
    cgroup_net::chain,
    keep::{self, KeepDir, NamedLinks, Previous},
    loader::{LoadError, Origin, object},
    objects::{HANDED_MAPS, handed_programs},
};

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

/// Loads, attaches and pins everything for the agent of `req`.
pub fn load_and_pin(req: &Request) -> Result<Loaded, LoadError> {
    let resolved = btf::resolve(&btf::KernelBtf::running()?)?;
    let keep = KeepDir::new(req.pin_dir.clone());
    let stamp = keep::stamp(object(), req.watched_max, req.ring_bytes);
    let required: Vec<&str> = TRACEPOINTS.iter().chain(RAW_TRACEPOINTS).map(|(p, _)| *p).collect();
    let (origin, marker, old_links) = match keep.inspect(&stamp, req.expected_marker.as_deref(), &required) {
        Previous::Kept { marker, links } => (Origin::Kept, Some(marker), links),
        Previous::Nothing => (Origin::Fresh { discarded: None }, None, Vec::new()),
        Previous::Discarded(why) => (Origin::Fresh { discarded: Some(why) }, None, Vec::new()),
    };

    // Removing a stale set may have removed the emptied directory too.
    let _ = std::fs::create_dir_all(keep.dir());
    let aya_btf = Btf::from_sys_fs()?;
    let mut loader = EbpfLoader::new();
    loader
        .btf(Some(&aya_btf))
        .override_global("OFFSETS", &resolved.offsets, true);
    loader.map_max_entries("WATCHED", req.watched_max);
    loader.map_max_entries("EVENTS", req.ring_bytes);
    // Opened when pinned (kept), created and pinned at once otherwise.
    let map_paths: Vec<PathBuf> = keep::KEPT_MAPS.iter().map(|m| keep.map_path(m)).collect();
    for (name, path) in keep::KEPT_MAPS.iter().zip(&map_paths) {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(object())?;
    // Before the programs attach: a signal to the agent counts from the first.
    let mut agent: Array<MapData, u32> = take(&mut ebpf, "TAMPER_AGENT")?;
    agent
        .set(agent_common::tamper::AGENT_TGID, req.agent_tgid, 0)
        .map_err(|source| LoadError::Map {
            name: "TAMPER_AGENT",
            source,
        })?;
    let io_uring = !resolved.disabled.iter().any(|(f, _)| f == btf::IO_URING_OPS);
    let attached = attach_all(&mut ebpf, &aya_btf, io_uring)?;
    let links = take_links(&mut ebpf, attached)?;
    // Before the links are pinned: a failure here leaves nothing attached.
    let refused = hand_off(&mut ebpf, &keep)?;
    // Pinned right after attaching: from here a SIGKILL leaves them running.
    let committed = keep.commit(&stamp, marker, links, old_links)?;
    Ok(Loaded {
        origin,
        marker: committed.marker,
        disabled: resolved
            .disabled
            .into_iter()
            .map(|(feature, why)| (feature, why.to_string()))
            .collect(),
        refused,
        later: committed.later.into_iter().map(|(name, _)| name).collect(),
    })
}

/// Pins the maps of [`HANDED_MAPS`] and loads and pins the programs the
/// agent attaches later in the handoff directory; returns the programs the
/// kernel refused, and why (their layer is then not enforced).
fn hand_off(ebpf: &mut Ebpf, keep: &KeepDir) -> Result<Vec<(String, String)>, LoadError> {
    let dir = keep.handoff_dir();
    keep.remove_handoff();
    std::fs::create_dir_all(&dir).map_err(|source| LoadError::Handoff {
        path: dir.clone(),
        source,
    })?;
    for &name in HANDED_MAPS {
        let map = ebpf.map(name).ok_or(LoadError::MissingMap(name))?;
        map.pin(dir.join(name))
            .map_err(|source| LoadError::Pin { name, source })?;
    }
    let mut refused = Vec::new();
    for name in handed_programs() {
        let program = ebpf.program_mut(name).ok_or(LoadError::Program {
            name,
            source: ProgramError::NotLoaded,
        })?;
        let loaded = match program {
            Program::CgroupSockAddr(p) => p.load(),
            Program::RawTracePoint(p) => p.load(),
            _ => Err(ProgramError::UnexpectedProgramType),
        };
        match loaded {
            Ok(()) => program
                .pin(dir.join(name))
                .map_err(|source| LoadError::Pin { name, source })?,
            Err(e) => refused.push((name.to_owned(), chain(&e))),
        }
    }
    Ok(refused)
}

/// The program `name` of the object, as its concrete type.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    let err = |source| LoadError::Program { name, source };
    ebpf.program_mut(name)
        .ok_or(err(ProgramError::NotLoaded))?
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
