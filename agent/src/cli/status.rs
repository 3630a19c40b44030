//! `mcpwatch status`: what the running agent watches, from its control socket.

use std::{path::PathBuf, time::Duration};

use mcpwatch::daemon::control::{self, DEFAULT_SOCKET, Request, SOCKET_ENV};

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The running agent's control socket.
    #[arg(long, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let reply = control::call(&args.socket, &Request::Status, Duration::from_secs(5))?;
    println!("{}", serde_json::to_string_pretty(&reply.status)?);
    Ok(())
}
