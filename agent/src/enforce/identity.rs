//! Files by (device, inode), as the kernel names them (`inode->i_sb->s_dev`,
//! `i_ino`): what a path-based policy misses when the same file is reached
//! under another name (a hardlink, a bind mount, a renamed directory).
//!
//! `CredentialFiles` is the credential catalogue's existing files, found
//! at start-up and kept current by a periodic rescan; `programs` resolves a
//! server's declared programs to files for the kill layer's exec set.

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt as _,
    path::Path,
    time::{Duration, Instant},
};

use agent_common::kill::kernel_dev;

use crate::{
    enforce::{kill::CredentialEntry, sandbox::BIN_DIRS},
    policy::{glob::name_matches, manifest::ExePattern},
};

/// A file as the kernel identifies it: device (the kernel's encoding) and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId {
    pub dev: u32,
    pub ino: u64,
}

/// The file `path` names (symlinks followed); `None` when it does not exist.
pub fn of(path: &Path) -> Option<FileId> {
    let m = std::fs::metadata(path).ok()?;
    let d = m.dev();
    Some(FileId {
        dev: kernel_dev(libc::major(d), libc::minor(d)),
        ino: m.ino(),
    })
}

/// Files one credential directory contributes at most, and how deep the
/// walk goes: a home's `.ssh` or `.aws` holds a handful; a huge tree under
/// a credential directory is cut (counted in `CredentialFiles::cut`).
const DIR_FILES_MAX: usize = 512;
const DIR_DEPTH_MAX: usize = 4;
/// Files the registry holds at most (all homes together).
const FILES_MAX: usize = 8192;
/// How often the catalogue's locations are looked at again: new keys,
/// replaced files. A credential created and read within one period is only
/// known by its path.
pub const RESCAN_EVERY: Duration = Duration::from_secs(2);

/// The credential catalogue's existing files by identity: kind and the
/// path it was found at.
#[derive(Debug, Default)]
pub struct CredentialFiles {
    files: BTreeMap<FileId, (usize, String)>,
    /// Files left out (a directory over `DIR_FILES_MAX`, the registry full).
    pub cut: u64,
    last: Option<Instant>,
}

impl CredentialFiles {
    /// The credential file `id` is, if it is one: (kind, the path it was found at).
    pub fn get(&self, id: &FileId) -> Option<&(usize, String)> {
        self.files.get(id)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Every file, for the kernel's per-server copies.
    pub fn iter(&self) -> impl Iterator<Item = (&FileId, &(usize, String))> {
        self.files.iter()
    }

    /// Whether a rescan is due.
    pub fn due(&self) -> bool {
        self.last.is_none_or(|t| t.elapsed() >= RESCAN_EVERY)
    }

    /// Looks at `entries` (the catalogue anchored at every home, see
    /// `KillSet::compile`) again: files found are added; a path that now
    /// names another file drops the old one (it was replaced). A file whose
    /// path is gone is kept: renaming `~/.ssh` away leaves the key what it
    /// was. Returns whether anything changed.
    pub fn rescan(&mut self, entries: &[CredentialEntry]) -> bool {
        self.last = Some(Instant::now());
        let mut found: Vec<(FileId, usize, String)> = Vec::new();
        for e in entries {
            if e.exact {
                if let Some(id) = of(Path::new(&e.path)).filter(|_| is_file(&e.path)) {
                    found.push((id, e.kind, e.path.clone()));
                }
            } else {
                let mut n = 0;
                walk(Path::new(e.path.trim_end_matches('/')), 0, &mut |p, id| {
                    n += 1;
                    if n > DIR_FILES_MAX {
                        self.cut += 1;
                        return false;
                    }
                    found.push((id, e.kind, p.to_owned()));
                    true
                });
            }
        }
        let before = self.files.len();
        let mut changed = false;
        for (id, kind, path) in found {
            // The file this path named before, if another: replaced.
            let old: Vec<FileId> = self
                .files
                .iter()
                .filter(|(i, (_, p))| **i != id && *p == path)
                .map(|(i, _)| *i)
                .collect();
            for o in old {
                self.files.remove(&o);
                changed = true;
            }
            if self.files.get(&id).is_some_and(|(_, p)| *p == path) {
                continue;
            }
            if self.files.len() >= FILES_MAX && !self.files.contains_key(&id) {
                self.cut += 1;
                continue;
            }
            self.files.insert(id, (kind, path));
            changed = true;
        }
        changed || before != self.files.len()
    }
}

fn is_file(path: &str) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Regular files under `dir` (symlinks not followed), depth-bounded;
/// `visit` returns false to stop.
fn walk(dir: &Path, depth: usize, visit: &mut dyn FnMut(&str, FileId) -> bool) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return true;
    };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else {
            continue;
        };
        let p = e.path();
        if t.is_dir() && depth < DIR_DEPTH_MAX {
            if !walk(&p, depth + 1, visit) {
                return false;
            }
        } else if t.is_file()
            && let Some(id) = of(&p)
            && !visit(&p.to_string_lossy(), id)
        {
            return false;
        }
    }
    true
}

/// A server's programs as files: each declared pattern resolved (a bare
/// name in the usual bin directories, an absolute path, a wildcard in the
/// last component expanded), with the interpreter of a script (what the
/// kernel executes for it). `None` when a pattern cannot be resolved to
/// files (a wildcard in a directory, `**`): the exec set is then not
/// enforced in the kernel, only monitored.
pub fn programs(patterns: &[ExePattern], always: &[String]) -> Option<Vec<(String, FileId)>> {
    let wild = |s: &str| s.contains(['*', '?', '[', '{']);
    let mut paths: Vec<String> = always.to_vec();
    for p in patterns {
        match p {
            ExePattern::Name(n) => {
                for d in BIN_DIRS {
                    if wild(n) {
                        paths.extend(matching(d, n));
                    } else {
                        paths.push(format!("{d}/{n}"));
                    }
                }
            }
            ExePattern::Path(g) => {
                let text = g.text.as_str();
                if !wild(text) {
                    paths.push(text.to_owned());
                    continue;
                }
                let (dir, name) = text.rsplit_once('/')?;
                if wild(dir) || dir.is_empty() {
                    return None;
                }
                paths.extend(matching(dir, name));
            }
        }
    }
    let mut out: Vec<(String, FileId)> = Vec::new();
    for p in paths {
        let Some(id) = of(Path::new(&p)).filter(|_| is_file(&p)) else {
            continue;
        };
        if let Some(interp) = shebang(&p)
            && let Some(iid) = of(Path::new(&interp))
        {
            out.push((interp, iid));
        }
        let real = std::fs::canonicalize(&p)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or(p);
        out.push((real, id));
    }
    out.sort();
    out.dedup();
    Some(out)
}

/// The names in `dir` that `pattern` (one component) matches, as paths.
fn matching(dir: &str, pattern: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| name_matches(pattern, n))
        .map(|n| format!("{dir}/{n}"))
        .collect()
}

/// The interpreter a script names on its `#!` line.
fn shebang(path: &str) -> Option<String> {
    use std::io::Read as _;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let interp = String::from_utf8_lossy(line).split_whitespace().next()?.to_owned();
    interp.starts_with('/').then_some(interp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_file_keeps_its_identity_under_another_name_and_a_replaced_one_is_forgotten() {
        let d = std::env::temp_dir().join(format!("mcpwatch-identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join(".ssh")).unwrap();
        let key = d.join(".ssh/id_rsa");
        std::fs::write(&key, "k").unwrap();
        let entries = vec![CredentialEntry {
            path: format!("{}/.ssh/", d.display()),
            exact: false,
            kind: 0,
        }];
        let mut c = CredentialFiles::default();
        assert!(c.rescan(&entries));
        let id = of(&key).unwrap();
        std::fs::hard_link(&key, d.join("alias")).unwrap();
        assert_eq!(of(&d.join("alias")), Some(id));
        assert_eq!(c.get(&id).map(|(k, _)| *k), Some(0));
        // Renamed away: still known.
        std::fs::rename(d.join(".ssh"), d.join("moved")).unwrap();
        assert!(!c.rescan(&entries));
        assert!(c.get(&id).is_some());
        // Replaced: the new file is known, the old one forgotten.
        std::fs::create_dir_all(d.join(".ssh")).unwrap();
        std::fs::write(&key, "new").unwrap();
        std::fs::write(d.join("moved/id_rsa"), "gone").unwrap();
        assert!(c.rescan(&entries));
        assert!(c.get(&of(&key).unwrap()).is_some());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn declared_programs_resolve_to_files_and_directory_wildcards_do_not() {
        let p = programs(&[ExePattern::Name("sh".into())], &[]).unwrap();
        assert!(p.iter().any(|(path, _)| path.ends_with("sh")), "{p:?}");
        assert!(
            programs(&[ExePattern::Name("no-such-program-x".into())], &[])
                .unwrap()
                .is_empty()
        );
    }
}
