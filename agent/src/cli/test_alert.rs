//! `mcpwatch test-alert`: the running agent emits a test alert through every
//! output and says, per sink, whether it delivered it. The alert's id goes
//! to stdout, then one line per sink; the exit status is 1 when a sink failed.

use std::{path::PathBuf, time::Duration};

use mcpwatch::daemon::control::{self, DEFAULT_SOCKET, Request, SOCKET_ENV, TEST_ALERT_WAIT};

#[derive(clap::Args)]
pub struct TestAlertArgs {
    /// The running agent's control socket.
    #[arg(long, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the alert's id at once; do not wait for the sinks.
    #[arg(long)]
    no_wait: bool,
}

pub fn run(args: TestAlertArgs) -> anyhow::Result<i32> {
    let wait = !args.no_wait;
    // The agent answers after at most TEST_ALERT_WAIT; a little more for the trip.
    let patience = Duration::from_secs(5) + if wait { TEST_ALERT_WAIT } else { Duration::ZERO };
    let reply = control::call(&args.socket, &Request::TestAlert { wait }, patience)?;
    println!("{}", reply.alert_id.unwrap_or_default());
    let sinks = reply.sinks.unwrap_or_default();
    if wait && sinks.is_empty() {
        eprintln!("no sinks configured: the alert went to the events stream only");
    }
    let mut failed = false;
    for s in &sinks {
        match &s.error {
            None if s.delivered => println!("{}: delivered", s.sink),
            e => {
                failed = true;
                println!("{}: failed: {}", s.sink, e.as_deref().unwrap_or("unknown"));
            }
        }
    }
    Ok(i32::from(failed))
}
