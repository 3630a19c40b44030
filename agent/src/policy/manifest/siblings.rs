//! A declared file brings its well-known siblings: SQLite's rollback journal
//! and write-ahead log (`-journal`, `-wal`, `-shm`), lock files (`.lock`),
//! editor backups (`~`) and the temporary file an atomic write renames into
//! it (`.tmp`, `.RANDOM.tmp`). A path grant otherwise covers only "itself and below".

/// Suffixes a declared file's siblings carry.
/// `.*.tmp`: a temporary name with a random part (`memory.json.3f9c….tmp`,
/// Node's atomic writes).
pub const SUFFIXES: &[&str] = &["-journal", "-wal", "-shm", ".lock", "~", ".tmp", ".*.tmp"];

/// `path` and, when it names a file, its siblings. A file is a pattern whose
/// last part has an extension and no wildcard (`/srv/app.db`,
/// `memory.json`): a directory's grant already covers what is below it.
pub fn with_siblings(path: String) -> Vec<String> {
    let last = path.rsplit('/').next().unwrap_or("");
    let is_file =
        last.rfind('.').is_some_and(|i| i > 0 && i + 1 < last.len()) && !last.contains(['*', '?', '[', ']', '{', '}']);
    if !is_file {
        return vec![path];
    }
    let mut out = Vec::with_capacity(SUFFIXES.len() + 1);
    out.extend(SUFFIXES.iter().map(|s| format!("{path}{s}")));
    out.push(path);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_bring_their_siblings_directories_and_globs_do_not() {
        let s = with_siblings("/srv/app.db".into());
        for want in [
            "/srv/app.db",
            "/srv/app.db-journal",
            "/srv/app.db-wal",
            "/srv/app.db-shm",
            "/srv/app.db.lock",
        ] {
            assert!(s.iter().any(|p| p == want), "{want} in {s:?}");
        }
        assert!(s.iter().any(|p| p == "/srv/app.db.*.tmp"));
        assert_eq!(with_siblings("/srv/data".into()), ["/srv/data"]);
        assert_eq!(with_siblings("/srv/*.db".into()), ["/srv/*.db"]);
        assert_eq!(with_siblings("/home/u/.config".into()), ["/home/u/.config"]);
    }
}
