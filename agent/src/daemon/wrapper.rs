//! `mcpwatch exec`: register with the agent, apply the sandbox it hands back
//! for a server in enforce mode, then become the server.
//!
//! Stdout is the MCP channel of the server this process becomes: every
//! message of the wrapper goes to stderr. A server started unwatched, or
//! refused, is also reported to syslog (the agent may be what failed).

use std::{os::unix::process::CommandExt, path::Path, process::Command, time::Duration};

use super::gate;
use crate::{
    config::Config,
    daemon::control::{self, ClientError, Reply, Request},
    enforce::{
        apply,
        config::WrapperConfig,
        failopen::{self, Outcome},
    },
    mcp::gate::{GateSpec, approvals::Approvals},
};

/// How long the wrapper waits for the agent's acknowledgement.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Exit status when the agent is required but not reachable (EX_UNAVAILABLE).
pub const EXIT_NO_AGENT: i32 = 69;
/// Exit status when the configuration file cannot be read (EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;
/// Exit status when the sandbox cannot be applied (EX_OSERR).
pub const EXIT_SANDBOX: i32 = 71;
/// Exit status when the command cannot be executed.
pub const EXIT_EXEC_FAILED: i32 = 127;

/// Asks the agent at `socket` to watch this process under `server`, about to run `command`.
pub fn register(socket: &Path, server: &str, command: &[String], gate: bool) -> Result<Reply, ClientError> {
    control::call(
        socket,
        &Request::Watch {
            server: server.to_owned(),
            command: command.to_vec(),
            cwd: std::env::current_dir().ok().map(|d| d.to_string_lossy().into_owned()),
            gate,
        },
        ACK_TIMEOUT,
    )
}

/// `program` as exec will find it (through PATH when it names no
/// directory), made absolute but not resolved: what exec is given stays what
/// the host asked for (Landlock follows the link when it grants it).
fn resolve(program: &str) -> String {
    if program.contains('/') {
        return std::path::absolute(program)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| program.to_owned());
    }
    which::which(program)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| program.to_owned())
}

/// The `[wrapper]` section of the agent's configuration file (the defaults
/// when there is none); an unreadable file is an error.
fn wrapper_config(path: &Path, explicit: bool) -> Result<WrapperConfig, String> {
    Config::load(path, explicit)
        .map(|c| c.wrapper)
        .map_err(|e| e.to_string())
}

/// The agent's state directory (approvals) as the configuration names it.
fn cfg_state_dir(path: &Path, explicit: bool) -> std::path::PathBuf {
    Config::load(path, explicit)
        .map(|c| c.state_dir)
        .unwrap_or_else(|_| Config::default().state_dir)
}

pub struct Options<'a> {
    pub socket: &'a Path,
    pub server: &'a str,
    pub require_agent: bool,
    pub config: &'a Path,
    pub config_explicit: bool,
    pub cmd: &'a [String],
    /// Relay the server through the gate (`--gate`) even when its manifest has no `gate` section.
    pub gate: bool,
}

/// Registers, applies the sandbox, then replaces this process with the
/// command. Returns only on failure, with the exit status to use.
pub fn run(o: Options<'_>) -> i32 {
    let Some((program, args)) = o.cmd.split_first() else {
        eprintln!("mcpwatch exec: no command given");
        return 2;
    };
    let server = o.server;
    let cfg = match wrapper_config(o.config, o.config_explicit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcpwatch exec: {e}; refusing to start {server:?} (cannot tell whether to fail closed)");
            report(&WrapperConfig::default().syslog_socket, Outcome::Refused, server, &e);
            return EXIT_CONFIG;
        }
    };
    let mut command = vec![resolve(program)];
    command.extend(args.iter().cloned());
    let mut gate = None;
    let mut sandbox = None;
    match register(o.socket, server, &command, o.gate) {
        Ok(reply) => {
            gate = reply.gate;
            sandbox = reply.sandbox;
        }
        Err(e) if o.require_agent || cfg.fail_closed => {
            let why = if cfg.fail_closed {
                "[wrapper] fail_closed"
            } else {
                "--require-agent"
            };
            eprintln!("mcpwatch exec: {e}; refusing to start {server:?} unwatched ({why})");
            report(&cfg.syslog_socket, Outcome::Refused, server, &e.to_string());
            return EXIT_NO_AGENT;
        }
        Err(e) => {
            eprintln!(
                "mcpwatch exec: {e}; starting {server:?} UNWATCHED (use --require-agent or [wrapper] fail_closed to refuse)"
            );
            report(&cfg.syslog_socket, Outcome::StartedUnwatched, server, &e.to_string());
            if o.gate {
                // The gate still decides: with this host's approvals when
                // they are readable here, else nothing is approved.
                let approved = Approvals::new(&cfg_state_dir(o.config, o.config_explicit))
                    .approved_here(server)
                    .unwrap_or_else(|e| {
                        eprintln!("mcpwatch exec: {e}; no tool of {server:?} is approved");
                        Default::default()
                    });
                gate = Some(GateSpec {
                    approved,
                    ..Default::default()
                });
            }
        }
    }
    if let Some(spec) = gate {
        // The sandbox is the server's: applied in the child, after the fork,
        // so that the gate keeps its own pipes and rights.
        return gate::run(
            gate::Launch {
                server,
                socket: o.socket,
                path: &command[0],
                arg0: program,
                args,
                sandbox,
            },
            spec,
        );
    }
    if let Some(sb) = sandbox {
        match apply::apply(&sb) {
            Ok(a) => {
                for what in &a.not_enforced {
                    eprintln!("mcpwatch exec: {server:?}: not enforced by this kernel: {what}");
                }
            }
            Err(e) => {
                eprintln!("mcpwatch exec: cannot sandbox {server:?}: {e}; refusing to start it");
                return EXIT_SANDBOX;
            }
        }
    }
    // The path the sandbox was compiled for (a PATH search would try
    // directories Landlock may now refuse).
    let err = Command::new(&command[0]).arg0(program).args(args).exec();
    eprintln!("mcpwatch exec: cannot execute {program:?}: {err}");
    EXIT_EXEC_FAILED
}

fn report(socket: &Path, outcome: Outcome, server: &str, reason: &str) {
    if let Err(e) = failopen::report(socket, outcome, server, reason) {
        eprintln!("mcpwatch exec: could not report to syslog at {}: {e}", socket.display());
    }
}
