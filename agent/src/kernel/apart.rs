//! The kernel programs loaded by a process of their own.
//!
//! Loading needs the running kernel's BTF parsed: aya's parse (~36 MiB for
//! 5.5 MB of vmlinux BTF) to load the object and attach the BTF tracepoints,
//! btf-rs's (as much again) for the field offsets. Handed back to the
//! allocator, that memory would still be the agent's peak RSS (`VmHWM`) for
//! its whole life. So the agent runs its own binary again
//! (`mcpwatch load-kernel`, hidden; a re-exec, not a fork: the agent has
//! threads by then), which does all of it (`kernel/attach.rs`): resolves the
//! offsets, loads the object with the kept maps pinned (`keep.rs`), attaches
//! the programs and pins their links, and pins in the handoff directory what
//! the agent opens once and unpins (the programs attached later, the maps that
//! are not kept). It answers one JSON document on stdout and exits; the agent
//! opens the pins (`kernel/loader.rs`, `kernel/objects.rs`), and never holds
//! an `aya::Ebpf` or a parsed BTF.

use std::{
    io::Write as _,
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, ExitStatus, Stdio},
};

use serde::{Deserialize, Serialize};

use crate::kernel::loader::Origin;

/// The hidden verb the loading process runs.
pub const VERB: &str = "load-kernel";

/// What the agent asks the loading process for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub pin_dir: PathBuf,
    /// The marker the state directory names (a kept set is reused only then).
    pub expected_marker: Option<String>,
    pub watched_max: u32,
    pub ring_bytes: u32,
    /// The agent's tgid, for `TAMPER_AGENT`: set before the programs attach.
    pub agent_tgid: u32,
}

/// What the loading process did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loaded {
    pub origin: Origin,
    /// The marker of the set of pins now in place.
    pub marker: String,
    /// Optional features switched off (the kernel lacks a field), and why.
    pub disabled: Vec<(String, String)>,
    /// Programs attached later that the kernel refused to load, and why.
    pub refused: Vec<(String, String)>,
    /// A previous agent's links of programs attached later, still pinned.
    pub later: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    Loaded(Loaded),
    /// The error and its sources (a program's verifier log included).
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ApartError {
    #[error("starting the loading process (/proc/self/exe {VERB}): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("{0}")]
    Failed(String),
    #[error("the loading process ended ({0}) without an answer{1}")]
    Died(ExitStatus, String),
}

/// Runs the loading process for `request` and waits for its answer.
pub fn load(request: &Request) -> Result<Loaded, ApartError> {
    let request = serde_json::to_string(request).expect("a request serializes");
    let level = log::max_level().to_string().to_lowercase();
    let out = Command::new("/proc/self/exe")
        .arg0("mcpwatch")
        .args([VERB, "--log-level", &level, &request])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(ApartError::Spawn)?;
    decide(out.status, &out.stdout)
}

fn decide(status: ExitStatus, stdout: &[u8]) -> Result<Loaded, ApartError> {
    match serde_json::from_slice(stdout) {
        Ok(Answer::Loaded(l)) if status.success() => Ok(l),
        Ok(Answer::Failed(e)) => Err(ApartError::Failed(e)),
        _ if stdout.is_empty() => Err(ApartError::Died(status, String::new())),
        _ => Err(ApartError::Died(
            status,
            format!(": {}", String::from_utf8_lossy(stdout).trim()),
        )),
    }
}

/// The loading process (`mcpwatch load-kernel REQUEST`): does the work,
/// writes the answer on stdout; the exit status says whether it loaded.
pub fn serve(request: &str) -> i32 {
    let answer = match serde_json::from_str::<Request>(request) {
        Ok(r) => {
            // Dies with the agent: never goes on pinning for no one.
            // SAFETY: prctl with an integer argument.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            if std::os::unix::process::parent_id() != r.agent_tgid {
                return 2;
            }
            match super::attach::load_and_pin(&r) {
                Ok(l) => Answer::Loaded(l),
                Err(e) => Answer::Failed(super::cgroup_net::chain(&e)),
            }
        }
        Err(e) => Answer::Failed(format!("a malformed request: {e}")),
    };
    let code = match answer {
        Answer::Loaded(_) => 0,
        Answer::Failed(_) => 1,
    };
    let json = serde_json::to_vec(&answer).expect("an answer serializes");
    let mut out = std::io::stdout().lock();
    if out.write_all(&json).and_then(|()| out.flush()).is_err() {
        return 3;
    }
    code
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    fn loaded() -> Loaded {
        Loaded {
            origin: Origin::Fresh {
                discarded: Some("pinned by another eBPF object".into()),
            },
            marker: "object-abc-w1-r2_3".into(),
            disabled: vec![("io_uring".into(), "kernel BTF has no field io_kiocb.opcode".into())],
            refused: vec![("cg_bind4".into(), "the BPF_PROG_LOAD syscall returned EINVAL".into())],
            later: vec!["cg_connect4".into()],
        }
    }

    #[test]
    fn an_answer_crosses_intact_and_a_failure_keeps_its_reason() {
        let ok = serde_json::to_vec(&Answer::Loaded(loaded())).unwrap();
        assert_eq!(decide(ExitStatus::from_raw(0), &ok).unwrap(), loaded());
        let failed =
            serde_json::to_vec(&Answer::Failed("program sys_exit: Verifier output: R1 invalid".into())).unwrap();
        let e = decide(ExitStatus::from_raw(1 << 8), &failed).unwrap_err();
        assert_eq!(e.to_string(), "program sys_exit: Verifier output: R1 invalid");
    }

    #[test]
    fn a_killed_loading_process_is_an_error_that_says_so() {
        let e = decide(ExitStatus::from_raw(libc::SIGKILL), b"").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the loading process ended (signal: 9 (SIGKILL)) without an answer"
        );
        // An answer that says loaded does not count from a process that failed.
        let ok = serde_json::to_vec(&Answer::Loaded(loaded())).unwrap();
        assert!(decide(ExitStatus::from_raw(3 << 8), &ok).is_err());
        let e = decide(ExitStatus::from_raw(1 << 8), b"garbage").unwrap_err();
        assert!(e.to_string().ends_with(": garbage"), "{e}");
    }
}
