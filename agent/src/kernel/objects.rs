//! The programs attached after the load (the cgroup network allowlist's
//! `sock_addr` programs, the kill probe) and the maps the enforcement layers
//! take, by name: from what the loading process handed the agent
//! ([`Handed`], see `kernel/apart.rs`), or from an object loaded for a check
//! (`aya::Ebpf`, `enforce-check`).

use std::path::Path;

use aya::{
    Ebpf,
    maps::{Map, MapData},
    programs::{CgroupSockAddr, Program, ProgramError, RawTracePoint},
};

use crate::kernel::{cgroup_net, keep::KeepDir};

/// The kill probe, attached for a moment at start-up (`kernel/kill.rs`).
pub const KILL_PROBE: &str = "kill_probe";

/// The maps the agent takes that are not kept across restarts (those are
/// opened from their own pins): handed over through the handoff directory.
pub const HANDED_MAPS: &[&str] = &["KILL_SERVERS", "KILL_PATHS", "KILL_INODES", "KILL_PROBE"];

/// Every program the loading process loads but leaves unattached: the
/// cgroup programs, then the kill probe.
pub fn handed_programs() -> impl Iterator<Item = &'static str> {
    cgroup_net::PROGRAMS.iter().map(|(name, _)| *name).chain([KILL_PROBE])
}

/// A program or a map that cannot be had, and why.
#[derive(Debug, thiserror::Error)]
#[error("{what} {name}: {why}")]
pub struct Unavailable {
    pub what: &'static str,
    pub name: &'static str,
    pub why: String,
}

/// Programs and maps by name.
pub trait Objects {
    /// The map `name`, taken (once).
    fn take_map(&mut self, name: &'static str) -> Result<Map, Unavailable>;
    /// The program `name`; loaded or not (see [`load_once`]).
    fn program(&mut self, name: &'static str) -> Result<&mut Program, Unavailable>;
}

impl Objects for Ebpf {
    fn take_map(&mut self, name: &'static str) -> Result<Map, Unavailable> {
        Ebpf::take_map(self, name).ok_or(Unavailable {
            what: "map",
            name,
            why: "not in the eBPF object".into(),
        })
    }

    fn program(&mut self, name: &'static str) -> Result<&mut Program, Unavailable> {
        self.program_mut(name).ok_or(Unavailable {
            what: "program",
            name,
            why: "not in the eBPF object".into(),
        })
    }
}

/// `load` of a program from an object; nothing for one handed over (loaded
/// by the loading process).
pub fn load_once(load: Result<(), ProgramError>) -> Result<(), ProgramError> {
    match load {
        Err(ProgramError::AlreadyLoaded) => Ok(()),
        r => r,
    }
}

/// What the loading process handed over: the unattached programs (each, or
/// why the kernel refused it), the maps that are not kept, and the kept
/// maps, opened from their pins when taken.
pub struct Handed {
    keep: KeepDir,
    maps: Vec<(&'static str, Map)>,
    programs: Vec<(&'static str, Result<Program, String>)>,
}

impl Handed {
    /// Opens what the loading process pinned in the handoff directory, then
    /// removes the directory (the descriptors opened keep the objects).
    /// `refused`: the programs it could not load, and why.
    pub fn open(keep: &KeepDir, refused: &[(String, String)]) -> Result<Self, Unavailable> {
        let dir = keep.handoff_dir();
        let opened = Self::open_in(keep, &dir, refused);
        keep.remove_handoff();
        opened
    }

    fn open_in(keep: &KeepDir, dir: &Path, refused: &[(String, String)]) -> Result<Self, Unavailable> {
        let mut maps = Vec::new();
        for &name in HANDED_MAPS {
            maps.push((name, open_map(&dir.join(name), name)?));
        }
        let mut programs = Vec::new();
        for name in handed_programs() {
            let program = match refused.iter().find(|(n, _)| n == name) {
                Some((_, why)) => Err(why.clone()),
                None => Ok(open_program(&dir.join(name), name)?),
            };
            programs.push((name, program));
        }
        Ok(Self {
            keep: keep.clone(),
            maps,
            programs,
        })
    }
}

impl Objects for Handed {
    fn take_map(&mut self, name: &'static str) -> Result<Map, Unavailable> {
        if let Some(i) = self.maps.iter().position(|(n, _)| *n == name) {
            return Ok(self.maps.swap_remove(i).1);
        }
        open_map(&self.keep.map_path(name), name)
    }

    fn program(&mut self, name: &'static str) -> Result<&mut Program, Unavailable> {
        match self.programs.iter_mut().find(|(n, _)| *n == name) {
            Some((_, Ok(p))) => Ok(p),
            Some((_, Err(why))) => Err(Unavailable {
                what: "program",
                name,
                why: why.clone(),
            }),
            None => Err(Unavailable {
                what: "program",
                name,
                why: "not handed over by the loading process".into(),
            }),
        }
    }
}

fn open_map(path: &Path, name: &'static str) -> Result<Map, Unavailable> {
    let err = |why: String| Unavailable { what: "map", name, why };
    let data = MapData::from_pin(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    Map::from_map_data(data).map_err(|e| err(e.to_string()))
}

fn open_program(path: &Path, name: &'static str) -> Result<Program, Unavailable> {
    let err = |e: ProgramError| Unavailable {
        what: "program",
        name,
        why: format!("{}: {e}", path.display()),
    };
    if name == KILL_PROBE {
        return RawTracePoint::from_pin(path).map(Program::RawTracePoint).map_err(err);
    }
    let (_, attach) = cgroup_net::PROGRAMS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a handed program is the kill probe or a cgroup program");
    CgroupSockAddr::from_pin(path, *attach)
        .map(Program::CgroupSockAddr)
        .map_err(err)
}
