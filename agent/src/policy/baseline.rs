//! Runtime baselines: what a server needs just to start, so a manifest states
//! only what the server itself needs. A server's runtimes are learnt from the
//! programs its processes run (node, npx/npm, python, uv/uvx).

use std::{net::IpAddr, sync::OnceLock};

use super::{
    glob::{PathGlob, name_matches},
    manifest::{ExePattern, basename},
    net::HostPattern,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Runtime {
    Node,
    /// npx / npm exec: fetches and runs a package's bin through `sh -c`.
    Npx,
    Python,
    /// uv / uvx: fetches into its cache and runs in a temporary venv.
    Uv,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Node => "node",
            Runtime::Npx => "npx",
            Runtime::Python => "python",
            Runtime::Uv => "uv",
        }
    }

    /// The runtimes a process's exe and argv show (npx implies node, uv python).
    pub fn detect(exe: &str, argv: &[String]) -> Vec<Runtime> {
        let name = basename(exe);
        let arg0 = argv.first().map(|a| basename(a)).unwrap_or("");
        let mut out = Vec::new();
        if is_npm_process(exe, argv) {
            out.extend([Runtime::Npx, Runtime::Node]);
        } else if name_matches("{node,nodejs}", name) {
            out.push(Runtime::Node);
        }
        if name_matches("{uv,uvx}", name) || name_matches("{uv,uvx}", arg0) {
            out.extend([Runtime::Uv, Runtime::Python]);
        } else if name_matches("python{,2,3,3.*}", name) || name_matches("python{,2,3,3.*}", arg0) {
            out.push(Runtime::Python);
        }
        out
    }
}

/// `#!/usr/bin/env node` scripts run env, which runs the program named in its
/// arguments: the program that matters is that one. Returns it (as given)
/// and its argv.
pub fn unwrap_env<'a>(program: &'a str, argv: &'a [String]) -> (&'a str, &'a [String]) {
    if basename(program) != "env" {
        return (program, argv);
    }
    match argv
        .iter()
        .skip(1)
        .position(|a| !a.starts_with('-') && !a.contains('='))
    {
        Some(i) => (argv[i + 1].as_str(), &argv[i + 1..]),
        None => (program, argv),
    }
}

/// npm or npx itself (a node process running npm-cli.js / npx-cli.js).
pub fn is_npm_process(exe: &str, argv: &[String]) -> bool {
    let name = basename(exe);
    if name_matches("{npm,npx}", name) {
        return true;
    }
    argv.iter().take(2).any(|a| {
        let b = basename(a);
        name_matches("{npm,npx}", b) || name_matches("{npm,npx}-cli.js", b)
    })
}

/// What every process needs: the dynamic loader and libraries, locale, time
/// zones, certificates, name resolution, its own /proc entries, /dev/null...
const COMMON_READ: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.preload",
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/libexec",
    "/usr/local/lib/*.so*",
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/usr/share/locale",
    "/usr/lib/locale",
    "/etc/locale.alias",
    "/etc/locale.conf",
    "/etc/default/locale",
    "/usr/share/i18n",
    "/etc/ssl",
    "/etc/pki",
    "/etc/ca-certificates",
    "/usr/share/ca-certificates",
    "/usr/local/share/ca-certificates",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/passwd",
    "/etc/group",
    "/etc/os-release",
    "/usr/lib/os-release",
    "/etc/mime.types",
    "/etc/inputrc",
    "/usr/share/terminfo",
    "/lib/terminfo",
    "/etc/terminfo",
    "/proc/self",
    "/proc/thread-self",
    // Harmless system information ordinary tools read (`uptime`, `free`,
    // psutil, os.cpu_count...); never another process's /proc/PID.
    "/proc/meminfo",
    "/proc/cpuinfo",
    "/proc/stat",
    "/proc/version",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/vmstat",
    "/proc/swaps",
    "/proc/pressure",
    "/proc/sys/kernel/hostname",
    "/proc/sys/kernel/domainname",
    "/proc/sys/kernel/pid_max",
    "/proc/sys/kernel/threads-max",
    "/proc/sys/fs/file-max",
    "/proc/sys/fs/nr_open",
    "/proc/filesystems",
    "/proc/sys/kernel/osrelease",
    "/proc/sys/kernel/ngroups_max",
    "/proc/sys/kernel/cap_last_cap",
    "/proc/sys/vm/overcommit_memory",
    "/proc/sys/kernel/random/uuid",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
    "/sys/kernel/mm/transparent_hugepage",
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
    "/dev/tty",
    "/dev/pts",
    "/dev/shm",
    "/usr/bin",
    "/bin",
    "/usr/local/bin",
    "/usr/sbin",
    "/sbin",
];

/// Writes every process may make.
const COMMON_WRITE: &[&str] = &["/dev/null", "/dev/tty", "/dev/pts", "/dev/shm", "/proc/self/fd"];

const NODE_READ: &[&str] = &[
    "**/node_modules",
    "**/node_modules/**",
    "**/package.json",
    "/usr/share/nodejs",
    "/usr/lib/node_modules",
    "/usr/local/lib/node_modules",
    "/usr/include/node",
    "/usr/share/node",
    "~/.nvm",
    "~/.node_modules",
    "~/.node_libraries",
    "/sys/fs/cgroup",
    "/proc/sys/kernel/perf_event_paranoid",
];

/// npm reads the user's git configuration (git dependencies).
const NPX_READ: &[&str] = &[
    "~/.npm",
    "~/.config/npm",
    "/etc/npmrc",
    "/usr/etc/npmrc",
    "/usr/local/etc/npmrc",
    "~/.gitconfig",
];
const NPX_WRITE: &[&str] = &["~/.npm", "/tmp/npm-*", "/tmp/.npm-*"];

const PYTHON_READ: &[&str] = &[
    "/usr/lib/python3*",
    "/usr/local/lib/python3*",
    "/usr/share/python3*",
    "**/site-packages/**",
    "**/dist-packages/**",
    "**/lib/python3*/**",
    "**/lib64/python3*/**",
    "**/pyvenv.cfg",
    "**/pybuilddir.txt",
    "**/python3*.zip",
    "~/.pyenv",
    "~/.local/lib/python3*",
    "/etc/python3*",
    "**/__pycache__/**",
];
/// `tempfile.gettempdir()` probes each candidate directory by writing (and
/// removing) a file with a random 8-character name.
const PYTHON_WRITE: &[&str] = &["**/__pycache__/**", "/tmp/????????", "/var/tmp/????????"];

const UV_READ: &[&str] = &[
    "~/.cache/uv",
    "~/.local/share/uv",
    "~/.config/uv",
    "/etc/uv",
    "~/.local/bin",
    "**/uv.toml",
    "**/pyproject.toml",
];
const UV_WRITE: &[&str] = &["~/.cache/uv", "~/.local/share/uv", "/tmp/.tmp*"];

/// Hosts a runtime fetches packages from.
const NPX_HOSTS: &[&str] = &["registry.npmjs.org:443"];
const UV_HOSTS: &[&str] = &["pypi.org:443", "files.pythonhosted.org:443"];

/// Unix sockets name resolution talks to.
const COMMON_UNIX: &[&str] = &[
    "/run/systemd/resolve/io.systemd.Resolve",
    "/run/nscd/socket",
    "/var/run/nscd/socket",
    "/run/systemd/userdb/**",
];

/// Paths in a baseline, `~` expanded for one home.
#[derive(Debug, Clone, Default)]
pub struct BaselinePaths {
    pub read: Vec<PathGlob>,
    pub write: Vec<PathGlob>,
}

fn globs(list: &[&str], home: &str) -> Vec<PathGlob> {
    list.iter()
        .filter_map(|p| {
            let p = match p.strip_prefix("~") {
                Some(rest) => format!("{}{rest}", home.trim_end_matches('/')),
                None => (*p).to_owned(),
            };
            PathGlob::new(&p).ok()
        })
        .collect()
}

impl BaselinePaths {
    pub fn build(runtimes: &[Runtime], home: &str) -> Self {
        let mut read = globs(COMMON_READ, home);
        let mut write = globs(COMMON_WRITE, home);
        for r in runtimes {
            let (rd, wr): (&[&str], &[&str]) = match r {
                Runtime::Node => (NODE_READ, &[]),
                Runtime::Npx => (NPX_READ, NPX_WRITE),
                Runtime::Python => (PYTHON_READ, PYTHON_WRITE),
                Runtime::Uv => (UV_READ, UV_WRITE),
            };
            read.extend(globs(rd, home));
            write.extend(globs(wr, home));
        }
        Self { read, write }
    }
}

/// Credential files a runtime's own tool reads: npm its `.npmrc`, uv/pip
/// `pip.conf`... Declared only for that tool's process.
pub fn runtime_reads_credential(rule: &str, exe: &str, argv: &[String]) -> bool {
    match rule {
        "cred.npmrc" => is_npm_process(exe, argv),
        "cred.netrc" => Runtime::detect(exe, argv).contains(&Runtime::Uv),
        _ => false,
    }
}

/// Programs the runtimes a server was launched with run to start it (the
/// launch itself is always allowed): npx runs node, uvx runs python... A Node
/// server that starts python is not covered.
pub fn exec_allowed_after_launch(runtimes: &[Runtime], program: &str) -> bool {
    let name = basename(program);
    runtimes.iter().any(|r| match r {
        Runtime::Node => name_matches("{node,nodejs}", name),
        Runtime::Npx => name_matches("{node,nodejs,npm,npx}", name),
        Runtime::Python => name_matches("python{,3,3.*}", name),
        Runtime::Uv => name_matches("{uv,uvx,python,python3,python3.*}", name),
    })
}

/// npx runs a package's bin through `sh -c BIN ARGS`: a shell whose parent is
/// npm/npx and whose command is one simple command (no pipe, list,
/// redirection or substitution) is the runtime's, not the server's.
pub fn npx_shell(argv: &[String], parent_exe: &str, parent_argv: &[String]) -> bool {
    if !is_npm_process(parent_exe, parent_argv) {
        return false;
    }
    matches!(argv, [_, c, cmd, ..] if c == "-c" && !cmd.trim().is_empty() && !cmd.contains(['|', ';', '&', '>', '<', '`', '$', '\n', '(']))
}

/// Network destinations the runtimes need: DNS to the configured resolvers
/// and loopback, package registries.
pub fn outbound_allowed(runtimes: &[Runtime], addr: Option<&IpAddr>, hostname: Option<&str>, port: u16) -> bool {
    if port == 53 && addr.is_some_and(|a| resolvers().contains(a) || super::net::is_loopback(a)) {
        return true;
    }
    let lists: Vec<&[&str]> = runtimes
        .iter()
        .map(|r| match r {
            Runtime::Npx => NPX_HOSTS,
            Runtime::Uv => UV_HOSTS,
            _ => &[],
        })
        .collect();
    lists.iter().flat_map(|l| l.iter()).any(|h| {
        HostPattern::parse(h).is_ok_and(|p| p.matches_host(addr, hostname) && p.port.is_none_or(|pp| pp == port))
    })
}

pub fn unix_allowed(path: &str) -> bool {
    COMMON_UNIX
        .iter()
        .any(|p| PathGlob::new(p).is_ok_and(|g| g.matches(path)))
}

/// Name servers from /etc/resolv.conf (read once).
fn resolvers() -> &'static Vec<IpAddr> {
    static R: OnceLock<Vec<IpAddr>> = OnceLock::new();
    R.get_or_init(|| {
        std::fs::read_to_string("/etc/resolv.conf")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("nameserver"))
            .filter_map(|a| a.trim().parse().ok())
            .collect()
    })
}

/// Exec patterns of a manifest plus the baseline's, for the `declared` field.
pub fn describe_exec(manifest: &[ExePattern], runtimes: &[Runtime]) -> Vec<String> {
    let mut out: Vec<String> = manifest
        .iter()
        .map(|p| match p {
            ExePattern::Path(g) => g.text.clone(),
            ExePattern::Name(n) => n.clone(),
        })
        .collect();
    out.extend(runtimes.iter().map(|r| format!("(baseline: {})", r.name())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_argv as argv;

    #[test]
    fn env_shebangs_are_unwrapped() {
        let a = argv(&["/usr/bin/env", "-S", "NODE_OPTIONS=x", "node", "/usr/bin/npx", "-y"]);
        let (p, rest) = unwrap_env("/usr/bin/env", &a);
        assert_eq!(p, "node");
        assert_eq!(rest[1], "/usr/bin/npx");
        assert_eq!(Runtime::detect(p, rest), [Runtime::Npx, Runtime::Node]);
        let a = argv(&["sh", "-c", "x"]);
        assert_eq!(unwrap_env("/usr/bin/sh", &a).0, "/usr/bin/sh");
    }

    #[test]
    fn runtimes_are_detected() {
        assert_eq!(
            Runtime::detect("/usr/bin/node", &argv(&["node", "/usr/bin/npx", "-y", "x"])),
            [Runtime::Npx, Runtime::Node]
        );
        assert_eq!(
            Runtime::detect("/usr/bin/node", &argv(&["node", "/x/dist/index.js"])),
            [Runtime::Node]
        );
        assert_eq!(
            Runtime::detect("/usr/bin/python3.11", &argv(&["/v/bin/python", "-m", "x"])),
            [Runtime::Python]
        );
        assert_eq!(
            Runtime::detect("/root/.local/bin/uvx", &argv(&["uvx", "mcp-server-time"])),
            [Runtime::Uv, Runtime::Python]
        );
        assert!(Runtime::detect("/usr/bin/git", &argv(&["git", "status"])).is_empty());
    }

    #[test]
    fn node_baseline_covers_the_package_tree_not_the_home() {
        let b = BaselinePaths::build(&[Runtime::Node], "/home/u");
        let r = |p: &str| b.read.iter().any(|g| g.matches(p));
        assert!(r("/work/t/node/node_modules/@modelcontextprotocol/sdk/dist/index.js"));
        assert!(r("/work/t/node/package.json"));
        // npx in a project lists its node_modules (the Quick start's test).
        assert!(r("/work/t/node/node_modules"));
        assert!(r("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(r("/proc/self/maps"));
        assert!(r("/dev/null"));
        assert!(r("/etc/ssl/certs/ca-certificates.crt"));
        assert!(!r("/home/u/notes.txt"));
        assert!(!r("/etc/shadow"));
        assert!(!b.write.iter().any(|g| g.matches("/work/t/node/node_modules/x.js")));
    }

    #[test]
    fn python_baseline_covers_venvs_and_bytecode() {
        let b = BaselinePaths::build(&[Runtime::Python], "/root");
        assert!(
            b.read
                .iter()
                .any(|g| g.matches("/t/venv/lib/python3.11/site-packages/mcp/__init__.py"))
        );
        assert!(b.read.iter().any(|g| g.matches("/t/venv/pyvenv.cfg")));
        assert!(b.write.iter().any(|g| g.matches("/t/x/__pycache__/a.cpython-311.pyc")));
        assert!(!b.read.iter().any(|g| g.matches("/root/secret.txt")));
    }

    #[test]
    fn npx_shell_is_the_runtimes_only_from_npm() {
        let npm = argv(&["node", "/usr/lib/node_modules/npm/bin/npx-cli.js", "-y", "x"]);
        assert!(npx_shell(
            &argv(&["sh", "-c", "mcp-server-memory"]),
            "/usr/bin/node",
            &npm
        ));
        assert!(!npx_shell(&argv(&["sh", "-c", "curl x | sh"]), "/usr/bin/node", &npm));
        assert!(!npx_shell(
            &argv(&["sh", "-c", "mcp-server-memory"]),
            "/usr/bin/node",
            &argv(&["node", "/x/index.js"])
        ));
    }

    #[test]
    fn registry_hosts_only_for_their_runtime() {
        assert!(outbound_allowed(&[Runtime::Npx], None, Some("registry.npmjs.org"), 443));
        assert!(!outbound_allowed(
            &[Runtime::Node],
            None,
            Some("registry.npmjs.org"),
            443
        ));
        assert!(outbound_allowed(&[], Some(&"127.0.0.53".parse().unwrap()), None, 53));
        assert!(!outbound_allowed(&[], Some(&"8.8.4.4".parse().unwrap()), None, 443));
    }
}
