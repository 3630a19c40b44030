//! `mcpwatch test-alert`: the running agent emits a test alert through every
//! output; its id goes to stdout.

use std::{path::PathBuf, time::Duration};

use mcpwatch::daemon::control::{self, DEFAULT_SOCKET, Request, SOCKET_ENV};

#[derive(clap::Args)]
pub struct TestAlertArgs {
    /// The running agent's control socket.
    #[arg(long, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

pub fn run(args: TestAlertArgs) -> anyhow::Result<()> {
    let reply = control::call(&args.socket, &Request::TestAlert, Duration::from_secs(5))?;
    println!("{}", reply.alert_id.unwrap_or_default());
    Ok(())
}
