//! The cgroup network allowlist's kernel side: the `sock_addr` programs
//! (`agent-ebpf/src/probes/cgroup_net.rs`) attached once to the agent's
//! cgroup subtree, and the maps they read.

use std::{
    fs::File,
    path::Path,
    sync::{Arc, Mutex},
};

use agent_common::cgroup_net::CgroupPolicy;
use aya::{
    Ebpf,
    maps::{HashMap, MapData},
    programs::{CgroupAttachMode, CgroupSockAddr, links::FdLink},
};

use crate::{enforce::resolver::AllowMap, kernel::keep::NamedLinks};

/// connect, sendmsg and bind decide; recvmsg gives DNS answers their source back.
pub const PROGRAMS: &[&str] = &[
    "cg_connect4",
    "cg_connect6",
    "cg_sendmsg4",
    "cg_sendmsg6",
    "cg_bind4",
    "cg_bind6",
    "cg_recvmsg4",
    "cg_recvmsg6",
];

#[derive(Debug, thiserror::Error)]
pub enum CgroupNetError {
    #[error("opening the cgroup {0}: {1}")]
    Open(String, #[source] std::io::Error),
    #[error("the object has no program {0}")]
    NoProgram(&'static str),
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
    #[error("the object has no map {0}")]
    MissingMap(&'static str),
    #[error("program {0}: this kernel attached it without a link (cgroup links need kernel 5.7)")]
    NoLink(&'static str),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
}

/// The attached programs' maps (pinned with the agent's other kept maps,
/// `kernel/keep.rs`), and their links, to be pinned by the agent: pinned,
/// the programs stay attached when the agent dies, and the next agent
/// takes them over like the tracepoints.
pub struct CgroupNet {
    pub policy: HashMap<MapData, u64, CgroupPolicy>,
    pub allow: Arc<Mutex<AllowMap>>,
}

fn attach_programs(ebpf: &mut Ebpf, subtree: &Path, names: &[&'static str]) -> Result<NamedLinks, CgroupNetError> {
    let dir = File::open(subtree).map_err(|e| CgroupNetError::Open(subtree.display().to_string(), e))?;
    let mut links = Vec::new();
    for &name in names {
        let err = |source| CgroupNetError::Program { name, source };
        let p: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or(CgroupNetError::NoProgram(name))?
            .try_into()
            .map_err(err)?;
        p.load().map_err(err)?;
        // A link (kernel 5.7+) runs beside other programs on the cgroup
        // anyway, and the kernel refuses link flags (EINVAL): Single.
        let id = p.attach(&dir, CgroupAttachMode::Single).map_err(err)?;
        let link = p.take_link(id).map_err(err)?;
        // A kernel without cgroup links (before 5.7) attaches the old way:
        // nothing to pin, so nothing the next agent could take over.
        let link = FdLink::try_from(link).map_err(|_| CgroupNetError::NoLink(name))?;
        links.push((name, link));
    }
    Ok(links)
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, CgroupNetError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(CgroupNetError::MissingMap(name))?;
    T::try_from(map).map_err(|source| CgroupNetError::Map { name, source })
}

/// An error with its sources (aya's syscall errors keep the errno there).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Attaches every program to `subtree` and takes the maps; the links are
/// for the caller to pin.
pub fn attach(ebpf: &mut Ebpf, subtree: &Path) -> Result<(CgroupNet, NamedLinks), CgroupNetError> {
    let links = attach_programs(ebpf, subtree, PROGRAMS)?;
    let net = CgroupNet {
        policy: take(ebpf, "NET_POLICY")?,
        allow: Arc::new(Mutex::new(take(ebpf, "NET_ALLOW")?)),
    };
    Ok((net, links))
}

/// Whether cgroup v2 `sock_addr` programs attach here: loads the object
/// (with small maps) and attaches `cg_connect4` to a scratch cgroup under
/// `mount`, then removes both. For `enforce-check`, which runs no agent.
pub fn probe(mount: &Path) -> Result<(), String> {
    let object = super::loader::object();
    if object.is_empty() {
        return Err("this binary was built without its eBPF object (AYA_BUILD_SKIP=1)".into());
    }
    let dir = mount.join(format!("mcpwatch-check-{}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let res = (|| {
        let mut ebpf = super::loader::load_for_check()?;
        attach_programs(&mut ebpf, &dir, &["cg_connect4"])
            .map(drop)
            .map_err(|e| chain(&e))
    })();
    let _ = std::fs::remove_dir(&dir);
    res
}
