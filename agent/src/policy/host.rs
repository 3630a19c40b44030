//! What the engine needs from the host and must not look up itself (it does
//! no I/O): the owner's home directory (`~` in manifests, an NSS lookup) and
//! the real paths on a command line (the kernel reports resolved paths, so
//! `./data` and a symlinked script are compared as what they resolve to).

use super::activity::PathFacts;

/// The home directory `~` stands for: the process owner's.
pub fn home_of(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.dir.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/nonexistent".into())
}

/// The real path of every argument of `argv` that names an existing one.
pub fn path_facts(argv: &[String], cwd: Option<&str>) -> PathFacts {
    let mut facts = PathFacts::default();
    for arg in PathFacts::candidates(argv) {
        let absolute = PathFacts::absolute(arg, cwd);
        if let Ok(real) = std::fs::canonicalize(&absolute) {
            let is_file = real.is_file();
            facts.insert(absolute, real.to_string_lossy().into_owned(), is_file);
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_argv as argv;

    #[test]
    fn homes_come_from_the_user_database() {
        assert_eq!(home_of(0), "/root");
        assert_eq!(home_of(4_000_000_000), "/nonexistent", "no such user");
    }

    #[test]
    fn command_line_paths_resolve_links_and_the_working_directory() {
        let d = std::env::temp_dir().join(format!("mcpwatch-host-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("real")).unwrap();
        std::fs::write(d.join("real/server.py"), "").unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("link")).unwrap();
        let real = std::fs::canonicalize(d.join("real")).unwrap();
        let real = real.to_string_lossy();
        let cwd = d.to_string_lossy().into_owned();
        let f = path_facts(
            &argv(&["python3", "-u", "link/server.py", "--root=link", "missing"]),
            Some(&cwd),
        );
        let at = |rel: &str| PathFacts::absolute(rel, Some(&cwd));
        let script = format!("{real}/server.py");
        assert_eq!(f.file(&at("link/server.py")), Some(script.as_str()));
        assert_eq!(f.real(&at("link")), Some(real.as_ref()), "a --flag=value's value");
        assert_eq!(f.file(&at("link")), None, "a directory is no script");
        assert_eq!(f.real(&at("missing")), None);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
