//! What a process *is*, for discovery: the program it runs and, when that
//! program is an interpreter or a package launcher, the script, module or
//! package it was started to run (`node …/server-filesystem/dist/index.js`,
//! `python -m mcp_server_git`, `uvx mcp-server-git`, `npx -y PKG`).
//!
//! A wrapper (`timeout 30 npx …`, `strace -f npx …`, `sh -c "…"`, an MCP
//! client or proxy whose arguments name the server) merely carries a
//! server's command line among its arguments: its launch line ends before
//! them, so a discovery pattern never takes it for the server. The server
//! it starts execs its own line and is found then.
//!
//! Hand-written: no crate parses "which argv element is the program" across
//! interpreters and launchers; the tables below are their documented
//! command-line syntaxes, kept to the options that take a separate value.

/// Programs followed through, at most (env → interpreter → launcher → script).
const CHAIN_MAX: usize = 8;

/// The launch of one process: which argv elements are the programs run and
/// where the launch line ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// argv positions of the programs in the chain (`env`, an interpreter,
    /// a launcher, the script).
    pub chain: Vec<usize>,
    /// `argv[..end]` is the launch line: up to and including the script,
    /// module or package (the server's own arguments are not part of it).
    pub end: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Env,
    Python,
    Node,
    Bun,
    Deno,
    /// ruby, perl, php: `-e CODE` or a script.
    Scripting,
    Shell,
    /// npx, bunx, pnpx: the package is the first operand.
    Npx,
    Uvx,
    /// Launchers with a subcommand (`npm exec`, `uv run`, `pipx run`...).
    Npm,
    Pnpm,
    Yarn,
    Uv,
    Pipx,
    Other,
}

fn kind(name: &str) -> Kind {
    let stem = name.strip_suffix(".js").unwrap_or(name);
    match stem {
        "env" => Kind::Env,
        "node" | "nodejs" => Kind::Node,
        "bun" => Kind::Bun,
        "deno" => Kind::Deno,
        "ruby" | "perl" | "php" => Kind::Scripting,
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "mksh" | "ash" => Kind::Shell,
        "npx" | "npx-cli" | "bunx" | "pnpx" => Kind::Npx,
        "uvx" => Kind::Uvx,
        "npm" | "npm-cli" => Kind::Npm,
        "pnpm" => Kind::Pnpm,
        "yarn" => Kind::Yarn,
        "uv" => Kind::Uv,
        "pipx" => Kind::Pipx,
        n if is_python(n) => Kind::Python,
        _ => Kind::Other,
    }
}

/// python, python3, python3.11, pypy3...
fn is_python(n: &str) -> bool {
    ["python", "pypy"].iter().any(|p| {
        n.strip_prefix(p)
            .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
    })
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Where a program's operand is, past its options.
enum Operand {
    /// A script (or a program run by a launcher's `run`): followed when it
    /// is itself an interpreter or launcher, else the end of the line.
    Program(usize),
    /// A module or package: the end of the line.
    Package(usize),
    /// Code given inline (`-c`, `-e`), stdin, or nothing: no script, so
    /// the line ends at the program (a shell running `-c "…"` is a wrapper).
    None,
}

/// The first operand at or after `i`, skipping options (those in
/// `with_value` take the next element). `--` ends the options.
fn operand(argv: &[String], mut i: usize, with_value: &[&str]) -> Option<usize> {
    while let Some(a) = argv.get(i) {
        if a == "--" {
            return (i + 1 < argv.len()).then_some(i + 1);
        }
        if !a.starts_with('-') || a == "-" {
            return (a != "-").then_some(i);
        }
        i += if with_value.contains(&a.as_str()) { 2 } else { 1 };
    }
    None
}

/// Whether an option is one of `inline` or a cluster of short flags holding one
/// of `letters` (`-ec`).
fn is_inline(a: &str, inline: &[&str], letters: &str) -> bool {
    inline.contains(&a) || (a.starts_with('-') && !a.starts_with("--") && a[1..].chars().any(|c| letters.contains(c)))
}

fn python(argv: &[String], i: usize) -> Operand {
    let mut j = i;
    while let Some(a) = argv.get(j) {
        if a == "--" {
            return argv.get(j + 1).map_or(Operand::None, |_| Operand::Program(j + 1));
        }
        if !a.starts_with('-') {
            return Operand::Program(j);
        }
        if a == "-" {
            return Operand::None;
        }
        if let Some(long) = a.strip_prefix("--") {
            j += if long == "check-hash-based-pycs" { 2 } else { 1 };
            continue;
        }
        // A cluster of short flags: `-c CODE`, `-m MOD` (`-um MOD`, `-mMOD`),
        // `-W ARG`/`-X ARG` end it.
        let mut step = 1;
        for (n, c) in a.char_indices().skip(1) {
            match c {
                'c' => return Operand::None,
                'm' if a.len() > n + 1 => return Operand::Package(j),
                'm' => return argv.get(j + 1).map_or(Operand::None, |_| Operand::Package(j + 1)),
                'W' | 'X' => {
                    if a.len() == n + 1 {
                        step = 2;
                    }
                    break;
                }
                _ => {}
            }
        }
        j += step;
    }
    Operand::None
}

fn node(argv: &[String], i: usize) -> Operand {
    const VALUE: &[&str] = &[
        "-r",
        "--require",
        "--import",
        "--loader",
        "--experimental-loader",
        "-C",
        "--conditions",
        "--env-file",
        "--input-type",
        "--title",
        "--inspect-port",
    ];
    if argv[i..]
        .iter()
        .take_while(|a| a.starts_with('-') && *a != "--")
        .any(|a| is_inline(a, &["-e", "--eval", "-p", "--print"], "ep"))
    {
        return Operand::None;
    }
    operand(argv, i, VALUE).map_or(Operand::None, Operand::Program)
}

fn shell(argv: &[String], i: usize) -> Operand {
    let mut j = i;
    while let Some(a) = argv.get(j) {
        if a == "--" {
            return argv.get(j + 1).map_or(Operand::None, |_| Operand::Program(j + 1));
        }
        if !(a.starts_with('-') || a.starts_with('+')) {
            return Operand::Program(j);
        }
        if a == "-" || is_inline(a, &[], "cs") {
            return Operand::None;
        }
        j += if matches!(a.as_str(), "-o" | "+o" | "-O" | "+O" | "--rcfile" | "--init-file") {
            2
        } else {
            1
        };
    }
    Operand::None
}

/// The operand after a subcommand among `subs` (`npm exec PKG`, `uv run CMD`);
/// any other subcommand is the launcher's own business (`npm install`).
fn after_sub(argv: &[String], i: usize, subs: &[&str], value: &[&str]) -> Option<usize> {
    let s = operand(argv, i, value)?;
    subs.contains(&argv[s].as_str()).then(|| operand(argv, s + 1, value))?
}

/// The operand of one program of the chain.
fn operand_of(kind: Kind, argv: &[String], i: usize) -> Operand {
    const NPX: &[&str] = &["-p", "--package", "-w", "--workspace", "--registry", "--cache"];
    const UV: &[&str] = &[
        "--from",
        "--with",
        "--with-requirements",
        "--with-editable",
        "-p",
        "--python",
        "--index",
        "--index-url",
        "--directory",
        "--project",
        "--env-file",
        "--cache-dir",
        "--spec",
    ];
    let pkg = |o: Option<usize>| o.map_or(Operand::None, Operand::Package);
    let prog = |o: Option<usize>| o.map_or(Operand::None, Operand::Program);
    match kind {
        Kind::Env => {
            // Options, then NAME=VALUE assignments, then the program.
            let mut j = i;
            while let Some(a) = argv.get(j) {
                if a == "-S" || a.starts_with("--split-string") {
                    return Operand::None;
                }
                if a.starts_with('-') || a.contains('=') {
                    j += if matches!(a.as_str(), "-u" | "--unset" | "-C" | "--chdir") {
                        2
                    } else {
                        1
                    };
                    continue;
                }
                return Operand::Program(j);
            }
            Operand::None
        }
        Kind::Python => python(argv, i),
        Kind::Node => node(argv, i),
        Kind::Shell => shell(argv, i),
        Kind::Scripting => {
            if argv[i..]
                .iter()
                .take_while(|a| a.starts_with('-'))
                .any(|a| matches!(a.as_str(), "-e" | "-E" | "-r"))
            {
                return Operand::None;
            }
            prog(operand(argv, i, &[]))
        }
        Kind::Bun => match operand(argv, i, &[]) {
            Some(s) if argv[s] == "x" => pkg(operand(argv, s + 1, NPX)),
            Some(s) if argv[s] == "run" => prog(operand(argv, s + 1, &[])),
            Some(s) if argv[s] == "-e" || argv[s] == "--eval" => Operand::None,
            o => prog(o),
        },
        Kind::Deno => match operand(argv, i, &[]) {
            Some(s) if argv[s] == "run" => prog(operand(argv, s + 1, &["--config", "-c", "--import-map"])),
            o => prog(o),
        },
        Kind::Npx => {
            if argv[i..].iter().any(|a| a == "-c" || a == "--call") {
                return Operand::None;
            }
            pkg(operand(argv, i, NPX))
        }
        Kind::Npm => pkg(after_sub(argv, i, &["exec", "x"], NPX)),
        Kind::Pnpm => pkg(after_sub(argv, i, &["dlx", "exec"], NPX)),
        Kind::Yarn => pkg(after_sub(argv, i, &["dlx", "exec"], NPX)),
        Kind::Uvx => pkg(operand(argv, i, UV)),
        Kind::Pipx => pkg(after_sub(argv, i, &["run"], UV)),
        Kind::Uv => match operand(argv, i, UV) {
            Some(s) if argv[s] == "run" => prog(operand(argv, s + 1, UV)),
            Some(s) if argv[s] == "tool" && argv.get(s + 1).is_some_and(|a| a == "run") => {
                pkg(operand(argv, s + 2, UV))
            }
            _ => Operand::None,
        },
        Kind::Other => Operand::None,
    }
}

impl Launch {
    /// The launch of a process running `exe` with `argv` (as the kernel
    /// reports them: for a script, argv starts with its interpreter).
    pub fn of(exe: &str, argv: &[String]) -> Self {
        let mut chain = Vec::new();
        let mut i = 0;
        while chain.len() < CHAIN_MAX {
            let Some(tok) = argv.get(i) else {
                return Self { chain, end: i };
            };
            chain.push(i);
            let mut k = kind(basename(tok));
            if k == Kind::Other && i == 0 {
                // argv[0] is what the caller chose; the exe is what runs.
                k = kind(basename(exe));
            }
            match operand_of(k, argv, i + 1) {
                Operand::Program(j) if kind(basename(&argv[j])) != Kind::Other => i = j,
                Operand::Program(j) => {
                    chain.push(j);
                    return Self { chain, end: j + 1 };
                }
                Operand::Package(j) => return Self { chain, end: j + 1 },
                Operand::None => return Self { chain, end: i + 1 },
            }
        }
        Self { chain, end: i }
    }

    /// The launch line, its elements joined by spaces.
    pub fn line(&self, argv: &[String]) -> String {
        argv[..self.end.min(argv.len())].join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(exe: &str, a: &[&str]) -> String {
        let argv: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        Launch::of(exe, &argv).line(&argv)
    }

    #[test]
    fn servers_end_at_their_script_module_or_package() {
        let fs = "/t/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js";
        assert_eq!(line("/usr/bin/node", &["node", fs, "/srv"]), format!("node {fs}"));
        assert_eq!(
            line("/usr/bin/node", &["node", "--enable-source-maps", fs, "/srv"]),
            format!("node --enable-source-maps {fs}")
        );
        assert_eq!(
            line(
                "/v/bin/python3",
                &["python3", "-m", "mcp_server_git", "--repository", "/r"]
            ),
            "python3 -m mcp_server_git"
        );
        assert_eq!(
            line("/v/bin/python3", &["python3", "-um", "mcp_server_git"]),
            "python3 -um mcp_server_git"
        );
        assert_eq!(
            line("/usr/bin/uvx", &["uvx", "mcp-server-git", "--repository", "/r"]),
            "uvx mcp-server-git"
        );
        assert_eq!(
            line("/usr/bin/uvx", &["uvx", "--from", "x==1", "mcp-server-git"]),
            "uvx --from x==1 mcp-server-git"
        );
        // npx is a node script: the kernel reports node's argv, or env's on the way.
        let npx = ["-y", "@modelcontextprotocol/server-filesystem", "/srv"];
        let want = "/usr/bin/npx -y @modelcontextprotocol/server-filesystem";
        let a: Vec<&str> = ["/usr/bin/env", "node", "/usr/bin/npx"]
            .iter()
            .chain(&npx)
            .copied()
            .collect();
        assert_eq!(line("/usr/bin/env", &a), format!("/usr/bin/env node {want}"));
        let a: Vec<&str> = ["node", "/usr/bin/npx"].iter().chain(&npx).copied().collect();
        assert_eq!(line("/usr/bin/node", &a), format!("node {want}"));
        assert_eq!(
            line(
                "/usr/bin/npm",
                &["npm", "exec", "--yes", "--", "mcp-server-memory", "x"]
            ),
            "npm exec --yes -- mcp-server-memory"
        );
        assert_eq!(
            line(
                "/usr/bin/uv",
                &["uv", "run", "--with", "mcp", "python", "-m", "mcp_server_time"]
            ),
            "uv run --with mcp python -m mcp_server_time"
        );
        // A Python console script: the interpreter, then the script.
        assert_eq!(
            line(
                "/v/bin/python3",
                &["/v/bin/python3", "/v/bin/mcp-server-git", "--repository", "/r"]
            ),
            "/v/bin/python3 /v/bin/mcp-server-git"
        );
        assert_eq!(
            line("/bin/sh", &["/bin/sh", "/t/server.sh", "a"]),
            "/bin/sh /t/server.sh"
        );
        assert_eq!(line("/opt/srv/bin/server", &["server", "--port", "1"]), "server");
    }

    #[test]
    fn wrappers_end_before_the_command_line_they_carry() {
        let fs = ["npx", "-y", "@modelcontextprotocol/server-filesystem", "/srv"];
        let with = |pre: &[&'static str]| pre.iter().chain(&fs).copied().collect::<Vec<_>>();
        assert_eq!(line("/usr/bin/timeout", &with(&["timeout", "30"])), "timeout");
        assert_eq!(line("/usr/bin/strace", &with(&["strace", "-f"])), "strace");
        assert_eq!(line("/usr/bin/nice", &with(&["nice"])), "nice");
        assert_eq!(
            line(
                "/bin/sh",
                &["sh", "-c", "npx -y @modelcontextprotocol/server-filesystem /srv"]
            ),
            "sh"
        );
        assert_eq!(line("/bin/bash", &["bash", "-ec", "exec npx x"]), "bash");
        // MCP clients and proxies: their own script or package.
        assert_eq!(
            line("/v/bin/python3", &with(&["/v/bin/python3", "/t/client.py", "--"])),
            "/v/bin/python3 /t/client.py"
        );
        assert_eq!(
            line(
                "/v/bin/python3",
                &with(&["/v/bin/python3", "/v/bin/mcp-proxy", "--port", "1"])
            ),
            "/v/bin/python3 /v/bin/mcp-proxy"
        );
        assert_eq!(
            line(
                "/usr/bin/node",
                &with(&["node", "/usr/bin/npx", "@modelcontextprotocol/inspector", "--cli"])
            ),
            "node /usr/bin/npx @modelcontextprotocol/inspector"
        );
        assert_eq!(
            line("/usr/bin/node", &["node", "-e", "require('server-filesystem')"]),
            "node"
        );
        assert_eq!(
            line("/usr/bin/python3", &["python3", "-c", "import mcp_server_git"]),
            "python3"
        );
        assert_eq!(line("/usr/bin/npx", &["npx", "-c", "server-filesystem /srv"]), "npx");
        // A chain of env programs is bounded.
        let envs = vec!["env"; 20];
        assert_eq!(
            Launch::of("/usr/bin/env", &envs.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .chain
                .len(),
            CHAIN_MAX
        );
    }

    #[test]
    fn the_chain_names_each_program_run() {
        let a: Vec<String> = ["/usr/bin/env", "FOO=1", "node", "/usr/bin/npx", "-y", "pkg", "/x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            Launch::of("/usr/bin/env", &a),
            Launch {
                chain: vec![0, 2, 3],
                end: 6
            }
        );
        assert_eq!(Launch::of("/x", &[]), Launch { chain: vec![], end: 0 });
    }
}
