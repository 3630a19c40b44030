//! The kill layer's kernel side: the maps the programs decide from
//! (`agent-ebpf/src/probes/kill.rs`) and the probe that tells whether
//! `bpf_send_signal` kills on this kernel.
//!
//! `KILL_SERVERS` holds the servers the kernel kills for their violations;
//! `KILL_PATHS` their credential locations (scope: the server's id) and the
//! host's shells and interpreters (scope 0). Userspace keeps what it wrote
//! per server, so a sync writes only the difference.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    os::unix::process::ExitStatusExt as _,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agent_common::{
    cgroup_net::AllowData,
    kill::{
        KILL_CREDENTIAL, KILL_ENFORCED, KILL_EXEC_SET, KILL_INODE_CREDENTIAL, KILL_INTERPRETER, KILL_KEY_DATA,
        KILL_NET_SET, KILL_PROBE_SENT, KILL_PROBE_TARGET, KILL_PROGRAM, KillInode, key_data, net_scope,
    },
};
use aya::{
    maps::{
        Array, HashMap, MapData,
        lpm_trie::{Key, LpmTrie},
    },
    programs::RawTracePoint,
};

use crate::{
    enforce::{
        kill::{KillSet, interpreter_paths},
        resolver::AllowMap,
    },
    kernel::objects::{KILL_PROBE, Objects, Unavailable, load_once},
};

#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// One `KILL_PATHS` entry: the key's data and prefix length.
type PathKey = ([u8; KILL_KEY_DATA], u32);

fn take<T>(objects: &mut impl Objects, name: &'static str) -> Result<T, KillError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = objects.take_map(name)?;
    T::try_from(map).map_err(|source| KillError::Map { name, source })
}

/// What one server's scope holds in the maps.
#[derive(Default, PartialEq, Eq)]
struct Installed {
    paths: BTreeSet<PathKey>,
    inodes: BTreeMap<KillInode, u32>,
    net: Vec<(u32, AllowData)>,
    flags: u32,
}

/// The kill layer's maps, and what this agent wrote into them.
pub struct KillMaps {
    servers: HashMap<MapData, u32, u32>,
    paths: LpmTrie<MapData, [u8; KILL_KEY_DATA], u32>,
    inodes: HashMap<MapData, KillInode, u32>,
    /// The cgroup layer's allowlist (shared) or the map itself when that
    /// layer is not attached; `None`: connect is not killed for.
    allow: Option<Arc<Mutex<AllowMap>>>,
    /// Server id -> what was written in its scope.
    installed: BTreeMap<u32, Installed>,
    /// Entries that did not fit or the kernel refused, counted.
    pub dropped: u64,
}

impl KillMaps {
    /// Takes the maps from the agent's object and writes the host's
    /// shells and interpreters (what a reverse shell execs).
    pub fn new(objects: &mut impl Objects, allow: Option<Arc<Mutex<AllowMap>>>) -> Result<Self, KillError> {
        let allow = match allow {
            Some(a) => Some(a),
            None => take::<AllowMap>(objects, "NET_ALLOW")
                .ok()
                .map(|m| Arc::new(Mutex::new(m))),
        };
        let mut maps = Self {
            servers: take(objects, "KILL_SERVERS")?,
            paths: take(objects, "KILL_PATHS")?,
            inodes: take(objects, "KILL_INODES")?,
            allow,
            installed: BTreeMap::new(),
            dropped: 0,
        };
        for p in interpreter_paths() {
            match key_data(0, p.as_bytes(), true) {
                Some((data, bits)) => maps.insert((data, bits), KILL_INTERPRETER),
                None => maps.dropped += 1,
            }
        }
        Ok(maps)
    }

    fn insert(&mut self, (data, bits): PathKey, value: u32) {
        if let Err(e) = self.paths.insert(&Key::new(bits, data), value, 0) {
            self.dropped += 1;
            log::error!("kill layer: a path entry was not written: {e}");
        }
    }

    /// Makes the maps say exactly `want` (server id, kill set): servers
    /// that left it are removed, new ones added, changed ones rewritten.
    pub fn sync(&mut self, want: &[(u32, &KillSet)]) {
        let wanted: BTreeMap<u32, Installed> = want.iter().map(|(id, k)| (*id, self.wanted(*id, k))).collect();
        let gone: Vec<u32> = self
            .installed
            .keys()
            .filter(|id| !wanted.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            // The server first: from here it is not killed, whatever its entries.
            let _ = self.servers.remove(&id);
            let old = self.installed.remove(&id).unwrap_or_default();
            self.write(&old, &Installed::default());
            log::info!("kill layer: server {id} is no longer killed for its violations");
        }
        for (id, mut want) in wanted {
            let old = self.installed.remove(&id).unwrap_or_default();
            if want == old {
                self.installed.insert(id, old);
                continue;
            }
            // A flag whose entries did not all go in is not set: the server
            // is never killed on half a policy.
            let complete = self.write(&old, &want);
            if !complete.0 {
                want.flags &= !KILL_EXEC_SET;
            }
            if !complete.1 {
                want.flags &= !KILL_NET_SET;
            }
            if want.flags != old.flags {
                match self.servers.insert(id, want.flags, 0) {
                    Ok(()) => log::info!(
                        "kill layer: server {id} is killed for its violations ({} paths, {} files{}{})",
                        want.paths.len(),
                        want.inodes.len(),
                        if want.flags & KILL_EXEC_SET != 0 {
                            ", exec set"
                        } else {
                            ""
                        },
                        if want.flags & KILL_NET_SET != 0 {
                            ", connect allowlist"
                        } else {
                            ""
                        },
                    ),
                    Err(e) => {
                        self.dropped += 1;
                        log::error!("kill layer: server {id} cannot be enforced (KILL_SERVERS: {e})");
                    }
                }
            }
            self.installed.insert(id, want);
        }
    }

    /// What the maps must hold for server `id`.
    fn wanted(&mut self, id: u32, k: &KillSet) -> Installed {
        let mut w = Installed {
            paths: credential_keys(id, k, &mut self.dropped),
            flags: KILL_ENFORCED,
            ..Default::default()
        };
        let inode = |class, f: &crate::enforce::identity::FileId| KillInode {
            scope: id,
            class,
            ino: f.ino,
            dev: f.dev,
            _pad: 0,
        };
        for (f, kind) in &k.credential_files {
            w.inodes.insert(inode(KILL_INODE_CREDENTIAL, f), *kind as u32);
        }
        if let Some(programs) = &k.programs {
            for (_, f) in programs {
                w.inodes.insert(inode(KILL_PROGRAM, f), 0);
            }
            w.flags |= KILL_EXEC_SET;
        }
        if let (Some(net), Some(_)) = (&k.net, &self.allow) {
            w.net = net.keys(net_scope(id));
            w.flags |= KILL_NET_SET;
        }
        w
    }

    /// Writes the difference from `old` to `new`; whether the program
    /// entries and the network entries all went in.
    fn write(&mut self, old: &Installed, new: &Installed) -> (bool, bool) {
        for (data, bits) in old.paths.difference(&new.paths) {
            let _ = self.paths.remove(&Key::new(*bits, *data));
        }
        for k in new.paths.difference(&old.paths) {
            self.insert(*k, KILL_CREDENTIAL);
        }
        for k in old.inodes.keys().filter(|k| !new.inodes.contains_key(k)) {
            let _ = self.inodes.remove(k);
        }
        let mut programs = true;
        for (k, v) in new.inodes.iter().filter(|(k, _)| !old.inodes.contains_key(k)) {
            if let Err(e) = self.inodes.insert(k, v, 0) {
                self.dropped += 1;
                programs &= k.class != KILL_PROGRAM;
                log::error!("kill layer: a file entry was not written: {e}");
            }
        }
        let mut net = true;
        if let Some(allow) = &self.allow {
            let mut map = allow.lock().unwrap_or_else(|p| p.into_inner());
            for (bits, data) in old.net.iter().filter(|k| !new.net.contains(k)) {
                let _ = map.remove(&Key::new(*bits, *data));
            }
            for (bits, data) in new.net.iter().filter(|k| !old.net.contains(k)) {
                if let Err(e) = map.insert(&Key::new(*bits, *data), 1, 0) {
                    self.dropped += 1;
                    net = false;
                    log::error!("kill layer: an allowlist entry was not written: {e}");
                }
            }
        }
        (programs, net)
    }
}

/// The `KILL_PATHS` keys of a server's credential locations.
fn credential_keys(id: u32, k: &KillSet, dropped: &mut u64) -> BTreeSet<PathKey> {
    k.credentials
        .iter()
        .filter_map(|c| {
            let key = key_data(id, c.path.as_bytes(), c.exact);
            if key.is_none() {
                *dropped += 1;
            }
            key
        })
        .collect()
}

/// Whether `bpf_send_signal(SIGKILL)` kills here, tried for real: the
/// `kill_probe` program of `objects` (the agent's, or an object loaded for
/// the check) is attached to `sys_enter` and aimed at a throwaway child
/// blocked in `read`; the child must die of SIGKILL at its next syscall.
pub fn probe(objects: &mut impl Objects) -> Result<String, String> {
    let mut target: Array<MapData, u32> = take(objects, "KILL_PROBE").map_err(|e| e.to_string())?;
    let prog: &mut RawTracePoint = objects
        .program(KILL_PROBE)
        .map_err(|e| e.to_string())?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    load_once(prog.load()).map_err(|e| format!("loading kill_probe: {e}"))?;
    let link = prog
        .attach("sys_enter")
        .map_err(|e| format!("attaching kill_probe: {e}"))?;
    let res = signal_a_child(&mut target);
    let _ = target.set(KILL_PROBE_TARGET, 0, 0);
    let _ = prog.detach(link);
    let _ = prog.unload();
    res
}

fn signal_a_child(target: &mut Array<MapData, u32>) -> Result<String, String> {
    // Two reads: the first is already blocked when the target is set; the
    // line ends it, and the second read's entry is the probe's moment.
    let mut child = Command::new("/bin/sh")
        .args(["-c", "read a; read b; exit 3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the probe's child: {e}"))?;
    let aim = target.set(KILL_PROBE_TARGET, child.id(), 0);
    let mut stdin = child.stdin.take().expect("piped");
    let _ = stdin.write_all(b"go\n");
    let deadline = Instant::now() + Duration::from_secs(2);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    drop(stdin);
    aim.map_err(|e| format!("aiming the probe: {e}"))?;
    let sent = target.get(&KILL_PROBE_SENT, 0).unwrap_or(0);
    match status {
        Some(s) if s.signal() == Some(libc::SIGKILL) && sent > 0 => {
            Ok("bpf_send_signal(SIGKILL) from a tracepoint killed a test process".into())
        }
        Some(s) => Err(format!(
            "bpf_send_signal did not kill the test process ({s}, {sent} signals sent)"
        )),
        None => Err("the test process was not killed within 2 s".into()),
    }
}

/// The probe on an object of its own (small maps), for `enforce-check`,
/// which runs no agent.
pub fn probe_standalone() -> Result<String, String> {
    let object = super::loader::object();
    if object.is_empty() {
        return Err("this binary was built without its eBPF object (AYA_BUILD_SKIP=1)".into());
    }
    let mut ebpf = super::loader::load_for_check()?;
    probe(&mut ebpf)
}
