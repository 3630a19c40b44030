//! `mcpwatch exec`: register with the agent, then become the server.
//!
//! Stdout is the MCP channel of the server this process becomes: every
//! message of the wrapper goes to stderr.

use std::{os::unix::process::CommandExt, path::Path, process::Command, time::Duration};

use crate::daemon::control::{self, ClientError, Reply, Request};

/// How long the wrapper waits for the agent's acknowledgement.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Exit status when the agent is required but not reachable (EX_UNAVAILABLE).
pub const EXIT_NO_AGENT: i32 = 69;
/// Exit status when the command cannot be executed.
pub const EXIT_EXEC_FAILED: i32 = 127;

/// Asks the agent at `socket` to watch this process under `server`.
pub fn register(socket: &Path, server: &str) -> Result<Reply, ClientError> {
    control::call(
        socket,
        &Request::Watch {
            server: server.to_owned(),
        },
        ACK_TIMEOUT,
    )
}

/// Registers, then replaces this process with `cmd`. Returns only on failure,
/// with the exit status to use.
pub fn run(socket: &Path, server: &str, require_agent: bool, cmd: &[String]) -> i32 {
    let Some((program, args)) = cmd.split_first() else {
        eprintln!("mcpwatch exec: no command given");
        return 2;
    };
    match register(socket, server) {
        Ok(_) => {}
        Err(e) if require_agent => {
            eprintln!("mcpwatch exec: {e}; refusing to start {server:?} unwatched (--require-agent)");
            return EXIT_NO_AGENT;
        }
        Err(e) => {
            eprintln!("mcpwatch exec: {e}; starting {server:?} UNWATCHED (use --require-agent to refuse)");
        }
    }
    let err = Command::new(program).args(args).exec();
    eprintln!("mcpwatch exec: cannot execute {program:?}: {err}");
    EXIT_EXEC_FAILED
}
