//! A server the wrapper starts unwatched (agent down, slow, refusing) or
//! refuses to start is reported to syslog directly, where a SIEM collects
//! it: the agent may be the problem, so it cannot be the messenger.
//!
//! One datagram in the local syslog format on the log socket (`/dev/log`):
//! what the `syslog` crate would send, without its formatter and logger
//! machinery for one message per wrapper run.

use std::{os::unix::net::UnixDatagram, path::Path};

/// The local syslog socket.
pub const DEV_LOG: &str = "/dev/log";

/// LOG_AUTH: a security-relevant event.
const FACILITY_AUTH: u8 = 4;
const SEVERITY_ERR: u8 = 3;
const SEVERITY_WARNING: u8 = 4;

/// What the wrapper did about a server it could not register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    StartedUnwatched,
    Refused,
}

/// The message, tagged `mcpwatch-exec[PID]`.
pub fn message(outcome: Outcome, server: &str, reason: &str) -> String {
    let severity = match outcome {
        Outcome::StartedUnwatched => SEVERITY_WARNING,
        Outcome::Refused => SEVERITY_ERR,
    };
    let what = match outcome {
        Outcome::StartedUnwatched => "started UNWATCHED",
        Outcome::Refused => "refused to start (fail_closed)",
    };
    format!(
        "<{}>mcpwatch-exec[{}]: server {server:?} {what}: {reason}",
        FACILITY_AUTH * 8 + severity,
        std::process::id()
    )
}

/// Sends the report to `socket`; an error says why it did not get there
/// (the wrapper then says so on stderr, its only other channel).
pub fn report(socket: &Path, outcome: Outcome, server: &str, reason: &str) -> std::io::Result<()> {
    let s = UnixDatagram::unbound()?;
    s.send_to(message(outcome, server, reason).as_bytes(), socket)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reaches_a_datagram_listener_as_auth_warning() {
        let dir = std::env::temp_dir().join(format!("mcpwatch-failopen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let l = UnixDatagram::bind(&path).unwrap();
        report(&path, Outcome::StartedUnwatched, "fs", "no agent").unwrap();
        let mut buf = [0u8; 512];
        let n = l.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]);
        assert!(got.starts_with("<36>mcpwatch-exec["), "{got}");
        assert!(got.contains("\"fs\" started UNWATCHED: no agent"), "{got}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
