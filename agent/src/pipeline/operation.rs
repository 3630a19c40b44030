//! Which exec starts an operation whose alerts are folded (`alerts::fold`):
//! a package manager run by a server's process (not the server's own
//! launch: `npx -y server` is the server). The run is the process and every
//! process below it, from its exec to its exit.

use crate::{alerts::fold::Operation, kernel::decode::Header, pipeline::procs::ProcTable, policy::glob::name_matches};

/// Package managers and build tools that install or fetch packages, by the
/// name of their executable or script.
const PROGRAMS: &str = "{npm,npx,pnpm,pnpx,yarn,bun,pip,pip3,pip3.*,pipx,uv,uvx,poetry,pdm,conda,mamba,\
                        cargo,go,gem,bundle,bundler,composer,mvn,gradle}";

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// The package manager `exe` with `argv` runs, by name: the executable
/// itself (`/usr/bin/pip3`), an interpreter's script (`node
/// /usr/lib/node_modules/npm/bin/npm-cli.js`, `python /venv/bin/pip`) or
/// module (`python -m pip`).
pub fn package_manager(exe: &str, argv: &[String]) -> Option<String> {
    let known = |name: &str| {
        let name = name
            .strip_suffix("-cli.js")
            .or_else(|| name.strip_suffix(".js"))
            .or_else(|| name.strip_suffix(".cjs"))
            .unwrap_or(name);
        name_matches(PROGRAMS, name).then(|| name.to_owned())
    };
    if let Some(n) = known(basename(exe)) {
        return Some(n);
    }
    // `#!/usr/bin/env node` (npm's own shebang): what env runs, with its arguments.
    if basename(exe) == "env" {
        let rest: Vec<String> = argv
            .iter()
            .skip(1)
            .skip_while(|a| a.starts_with('-'))
            .cloned()
            .collect();
        return rest.first().and_then(|p| package_manager(p, &rest));
    }
    let interpreted = name_matches("{node,nodejs,python*,ruby*,php*,java}", basename(exe));
    if !interpreted {
        return None;
    }
    match argv.get(1).map(String::as_str) {
        Some("-m") => argv.get(2).and_then(|m| known(m)),
        Some(script) => known(basename(script)),
        None => None,
    }
}

/// Whether `exe` is mcpwatch itself (`mcpwatch exec`, the wrapper).
fn is_wrapper(exe: &str) -> bool {
    static OWN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let own = OWN.get_or_init(|| std::env::current_exe().ok().map(|p| p.to_string_lossy().into_owned()));
    basename(exe) == "mcpwatch" || own.as_deref() == Some(exe)
}

/// The run the process of the exec `h` (now running `exe` with `argv`)
/// belongs to: the one it was in, or its own when a process of its server
/// (not the server's launch) runs a package manager.
pub fn of_exec(procs: &ProcTable, h: &Header, exe: &str, argv: &[String]) -> Option<Operation> {
    if let Some(op) = procs.get(h.pid).and_then(|p| p.operation.clone()) {
        return Some(op);
    }
    // The gate's wrapper starts the server as its child: that is the launch.
    let parent_in_server = procs
        .get(h.ppid)
        .is_some_and(|p| p.server == Some(h.server) && !is_wrapper(&p.exe));
    parent_in_server
        .then(|| package_manager(exe, argv))
        .flatten()
        .map(|program| Operation { program, pid: h.pid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_argv;

    #[test]
    fn package_managers_are_told_by_their_executable_script_or_module() {
        let pm = |exe: &str, argv: &[&str]| package_manager(exe, &test_argv(argv));
        assert_eq!(
            pm(
                "/usr/bin/node",
                &["npm", "/usr/lib/node_modules/npm/bin/npm-cli.js", "install"]
            )
            .as_deref(),
            Some("npm")
        );
        assert_eq!(
            pm("/usr/bin/node", &["node", "/usr/bin/npx", "-y", "x"]).as_deref(),
            Some("npx")
        );
        assert_eq!(
            pm("/v/bin/python3.12", &["python", "/v/bin/pip", "install"]).as_deref(),
            Some("pip")
        );
        assert_eq!(
            pm("/usr/bin/python3", &["python3", "-m", "pip", "install"]).as_deref(),
            Some("pip")
        );
        assert_eq!(
            pm("/root/.cargo/bin/cargo", &["cargo", "build"]).as_deref(),
            Some("cargo")
        );
        assert_eq!(pm("/usr/bin/uv", &["uv", "pip", "install"]).as_deref(), Some("uv"));
        assert_eq!(
            pm("/usr/bin/env", &["/usr/bin/env", "node", "/usr/bin/npm", "install"]).as_deref(),
            Some("npm"),
            "npm's shebang"
        );
        assert_eq!(
            pm("/usr/bin/env", &["env", "-S", "pip", "install"]).as_deref(),
            Some("pip")
        );
        assert_eq!(pm("/usr/bin/env", &["env", "node", "/srv/index.js"]), None);
        assert_eq!(pm("/usr/bin/node", &["node", "/srv/index.js"]), None);
        assert_eq!(pm("/usr/bin/python3", &["python3", "-m", "mcp_server_git"]), None);
        assert_eq!(
            pm("/bin/sh", &["sh", "/usr/bin/npm"]),
            None,
            "a shell is not an interpreter of npm"
        );
        assert_eq!(pm("/usr/bin/git", &["git", "pip"]), None);
    }

    #[test]
    fn the_wrapper_is_told_by_its_name_or_as_this_binary() {
        assert!(is_wrapper("/usr/local/bin/mcpwatch"));
        let me = std::env::current_exe().unwrap();
        assert!(is_wrapper(&me.to_string_lossy()));
        assert!(!is_wrapper("/bin/sh"));
    }
}
