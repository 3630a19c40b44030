//! The cgroup layer: each server in enforce mode runs in its own cgroup v2,
//! `<cgroup2 mount>/mcpwatch/s<server id>`, which the agent creates when the
//! wrapper registers (moving the wrapper into it before acknowledging, so
//! the server is born inside) and removes when the server is forgotten.
//! The `sock_addr` programs are attached once, to `<mount>/mcpwatch`, and
//! judge each server by its cgroup id; its allowlist and its resolver's
//! port go into their maps before the wrapper is moved.
//!
//! The programs' links and maps are pinned with the agent's other kernel
//! objects (`kernel/keep.rs`): an agent killed leaves every enforced
//! server's allowlist in force, and the next agent takes over the programs,
//! the maps and the servers' cgroups (their records are in the handover,
//! `daemon/handover.rs`), starting a resolver for each again.
//!
//! The cgroup files are written directly (mkdir, `cgroup.procs`, rmdir):
//! two file operations do not need a cgroup-management crate.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use agent_common::cgroup_net::{AllowData, CgroupPolicy, KIND_OUT, POLICY_ANY_OUT};
use aya::maps::lpm_trie::Key;
use serde::{Deserialize, Serialize};

use super::{
    allowlist::NetAllow,
    resolver::{self, Resolved, Resolver, ResolverCtx},
    sandbox::Sandbox,
};
use crate::{
    kernel::{
        cgroup_net::{self, CgroupNet},
        keep::NamedLinks,
        mounts,
    },
    output::metrics::Metrics,
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
    #[error("the sandbox has no network allowlist")]
    NoAllowlist,
}

/// What the next agent needs to take over an enforced server's cgroup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CgroupRecord {
    /// The server's id (its cgroup is `s<id>`).
    pub id: u32,
    /// The cgroup's id (its directory's inode): a directory of that name
    /// made since is not the server's.
    pub cgroup: u64,
    /// The port its resolver listened on (the kept programs steer there).
    pub dns_port: u16,
    /// The sandbox the server was started with (the policy judges its
    /// refusals by it), and the allowlist in its cgroup.
    pub sandbox: Sandbox,
    pub net: NetAllow,
}

impl CgroupRecord {
    /// The sandbox with its allowlist (which is never sent to the wrapper,
    /// so not in its serialized form).
    pub fn full_sandbox(&self) -> Sandbox {
        Sandbox {
            net: Some(self.net.clone()),
            resolver_port: (self.dns_port != 0).then_some(self.dns_port),
            ..self.sandbox.clone()
        }
    }
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
    record: CgroupRecord,
    _resolver: Option<Resolver>,
}

pub struct CgroupLayer {
    root: PathBuf,
    kernel: CgroupNet,
    upstream: SocketAddr,
    metrics: Metrics,
    servers: HashMap<u32, Enforced>,
    resolved_tx: std::sync::mpsc::SyncSender<Resolved>,
    resolved: std::sync::mpsc::Receiver<Resolved>,
}

impl CgroupLayer {
    /// The allowlist map, shared with the kill layer's connect check
    /// (its entries in a scope of their own, `agent_common::kill::net_scope`).
    pub fn allow_map(&self) -> std::sync::Arc<std::sync::Mutex<super::resolver::AllowMap>> {
        self.kernel.allow.clone()
    }

    /// Creates the subtree (removing the empty server cgroups a previous
    /// agent left) and attaches the programs to it; the links are for the
    /// caller to pin (`Probes::keep_links`). `previous`: the enforced
    /// servers a previous agent handed over (its maps kept): those still
    /// running are taken over.
    pub fn start(
        objects: &mut impl crate::kernel::objects::Objects,
        upstream: SocketAddr,
        metrics: Metrics,
        previous: &[CgroupRecord],
    ) -> Result<(Self, NamedLinks), CgroupError> {
        let root = cgroup2_mount().ok_or(CgroupError::NoCgroup2)?.join(SUBTREE);
        std::fs::create_dir_all(&root).map_err(|e| CgroupError::Io(root.display().to_string(), e))?;
        if let Ok(rd) = std::fs::read_dir(&root) {
            for e in rd.flatten() {
                // Fails (and stays) while processes are in it.
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let (kernel, links) = cgroup_net::attach(objects, &root)?;
        let (resolved_tx, resolved) = std::sync::mpsc::sync_channel(resolver::RESOLVED_QUEUE);
        let mut layer = Self {
            root,
            kernel,
            upstream,
            metrics,
            servers: HashMap::new(),
            resolved_tx,
            resolved,
        };
        layer.take_over(previous);
        Ok((layer, links))
    }

    /// Takes over the servers of `previous` whose cgroup still holds
    /// processes: their entries stay in the kept maps (the resolver's
    /// addresses included), a resolver serves them again (on the same port
    /// when it is free). Entries of cgroups no server owns any more go.
    fn take_over(&mut self, previous: &[CgroupRecord]) {
        for r in previous {
            let dir = self.root.join(format!("s{}", r.id));
            if !std::fs::metadata(&dir).is_ok_and(|m| m.ino() == r.cgroup) {
                continue;
            }
            match self.install(dir, r.clone()) {
                Ok(e) => {
                    log::info!(
                        "{}: took over its network allowlist in cgroup {}",
                        r.sandbox.server,
                        e.dir.display()
                    );
                    self.servers.insert(r.id, e);
                }
                Err(e) => log::error!("{}: taking over its cgroup: {e}", r.sandbox.server),
            }
        }
        let owned: HashSet<u64> = self.servers.values().map(|e| e.record.cgroup).collect();
        let stale: HashSet<u64> = self
            .kernel
            .policy
            .keys()
            .flatten()
            .chain(
                self.allow_keys(|_| true)
                    .into_iter()
                    .map(|k| u64::from_ne_bytes(k.data().cgroup)),
            )
            .filter(|c| !owned.contains(c))
            .collect();
        for c in stale {
            self.purge(c);
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Puts `pid` (the wrapper, about to exec server `id`) in the server's
    /// cgroup under the allowlist of `sb`. Returns its resolver's port
    /// (none: every destination is allowed, DNS is not steered).
    pub fn enforce(&mut self, id: u32, pid: u32, sb: &Sandbox) -> Result<Option<u16>, CgroupError> {
        if !self.servers.contains_key(&id) {
            let e = self.create(id, sb)?;
            self.servers.insert(id, e);
        }
        let e = &self.servers[&id];
        let procs = e.dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(|e| CgroupError::Io(procs.display().to_string(), e))?;
        Ok((e.record.dns_port != 0).then_some(e.record.dns_port))
    }

    fn create(&mut self, id: u32, sb: &Sandbox) -> Result<Enforced, CgroupError> {
        let net = sb.net.clone().ok_or(CgroupError::NoAllowlist)?;
        let dir = self.root.join(format!("s{id}"));
        let io = |e| CgroupError::Io(dir.display().to_string(), e);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(e)),
            _ => {}
        }
        // The cgroup id is its directory's inode number (kernfs).
        let cgroup = std::fs::metadata(&dir).map_err(io)?.ino();
        let record = CgroupRecord {
            id,
            cgroup,
            dns_port: 0,
            sandbox: Sandbox {
                net: None,
                ..sb.clone()
            },
            net,
        };
        self.install(dir, record)
    }

    /// Writes a server's allowlist and policy into the maps and starts its
    /// resolver (on `record.dns_port` when free). Destinations already in
    /// the map for its cgroup beyond its static rules are a previous
    /// resolver's answers: they stay, and expire as if answered now.
    fn install(&mut self, dir: PathBuf, mut record: CgroupRecord) -> Result<Enforced, CgroupError> {
        let (cgroup, allow, server) = (record.cgroup, &record.net, record.sandbox.server.clone());
        let fixed: HashSet<_> = allow.keys(cgroup).into_iter().collect();
        {
            let mut map = self.kernel.allow.lock().expect("allow map");
            for (bits, data) in &fixed {
                map.insert(&Key::new(*bits, *data), 1, 0)?;
            }
        }
        let learnt: Vec<(u32, AllowData)> = self
            .allow_keys(|k| u64::from_ne_bytes(k.data().cgroup) == cgroup && k.data().kind == KIND_OUT)
            .into_iter()
            .map(|k| (k.prefix_len(), k.data()))
            .filter(|k| !fixed.contains(k))
            .collect();
        let resolver = if allow.any_out {
            None
        } else {
            let ctx = ResolverCtx {
                id: record.id,
                resolved: self.resolved_tx.clone(),
                server: server.clone(),
                cgroup,
                names: allow.names.clone(),
                upstream: self.upstream,
                allow: self.kernel.allow.clone(),
                fixed,
                counters: self.metrics.resolver(&server),
            };
            Some(resolver::spawn(ctx, record.dns_port, learnt).map_err(CgroupError::Resolver)?)
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
        record.dns_port = policy.dns_port;
        Ok(Enforced {
            dir,
            record,
            _resolver: resolver,
        })
    }

    /// The names the resolvers answered since the last call, for the
    /// monitor's host cache.
    pub fn resolved(&self) -> Vec<Resolved> {
        self.resolved.try_iter().collect()
    }

    /// What the next agent needs to take over the enforced servers.
    pub fn records(&self) -> Vec<CgroupRecord> {
        let mut r: Vec<CgroupRecord> = self.servers.values().map(|e| e.record.clone()).collect();
        r.sort_unstable_by_key(|r| r.id);
        r
    }

    /// The allowlist's keys that `pick` selects.
    fn allow_keys(&self, pick: impl Fn(&Key<AllowData>) -> bool) -> Vec<Key<AllowData>> {
        let map = self.kernel.allow.lock().expect("allow map");
        map.keys().flatten().filter(|k| pick(k)).collect()
    }

    /// Removes cgroup `cgroup`'s policy and allowlist entries.
    fn purge(&mut self, cgroup: u64) {
        let _ = self.kernel.policy.remove(&cgroup);
        let mine = self.allow_keys(|k| k.data().cgroup == cgroup.to_ne_bytes());
        let mut map = self.kernel.allow.lock().expect("allow map");
        for k in mine {
            let _ = map.remove(&k);
        }
    }

    /// Server `id` is forgotten: its entries, its resolver, its cgroup go.
    /// Returns whether it had any.
    pub fn forget(&mut self, id: u32) -> bool {
        let Some(e) = self.servers.remove(&id) else {
            return false;
        };
        self.purge(e.record.cgroup);
        if let Err(err) = std::fs::remove_dir(&e.dir) {
            log::warn!("removing the cgroup {}: {err}", e.dir.display());
        }
        true
    }
}
