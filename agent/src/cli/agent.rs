//! `mcpwatch agent`: the daemon (root).

use std::{net::SocketAddr, path::PathBuf};

use mcpwatch::{
    config::{Config, DEFAULT_CONFIG, EventsLevel},
    daemon::control::{DEFAULT_SOCKET, SOCKET_ENV},
    daemon::run::{self, AgentOptions},
    kernel::loader::LoadOptions,
    mcp::McpOptions,
    pipeline::discovery::{Rules, WatchRule},
    policy::reload::{DEFAULT_MANIFEST_DIR, Sources},
};

#[derive(clap::Args)]
pub struct AgentArgs {
    /// Write events to this file (appended) instead of stdout.
    #[arg(long, value_name = "PATH")]
    events_out: Option<PathBuf>,
    /// Watch processes whose exe or argv matches PATTERN (a regex) as server NAME.
    /// Applies to every exec and, at start-up, to every running process.
    #[arg(long = "watch", value_name = "NAME=PATTERN")]
    watch: Vec<WatchRule>,
    /// Control socket: wrappers register on it, `status`, `test-alert` and `approve` talk to it.
    #[arg(long, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The bpffs directory the kernel objects (maps, links) are pinned in, so that
    /// they outlive a killed agent and the next one takes them over
    /// (overrides `kernel.pin_dir`; default /sys/fs/bpf/mcpwatch).
    #[arg(long, value_name = "DIR")]
    pin: Option<PathBuf>,
    /// At SIGINT/SIGTERM, leave the kernel objects pinned and attached for the next
    /// agent (an upgrade) instead of detaching (overrides `kernel.keep_sensors_on_exit`).
    #[arg(long)]
    keep_sensors_on_exit: bool,
    /// Capacity of the watched-process map (default: the kernel's pid_max, at least 32768).
    #[arg(long, value_name = "N")]
    watched_max: Option<u32>,
    /// Size of the kernel event ring buffer (bytes; a power of two, at least 4096; default 8 MiB).
    #[arg(long, value_name = "BYTES", value_parser = parse_ring_bytes)]
    ring_bytes: Option<u32>,
    /// Where the agent keeps state: tool pins go under DIR/pins/ (overrides `state_dir`;
    /// default /var/lib/mcpwatch).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Which event lines are written: `alerts` (and the servers' starts and exits), `summary`
    /// (plus one line per tool call and per server exit saying what it touched) or
    /// `all` (overrides `events.level`; default all).
    #[arg(long, value_name = "LEVEL", value_enum)]
    events_level: Option<EventsLevel>,
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
    /// Serve /metrics, /healthz and /readyz here (overrides `metrics.address`; default 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR", conflicts_with = "no_metrics")]
    metrics_address: Option<SocketAddr>,
    /// No metrics endpoint (overrides `metrics.enabled`).
    #[arg(long)]
    no_metrics: bool,
    /// Directory of the sinks' spools (overrides `spool_dir`; default STATE_DIR/spool).
    #[arg(long, value_name = "DIR")]
    spool_dir: Option<PathBuf>,
}

fn parse_ring_bytes(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two of at least 4096"));
    }
    Ok(n)
}

/// The configuration file with the command line's overrides applied.
fn config(args: &mut AgentArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(p) => Config::load(p, true)?,
        None => Config::load(std::path::Path::new(DEFAULT_CONFIG), false)?,
    };
    if let Some(a) = args.metrics_address {
        config.metrics.address = a;
        config.metrics.enabled = true;
    }
    if args.no_metrics {
        config.metrics.enabled = false;
    }
    if args.spool_dir.is_some() {
        config.spool_dir = args.spool_dir.take();
    }
    if let Some(l) = args.events_level {
        config.events.level = l;
    }
    if let Some(d) = args.state_dir.take() {
        config.state_dir = d;
    }
    if !args.manifests.is_empty() {
        config.policy.manifest_dirs = std::mem::take(&mut args.manifests);
    }
    Ok(config)
}

pub fn run(mut args: AgentArgs) -> anyhow::Result<()> {
    let config = config(&mut args)?;
    let opts = AgentOptions {
        events_out: args.events_out,
        rules: Rules(args.watch),
        socket: args.socket,
        load: LoadOptions {
            pin_dir: args.pin.or_else(|| config.kernel.pin_dir.clone()),
            expected_marker: None,
            watched_max: args.watched_max,
            ring_bytes: args.ring_bytes,
        },
        keep_sensors_on_exit: args.keep_sensors_on_exit || config.kernel.keep_sensors_on_exit,
        mcp: McpOptions {
            state_dir: config.state_dir.clone(),
            // The summary of a tool call rides on its `tool_call` line.
            audit_tool_calls: args.audit_tool_calls || config.events.level == EventsLevel::Summary,
            // The agent hands the pins manifests ship to the MCP layer at
            // start-up, at every reload and as servers bind to manifests.
        },
        policy: Sources {
            manifest_dirs: if config.policy.manifest_dirs.is_empty() {
                vec![PathBuf::from(DEFAULT_MANIFEST_DIR)]
            } else {
                config.policy.manifest_dirs.clone()
            },
            host_configs: args.host_configs,
            user_host_configs: !args.no_user_host_configs,
        },
        config,
        config_path: Some(args.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run::run(opts))
}
