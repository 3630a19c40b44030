//! `mcpwatch exec`: the wrapper an MCP host starts instead of the server.

use std::path::PathBuf;

use mcpwatch::daemon::{
    control::{DEFAULT_SOCKET, SOCKET_ENV},
    wrapper,
};

#[derive(clap::Args)]
pub struct ExecArgs {
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
}

/// Returns the exit code: the wrapper's own when it cannot exec CMD (it
/// never returns once CMD runs).
pub fn run(args: ExecArgs) -> i32 {
    wrapper::run(&args.socket, &args.server, args.require_agent, &args.cmd)
}
