//! The cgroup layer: each server in enforce mode runs in its own cgroup v2,
//! `<cgroup2 mount>/mcpwatch/s<server id>`, which the agent creates when the
//! wrapper registers (moving the wrapper into it before acknowledging, so
//! the server is born inside) and removes when the server is forgotten.
//! The `sock_addr` programs are attached once, to `<mount>/mcpwatch`, and
//! judge each server by its cgroup id; its allowlist and its resolver's
//! port go into their maps before the wrapper is moved.
//!
//! The cgroup files are written directly (mkdir, `cgroup.procs`, rmdir):
//! two file operations do not need a cgroup-management crate.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use agent_common::cgroup_net::{CgroupPolicy, POLICY_ANY_OUT};
use aya::{Ebpf, maps::lpm_trie::Key};

use super::{
    allowlist::NetAllow,
    resolver::{self, Resolver, ResolverCtx},
};
use crate::kernel::{
    cgroup_net::{self, CgroupNet},
    mounts,
};

/// The agent's subtree below the cgroup2 mount.
pub const SUBTREE: &str = "mcpwatch";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("writing the allowlist: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("starting the resolver: {0}")]
    Resolver(#[source] std::io::Error),
    #[error(transparent)]
    Kernel(#[from] cgroup_net::CgroupNetError),
    #[error("no cgroup2 filesystem is mounted")]
    NoCgroup2,
}

/// The first cgroup2 mount of /proc/mounts.
pub fn cgroup2_mount() -> Option<PathBuf> {
    mounts::mount_points("cgroup2").ok()?.into_iter().next()
}

/// Whether the layer works here, tried for real: a `sock_addr` program
/// attached to a scratch cgroup (`enforce-check`; the agent reports its own
/// attach instead).
pub fn trial() -> Result<String, String> {
    let mount = cgroup2_mount().ok_or("no cgroup2 filesystem is mounted")?;
    cgroup_net::probe(&mount)?;
    Ok(format!("under {}", mount.display()))
}

struct Enforced {
    dir: PathBuf,
    cgroup: u64,
    _resolver: Option<Resolver>,
}

pub struct CgroupLayer {
    root: PathBuf,
    kernel: CgroupNet,
    upstream: SocketAddr,
    servers: HashMap<u32, Enforced>,
}

impl CgroupLayer {
    /// Creates the subtree (removing the empty server cgroups a previous
    /// agent left) and attaches the programs to it.
    pub fn start(ebpf: &mut Ebpf, upstream: SocketAddr) -> Result<Self, CgroupError> {
        let root = cgroup2_mount().ok_or(CgroupError::NoCgroup2)?.join(SUBTREE);
        std::fs::create_dir_all(&root).map_err(|e| CgroupError::Io(root.display().to_string(), e))?;
        if let Ok(rd) = std::fs::read_dir(&root) {
            for e in rd.flatten() {
                // Fails (and stays) while processes are in it.
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let kernel = cgroup_net::attach(ebpf, &root)?;
        Ok(Self {
            root,
            kernel,
            upstream,
            servers: HashMap::new(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Puts `pid` (the wrapper, about to exec server `id`) in the server's
    /// cgroup under `allow`.
    pub fn enforce(&mut self, id: u32, server: &str, pid: u32, allow: &NetAllow) -> Result<(), CgroupError> {
        if !self.servers.contains_key(&id) {
            let e = self.create(id, server, allow)?;
            self.servers.insert(id, e);
        }
        let dir = &self.servers[&id].dir;
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(|e| CgroupError::Io(procs.display().to_string(), e))
    }

    fn create(&mut self, id: u32, server: &str, allow: &NetAllow) -> Result<Enforced, CgroupError> {
        let dir = self.root.join(format!("s{id}"));
        let io = |e| CgroupError::Io(dir.display().to_string(), e);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(e)),
            _ => {}
        }
        // The cgroup id is its directory's inode number (kernfs).
        let cgroup = std::fs::metadata(&dir).map_err(io)?.ino();
        let fixed: HashSet<_> = allow.keys(cgroup).into_iter().collect();
        {
            let mut map = self.kernel.allow.lock().expect("allow map");
            for (bits, data) in &fixed {
                map.insert(&Key::new(*bits, *data), 1, 0)?;
            }
        }
        let resolver = if allow.any_out {
            None
        } else {
            Some(
                resolver::spawn(ResolverCtx {
                    server: server.to_owned(),
                    cgroup,
                    names: allow.names.clone(),
                    upstream: self.upstream,
                    allow: self.kernel.allow.clone(),
                    fixed,
                })
                .map_err(CgroupError::Resolver)?,
            )
        };
        let policy = CgroupPolicy {
            dns_port: resolver.as_ref().map_or(0, |r| r.port),
            flags: if allow.any_out { POLICY_ANY_OUT } else { 0 },
            _pad: 0,
        };
        self.kernel.policy.insert(cgroup, policy, 0)?;
        log::info!(
            "{server}: network allowlist in cgroup {} ({} rules, {} names, resolver on port {})",
            dir.display(),
            allow.out.len() + allow.bind.len(),
            allow.names.len(),
            policy.dns_port
        );
        Ok(Enforced {
            dir,
            cgroup,
            _resolver: resolver,
        })
    }

    /// Server `id` is forgotten: its entries, its resolver, its cgroup go.
    pub fn forget(&mut self, id: u32) {
        let Some(e) = self.servers.remove(&id) else {
            return;
        };
        let _ = self.kernel.policy.remove(&e.cgroup);
        {
            let mut map = self.kernel.allow.lock().expect("allow map");
            let mine: Vec<_> = map
                .keys()
                .flatten()
                .filter(|k| k.data().cgroup == e.cgroup.to_ne_bytes())
                .collect();
            for k in mine {
                let _ = map.remove(&k);
            }
        }
        if let Err(err) = std::fs::remove_dir(&e.dir) {
            log::warn!("removing the cgroup {}: {err}", e.dir.display());
        }
    }
}
