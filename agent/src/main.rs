//! The `mcpwatch` command.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mcpwatch::{
    config::{Config, DEFAULT_CONFIG},
    daemon::control::{self, DEFAULT_SOCKET, Request, SOCKET_ENV},
    daemon::run::{self, AgentOptions},
    daemon::wrapper,
    kernel::btf,
    kernel::loader::LoadOptions,
    mcp::{
        McpOptions,
        pins::{self, PinFile, PinStore},
    },
    pipeline::discovery::{Rules, WatchRule},
    policy::{
        manifest::Manifest,
        reload::{DEFAULT_MANIFEST_DIR, Sources},
    },
};

#[derive(Parser)]
#[command(
    name = "mcpwatch",
    version,
    about = "Watch what MCP servers do, in the kernel, against what they declared"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (root): load the kernel programs and write one JSON line per event.
    Agent {
        /// Write events to this file (appended) instead of stdout.
        #[arg(long, value_name = "PATH")]
        events_out: Option<PathBuf>,
        /// Watch processes whose exe or argv matches PATTERN (a regex) as server NAME.
        /// Applies to every exec and, at start-up, to every running process.
        #[arg(long = "watch", value_name = "NAME=PATTERN")]
        watch: Vec<WatchRule>,
        /// Control socket the wrapper registers on.
        #[arg(long, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Pin the maps (WATCHED, CONFIG, LOSS) in this bpffs directory.
        #[arg(long, value_name = "DIR")]
        pin: Option<PathBuf>,
        /// Leave the pinned maps in place at exit (default: remove them).
        #[arg(long, requires = "pin")]
        keep_pins: bool,
        /// Capacity of the watched-process map.
        #[arg(long, value_name = "N")]
        watched_max: Option<u32>,
        /// Size of the kernel event ring buffer (bytes; a power of two, at least 4096).
        #[arg(long, value_name = "BYTES", value_parser = parse_ring_bytes)]
        ring_bytes: Option<u32>,
        /// Where the agent keeps state: tool pins go under DIR/pins/ (overrides `state_dir`).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Write a `tool_call` line per MCP tool call (arguments redacted, duration, outcome, OS activity).
        #[arg(long)]
        audit_tool_calls: bool,
        /// Directory of server manifests (*.json), repeatable; reloaded on change and SIGHUP
        /// (overrides `policy.manifest_dirs`; default /etc/mcpwatch/manifests).
        #[arg(long = "manifests", value_name = "DIR")]
        manifests: Vec<PathBuf>,
        /// MCP host configuration file (claude_desktop_config.json, mcp.json...) or
        /// workspace directory (its .vscode/ and .cursor/), repeatable.
        #[arg(long = "host-config", value_name = "PATH")]
        host_configs: Vec<PathBuf>,
        /// Do not read the host configurations in users' home directories.
        #[arg(long)]
        no_user_host_configs: bool,
        /// Configuration file (TOML). The default path may be absent; a path given here must exist.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Serve /metrics, /healthz and /readyz here (overrides `metrics.address`).
        #[arg(long, value_name = "ADDR", conflicts_with = "no_metrics")]
        metrics_address: Option<SocketAddr>,
        /// No metrics endpoint (overrides `metrics.enabled`).
        #[arg(long)]
        no_metrics: bool,
        /// Directory of the sinks' spools (overrides `spool_dir`).
        #[arg(long, value_name = "DIR")]
        spool_dir: Option<PathBuf>,
    },
    /// Check manifest files (or directories of them) and print what is wrong.
    CheckManifests {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Register with the running agent as server NAME, then exec CMD.
    /// Use it as the server's command in an MCP host configuration.
    Exec {
        /// Server name the process and its descendants are attributed to.
        #[arg(long, value_name = "NAME")]
        server: String,
        /// Refuse to start CMD when no agent is running (default: start it unwatched, with a warning).
        #[arg(long)]
        require_agent: bool,
        #[arg(long, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        cmd: Vec<String>,
    },
    /// Show what the running agent watches (root).
    Status {
        #[arg(long, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Ask the running agent to emit a test alert through every output (root).
    TestAlert {
        #[arg(long, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Benchmark floor (root): attach the agent's hooks doing nothing but the
    /// watched-set lookup, print `ready`, and hold them until SIGINT/SIGTERM.
    #[command(hide = true)]
    BenchFloor,
    /// Tool pins the agent stored (state directory): what a manifest's `pins` can ship.
    Pins {
        #[command(subcommand)]
        command: PinsCommand,
    },
    /// Print the kernel structure offsets the probes would use, resolved from BTF.
    Offsets {
        /// BTF file to resolve against (default: the running kernel's).
        #[arg(long, value_name = "PATH", default_value = btf::VMLINUX_BTF)]
        btf: PathBuf,
    },
}

#[derive(Subcommand)]
enum PinsCommand {
    /// Print stored pins as manifest-ready JSON: `{"pins": {...}}` for one server,
    /// `{"SERVER": {"pins": {...}}, ...}` for all. The pinned descriptions go to
    /// stderr, for review before approving them.
    Show {
        /// Only this server's pins.
        #[arg(long, value_name = "NAME")]
        server: Option<String>,
        /// The agent's state directory (overrides the configuration's `state_dir`).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Configuration file (TOML) to take `state_dir` from.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

fn parse_ring_bytes(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two of at least 4096"));
    }
    Ok(n)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Exec {
            server,
            require_agent,
            socket,
            cmd,
        } => {
            std::process::exit(wrapper::run(&socket, &server, require_agent, &cmd));
        }
        Command::Agent {
            events_out,
            watch,
            socket,
            pin,
            keep_pins,
            watched_max,
            ring_bytes,
            state_dir,
            audit_tool_calls,
            manifests,
            host_configs,
            no_user_host_configs,
            config,
            metrics_address,
            no_metrics,
            spool_dir,
        } => {
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
            let mut config = match &config {
                Some(p) => Config::load(p, true)?,
                None => Config::load(std::path::Path::new(DEFAULT_CONFIG), false)?,
            };
            if let Some(a) = metrics_address {
                config.metrics.address = a;
                config.metrics.enabled = true;
            }
            if no_metrics {
                config.metrics.enabled = false;
            }
            if spool_dir.is_some() {
                config.spool_dir = spool_dir;
            }
            if let Some(d) = state_dir {
                config.state_dir = d;
            }
            if !manifests.is_empty() {
                config.policy.manifest_dirs = manifests;
            }
            let opts = AgentOptions {
                events_out,
                rules: Rules(watch),
                socket,
                load: LoadOptions {
                    pin_dir: pin,
                    watched_max,
                    ring_bytes,
                },
                keep_pins,
                mcp: McpOptions {
                    state_dir: config.state_dir.clone(),
                    audit_tool_calls,
                    // The agent hands the pins manifests ship to the MCP layer at
                    // start-up, at every reload and as servers bind to manifests.
                },
                policy: Sources {
                    manifest_dirs: if config.policy.manifest_dirs.is_empty() {
                        vec![PathBuf::from(DEFAULT_MANIFEST_DIR)]
                    } else {
                        config.policy.manifest_dirs.clone()
                    },
                    host_configs,
                    user_host_configs: !no_user_host_configs,
                },
                config,
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(run::run(opts))
        }
        Command::CheckManifests { paths } => std::process::exit(check_manifests(&paths)),
        Command::Status { socket } => {
            let reply = control::call(&socket, &Request::Status, std::time::Duration::from_secs(5))?;
            println!("{}", serde_json::to_string_pretty(&reply.status)?);
            Ok(())
        }
        Command::TestAlert { socket } => {
            let reply = control::call(&socket, &Request::TestAlert, std::time::Duration::from_secs(5))?;
            println!("{}", reply.alert_id.unwrap_or_default());
            Ok(())
        }
        Command::BenchFloor => {
            use nix::sys::signal::{SigSet, Signal};
            let mut set = SigSet::empty();
            set.add(Signal::SIGINT);
            set.add(Signal::SIGTERM);
            set.thread_block().context("blocking SIGINT/SIGTERM")?;
            let floor = mcpwatch::kernel::loader::load_floor().context("loading the floor programs")?;
            println!("ready");
            set.wait().context("waiting for a signal")?;
            drop(floor);
            Ok(())
        }
        Command::Pins {
            command:
                PinsCommand::Show {
                    server,
                    state_dir,
                    config,
                },
        } => {
            let state_dir = match state_dir {
                Some(d) => d,
                None => match &config {
                    Some(p) => Config::load(p, true)?.state_dir,
                    None => Config::load(std::path::Path::new(DEFAULT_CONFIG), false)?.state_dir,
                },
            };
            pins_show(&state_dir, server.as_deref())
        }
        Command::Offsets { btf: path } => {
            let kb = btf::KernelBtf::from_file(&path)?;
            let r = btf::resolve(&kb).with_context(|| format!("resolving offsets in {}", path.display()))?;
            for (feature, why) in &r.disabled {
                eprintln!("warning: {feature} would be off: {why}");
            }
            println!("{:#?}", r.offsets);
            Ok(())
        }
    }
}

/// `mcpwatch pins show`: stored pins on stdout as manifest JSON, descriptions on stderr.
fn pins_show(state_dir: &std::path::Path, server: Option<&str>) -> anyhow::Result<()> {
    let mut store = PinStore::new(state_dir);
    let files = match server {
        Some(name) => {
            let file = store.stored(name)?.with_context(|| {
                format!(
                    "no pins for server {name} in {}: the agent pins a server's tools the first time it lists them",
                    store.path(name).display()
                )
            })?;
            vec![file]
        }
        None => store.stored_all()?,
    };
    if files.is_empty() {
        eprintln!("# no pins in {}", state_dir.join("pins").display());
    }
    for f in &files {
        eprintln!(
            "# {}: {} tool(s) pinned in {}",
            f.server,
            f.tools.len(),
            store.path(&f.server).display()
        );
        for (tool, pin) in &f.tools {
            let first = pin.description.lines().next().unwrap_or("");
            eprintln!("#   {tool}: {}", pins::cap(first, 160));
        }
    }
    let fragment = |f: &PinFile| serde_json::json!({ "pins": f.expected() });
    let out = match server {
        Some(_) => fragment(&files[0]),
        None => serde_json::Value::Object(files.iter().map(|f| (f.server.clone(), fragment(f))).collect()),
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `mcpwatch check-manifests`: 0 when every manifest is valid, 1 otherwise.
fn check_manifests(paths: &[PathBuf]) -> i32 {
    let mut files = Vec::new();
    for p in paths {
        match std::fs::read_dir(p) {
            Ok(rd) => {
                let mut v: Vec<PathBuf> = rd
                    .flatten()
                    .map(|e| e.path())
                    .filter(|f| {
                        f.extension().is_some_and(|e| e == "json") && !f.to_string_lossy().ends_with(".schema.json")
                    })
                    .collect();
                v.sort();
                files.extend(v);
            }
            Err(_) => files.push(p.clone()),
        }
    }
    let mut bad = 0;
    for f in &files {
        let res = std::fs::read_to_string(f)
            .map_err(|e| format!("{}: cannot read: {e}", f.display()))
            .and_then(|t| Manifest::parse(f, &t).map_err(|e| e.to_string()));
        match res {
            Ok(m) => {
                eprintln!("{}: ok (server {})", f.display(), m.name);
                for w in &m.warnings {
                    eprintln!("{}: warning: {w}", f.display());
                }
            }
            Err(e) => {
                bad += 1;
                eprintln!("{e}");
            }
        }
    }
    i32::from(bad > 0)
}
