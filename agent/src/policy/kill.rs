//! The kill layer's policy side: each unsandboxed server's kill set
//! (compiled at watch and reload, its files re-resolved periodically), and
//! the host's credential files by identity, which every watched process's
//! opens are compared with (a credential under another name is still one).

use super::{Policy, activity::Activity, catalog};
use crate::enforce::kill::{KillSet, credential_locations};

impl Policy {
    /// Compiles what the kernel kills `server` for (when it is its
    /// boundary). `exe`: the server's own executable, when it is first
    /// seen (a recompile keeps the one it had).
    pub(super) fn compile_kill(&mut self, server: &str, homes: Vec<String>, exe: Option<&str>) {
        let Some(s) = self.engine.server(server) else {
            return;
        };
        let always = match exe {
            Some(e) => runtime_programs(e),
            None => s.kill_set().map(|k| k.always.clone()).unwrap_or_default(),
        };
        let mut k = KillSet::compile(&s.manifest, &homes);
        k.missing = self.kill_missing;
        k.always = always;
        k.resolve_programs(&s.manifest, &k.always.clone());
        k.compile_net(&s.manifest);
        self.note_homes(&homes);
        k.take_credential_files(&self.cred_files);
        self.engine.set_kill(server, homes, k);
    }

    /// Homes whose credentials are identified from now on; new ones are
    /// scanned at once, so a server's credentials are known by identity
    /// before it runs a tool.
    pub(super) fn note_homes(&mut self, homes: &[String]) {
        if homes.iter().any(|h| !self.cred_homes.contains(h)) {
            self.cred_homes.extend(homes.iter().cloned());
            self.rescan_credentials();
        }
    }

    fn rescan_credentials(&mut self) -> bool {
        let homes: Vec<String> = self.cred_homes.iter().cloned().collect();
        self.cred_files.rescan(&credential_locations(&homes))
    }

    /// Looks at the credential files and the declared programs again when
    /// due (new keys, files replaced on disk: new inodes) and recompiles the
    /// kill sets. Returns whether the kernel's copy must be synced.
    pub fn refresh_identities(&mut self) -> bool {
        if !self.cred_files.due() {
            return false;
        }
        self.rescan_credentials();
        let names: Vec<String> = self.engine.servers().map(|(n, _)| n.to_owned()).collect();
        let mut changed = false;
        for name in names {
            let Some(homes) = self.engine.kill_homes(&name).map(<[String]>::to_vec) else {
                continue;
            };
            let before = self.engine.server(&name).and_then(|s| s.kill_set().cloned());
            self.compile_kill(&name, homes, None);
            let after = self.engine.server(&name).and_then(|s| s.kill_set().cloned());
            changed |= before != after;
        }
        changed
    }

    /// Credential files the registry left out (a directory too large, the
    /// registry full).
    pub fn credential_files_cut(&self) -> u64 {
        self.cred_files.cut
    }

    /// `act` with `same_as` set when it opened a known credential file
    /// under a name the catalogue does not know; `None` otherwise.
    pub(super) fn same_file(&self, act: &Activity) -> Option<Activity> {
        let Activity::File(f) = act else {
            return None;
        };
        let id = f.identity?;
        let (_, path) = self.cred_files.get(&id)?;
        if catalog::classify(&f.path).is_some() {
            return None;
        }
        let mut f = f.clone();
        f.same_as = Some(path.clone());
        Some(Activity::File(f))
    }
}

/// What a server may always exec: its own executable and its runtime's
/// programs (npx runs node, a Python server its interpreter again).
fn runtime_programs(exe: &str) -> Vec<String> {
    let mut out = vec![exe.to_owned()];
    let name = crate::policy::manifest::basename(exe);
    let dir = exe.rsplit_once('/').map(|(d, _)| d).unwrap_or("/usr/bin");
    let family: &[&str] = if name.starts_with("python") {
        &["python", "python3"]
    } else if name.starts_with("node") || name == "npx" || name == "npm" {
        &["node", "nodejs", "npm", "npx"]
    } else if name == "uv" || name == "uvx" {
        &["uv", "uvx", "python", "python3"]
    } else {
        &[]
    };
    for f in family {
        out.push(format!("{dir}/{f}"));
        out.push(format!("/usr/bin/{f}"));
    }
    out
}
