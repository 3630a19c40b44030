//! What the engine needs from the host and must not look up itself (it does
//! no I/O): the owner's home directory (`~` in manifests, an NSS lookup) and
//! the real paths on a command line (the kernel reports resolved paths, so
//! `./data` and a symlinked script are compared as what they resolve to).

use std::path::Path;

use super::activity::PathFacts;

/// The home directory `~` stands for: the process owner's.
pub fn home_of(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.dir.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/nonexistent".into())
}

/// The real path of every argument of `argv` that names an existing one, and
/// the package a file among them belongs to (`home`: the owner's, never one).
pub fn path_facts(argv: &[String], cwd: Option<&str>, home: &str) -> PathFacts {
    let mut facts = PathFacts::default();
    for arg in PathFacts::candidates(argv) {
        let absolute = PathFacts::absolute(arg, cwd);
        if let Ok(real) = std::fs::canonicalize(&absolute) {
            let is_file = real.is_file();
            if is_file && let Some(root) = package_root(&real, home) {
                facts.insert_package(real.to_string_lossy().into_owned(), root);
            }
            facts.insert(absolute, real.to_string_lossy().into_owned(), is_file);
        }
    }
    facts
}

/// Files that make a directory a project or a package: the script's code is
/// that directory (its modules, data files, vendored dependencies).
const PACKAGE_METADATA: &[&str] = &[
    "package.json",
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "Pipfile",
    "requirements.txt",
    "deno.json",
    "deno.jsonc",
];

/// How many directories above a script are searched for its package root.
const PACKAGE_DEPTH_MAX: usize = 8;

/// The nearest directory above `file` holding package metadata, stopping at
/// a shared directory (`/`, `/tmp`, `/var/tmp`, `/dev/shm`, a home, `/home`):
/// metadata there does not make everything in it one package.
fn package_root(file: &Path, home: &str) -> Option<String> {
    let shared = |d: &Path| {
        let s = d.to_string_lossy();
        matches!(
            s.as_ref(),
            "/" | "/tmp" | "/var/tmp" | "/dev/shm" | "/home" | "/root" | "/run" | "/var" | "/usr" | "/opt" | "/srv"
        ) || s == home
            || d.parent().is_some_and(|p| p == Path::new("/home"))
    };
    file.ancestors()
        .skip(1)
        .take(PACKAGE_DEPTH_MAX)
        .take_while(|d| !shared(d))
        .find(|d| PACKAGE_METADATA.iter().any(|m| d.join(m).is_file()))
        .map(|d| d.to_string_lossy().into_owned())
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
            "/nonexistent",
        );
        let at = |rel: &str| PathFacts::absolute(rel, Some(&cwd));
        let script = format!("{real}/server.py");
        assert_eq!(f.file(&at("link/server.py")), Some(script.as_str()));
        assert_eq!(f.real(&at("link")), Some(real.as_ref()), "a --flag=value's value");
        assert_eq!(f.file(&at("link")), None, "a directory is no script");
        assert_eq!(f.real(&at("missing")), None);
        assert_eq!(f.package(&script), None, "no metadata: the script alone is its code");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_scripts_package_is_the_directory_with_its_metadata_never_a_home() {
        let d = std::env::temp_dir().join(format!("mcpwatch-pkg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("proj/src/pkg")).unwrap();
        std::fs::create_dir_all(d.join("loose")).unwrap();
        std::fs::write(d.join("proj/pyproject.toml"), "").unwrap();
        std::fs::write(d.join("proj/src/pkg/server.py"), "").unwrap();
        std::fs::write(d.join("loose/server.py"), "").unwrap();
        // Metadata in the home itself does not make the home a package.
        std::fs::write(d.join("package.json"), "{}").unwrap();
        let d = std::fs::canonicalize(&d).unwrap();
        let home = d.to_string_lossy().into_owned();
        let facts = |script: &str| path_facts(&argv(&["python3", script]), Some(&home), &home);
        let in_proj = format!("{home}/proj/src/pkg/server.py");
        assert_eq!(
            facts("proj/src/pkg/server.py").package(&in_proj),
            Some(format!("{home}/proj").as_str())
        );
        let loose = format!("{home}/loose/server.py");
        assert_eq!(facts("loose/server.py").package(&loose), None, "stops at the home");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
