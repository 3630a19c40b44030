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
    maps::{HashMap, MapData},
    programs::{CgroupAttachMode, CgroupSockAddr, CgroupSockAddrAttachType as At, links::FdLink},
};

use crate::{
    enforce::resolver::AllowMap,
    kernel::{
        keep::NamedLinks,
        objects::{Objects, Unavailable, load_once},
    },
};

/// connect, sendmsg and bind decide; recvmsg gives DNS answers their source
/// back. With their attach types (a program handed over by the loading
/// process is opened from its pin, which does not say).
pub const PROGRAMS: &[(&str, At)] = &[
    ("cg_connect4", At::Connect4),
    ("cg_connect6", At::Connect6),
    ("cg_sendmsg4", At::UDPSendMsg4),
    ("cg_sendmsg6", At::UDPSendMsg6),
    ("cg_bind4", At::Bind4),
    ("cg_bind6", At::Bind6),
    ("cg_recvmsg4", At::UDPRecvMsg4),
    ("cg_recvmsg6", At::UDPRecvMsg6),
];

#[derive(Debug, thiserror::Error)]
pub enum CgroupNetError {
    #[error("opening the cgroup {0}: {1}")]
    Open(String, #[source] std::io::Error),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
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
    #[error("program {0}: this kernel attached it without a link (cgroup links need kernel 5.7)")]
    NoLink(&'static str),
}

/// The attached programs' maps (pinned with the agent's other kept maps,
/// `kernel/keep.rs`), and their links, to be pinned by the agent: pinned,
/// the programs stay attached when the agent dies, and the next agent
/// takes them over like the tracepoints.
pub struct CgroupNet {
    pub policy: HashMap<MapData, u64, CgroupPolicy>,
    pub allow: Arc<Mutex<AllowMap>>,
}

fn attach_programs(
    objects: &mut impl Objects,
    subtree: &Path,
    names: impl IntoIterator<Item = &'static str>,
) -> Result<NamedLinks, CgroupNetError> {
    let dir = File::open(subtree).map_err(|e| CgroupNetError::Open(subtree.display().to_string(), e))?;
    let mut links = Vec::new();
    for name in names {
        let err = |source| CgroupNetError::Program { name, source };
        let p: &mut CgroupSockAddr = objects.program(name)?.try_into().map_err(err)?;
        load_once(p.load()).map_err(err)?;
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

fn take<T>(objects: &mut impl Objects, name: &'static str) -> Result<T, CgroupNetError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = objects.take_map(name)?;
    T::try_from(map).map_err(|source| CgroupNetError::Map { name, source })
}

/// An error with its sources (aya's syscall errors keep the errno there),
/// each said once: a source whose text the message already holds is left out.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = c.source();
    }
    s
}

/// Attaches every program to `subtree` and takes the maps; the links are
/// for the caller to pin.
pub fn attach(objects: &mut impl Objects, subtree: &Path) -> Result<(CgroupNet, NamedLinks), CgroupNetError> {
    let links = attach_programs(objects, subtree, PROGRAMS.iter().map(|(name, _)| *name))?;
    let net = CgroupNet {
        policy: take(objects, "NET_POLICY")?,
        allow: Arc::new(Mutex::new(take(objects, "NET_ALLOW")?)),
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
        attach_programs(&mut ebpf, &dir, ["cg_connect4"])
            .map(drop)
            .map_err(|e| chain(&e))
    })();
    let _ = std::fs::remove_dir(&dir);
    res
}
