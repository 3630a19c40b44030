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
    time::{Duration, Instant},
};

use agent_common::kill::{
    KILL_CREDENTIAL, KILL_ENFORCED, KILL_INTERPRETER, KILL_KEY_DATA, KILL_PROBE_SENT, KILL_PROBE_TARGET, key_data,
};
use aya::{
    Ebpf,
    maps::{
        Array, HashMap, MapData,
        lpm_trie::{Key, LpmTrie},
    },
    programs::RawTracePoint,
};

use crate::enforce::kill::{KillSet, interpreter_paths};

#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("the object has no map {0}")]
    MissingMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// One `KILL_PATHS` entry: the key's data and prefix length.
type PathKey = ([u8; KILL_KEY_DATA], u32);

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KillError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(KillError::MissingMap(name))?;
    T::try_from(map).map_err(|source| KillError::Map { name, source })
}

/// The kill layer's maps, and what this agent wrote into them.
pub struct KillMaps {
    servers: HashMap<MapData, u32, u32>,
    paths: LpmTrie<MapData, [u8; KILL_KEY_DATA], u32>,
    /// Server id -> the path keys written in its scope.
    installed: BTreeMap<u32, BTreeSet<PathKey>>,
    /// Entries that did not fit or the kernel refused, counted.
    pub dropped: u64,
}

impl KillMaps {
    /// Takes the maps from the agent's object and writes the host's
    /// shells and interpreters (what a reverse shell execs).
    pub fn new(ebpf: &mut Ebpf) -> Result<Self, KillError> {
        let mut maps = Self {
            servers: take(ebpf, "KILL_SERVERS")?,
            paths: take(ebpf, "KILL_PATHS")?,
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
        let wanted: BTreeMap<u32, BTreeSet<PathKey>> = want
            .iter()
            .map(|(id, k)| (*id, credential_keys(*id, k, &mut self.dropped)))
            .collect();
        let gone: Vec<u32> = self
            .installed
            .keys()
            .filter(|id| !wanted.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            // The server first: from here it is not killed, whatever its paths.
            let _ = self.servers.remove(&id);
            for (data, bits) in self.installed.remove(&id).unwrap_or_default() {
                let _ = self.paths.remove(&Key::new(bits, data));
            }
            log::info!("kill layer: server {id} is no longer killed for its violations");
        }
        for (id, keys) in wanted {
            let new = !self.installed.contains_key(&id);
            let old = self.installed.remove(&id).unwrap_or_default();
            for (data, bits) in old.difference(&keys) {
                let _ = self.paths.remove(&Key::new(*bits, *data));
            }
            for k in keys.difference(&old) {
                self.insert(*k, KILL_CREDENTIAL);
            }
            // The paths first, then the server: it is never killed on half a policy.
            if new {
                match self.servers.insert(id, KILL_ENFORCED, 0) {
                    Ok(()) => log::info!(
                        "kill layer: server {id} is killed for its violations ({} paths)",
                        keys.len()
                    ),
                    Err(e) => {
                        self.dropped += 1;
                        log::error!("kill layer: server {id} cannot be enforced (KILL_SERVERS: {e})");
                    }
                }
            }
            self.installed.insert(id, keys);
        }
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
/// `kill_probe` program is attached to `sys_enter` of `ebpf` (the agent's
/// object, or one loaded for the check) and aimed at a throwaway child
/// blocked in `read`; the child must die of SIGKILL at its next syscall.
pub fn probe(ebpf: &mut Ebpf) -> Result<String, String> {
    let mut target: Array<MapData, u32> = take(ebpf, "KILL_PROBE").map_err(|e| e.to_string())?;
    let prog: &mut RawTracePoint = ebpf
        .program_mut("kill_probe")
        .ok_or("the object has no program kill_probe")?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    prog.load().map_err(|e| format!("loading kill_probe: {e}"))?;
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
