//! `mcpwatch exec`: the wrapper an MCP host starts instead of the server.

use std::path::PathBuf;

use mcpwatch::{
    config::DEFAULT_CONFIG,
    daemon::{
        control::{DEFAULT_SOCKET, SOCKET_ENV},
        wrapper,
    },
};

/// Environment variable naming the agent's configuration file for the wrapper.
pub const CONFIG_ENV: &str = "MCPWATCH_CONFIG";

#[derive(clap::Args)]
pub struct ExecArgs {
    /// Server name the process and its descendants are attributed to.
    #[arg(long, value_name = "NAME")]
    server: String,
    /// Refuse to start CMD when no agent is running (default: start it unwatched, with a warning;
    /// `[wrapper] fail_closed = true` in the configuration file makes refusing the default).
    #[arg(long)]
    require_agent: bool,
    /// Relay the server through the gate: only approved tools are listed and callable
    /// (a manifest's `gate` section does the same).
    #[arg(long)]
    gate: bool,
    /// The running agent's control socket.
    #[arg(long, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The agent's configuration file, for its `[wrapper]` section.
    #[arg(long, value_name = "PATH", env = CONFIG_ENV)]
    config: Option<PathBuf>,
    /// The server's command and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    cmd: Vec<String>,
}

/// Returns the exit code: the wrapper's own when it cannot exec CMD (it
/// never returns once CMD runs).
pub fn run(args: ExecArgs) -> i32 {
    let default = PathBuf::from(DEFAULT_CONFIG);
    wrapper::run(wrapper::Options {
        socket: &args.socket,
        server: &args.server,
        require_agent: args.require_agent,
        config: args.config.as_ref().unwrap_or(&default),
        config_explicit: args.config.is_some(),
        cmd: &args.cmd,
        gate: args.gate,
    })
}
