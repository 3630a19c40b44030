//! Self-protection: which events of watched processes aim at the agent
//! itself. A signal to the agent comes decided from the kernel
//! (`signal_generate`, see `agent_common::tamper`); ptrace,
//! process_vm_readv/writev and pidfd_getfd on the agent, the `bpf()`
//! commands that reach another process's BPF objects, and changes to the
//! files the agent stands on (its configuration, manifests, state, spool,
//! events file, pins, binary) are recognised here from the observation the
//! event line was written from. Each is an `agent.tamper` alert (critical).

use std::path::{Path, PathBuf};

use agent_common::{EventKind, tamper};
use serde_json::{Value, json};

use crate::{
    kernel::decode::Sys,
    pipeline::observe::{FileObservation, SysObservation},
    policy::activity::{FileOp, RiskyOp},
};

/// `TRACE_SIGNAL_DELIVERED`: the signal was queued on the agent.
const RESULT_QUEUED: u64 = 0;

/// `PTRACE_TRACEME`: its pid argument is ignored.
const PTRACE_TRACEME: u64 = 0;

/// What the agent stands on: one protected path (a file, or a directory and
/// everything under it) and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protected {
    pub path: PathBuf,
    pub what: &'static str,
}

/// An attempt on the agent, before it becomes an alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Tamper {
    /// `signal`, `ptrace`, `process_vm_writev`, `bpf`, `file`...
    pub kind: &'static str,
    pub summary: String,
    pub evidence: Value,
}

/// The agent's identity and the paths it protects.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    agent_pid: u32,
    protected: Vec<Protected>,
    /// SIGTERMs and SIGINTs watched processes queued on the agent and the
    /// agent has not received yet (see [`Guard::take_signal`]).
    refused: [u32; 2],
}

/// The signals that stop the agent cleanly, which it can refuse.
const REFUSABLE: [i32; 2] = [libc::SIGTERM, libc::SIGINT];

impl Guard {
    /// `protected` entries that are relative or empty are left out (the
    /// kernel reports absolute paths only).
    pub fn new(agent_pid: u32, protected: impl IntoIterator<Item = Protected>) -> Self {
        let mut protected: Vec<Protected> = protected
            .into_iter()
            .filter(|p| p.path.is_absolute() && p.path != Path::new("/"))
            .collect();
        protected.dedup();
        Self {
            agent_pid,
            protected,
            refused: [0; 2],
        }
    }

    /// Whether a `sig` the agent just received is one a watched process
    /// sent (its record came first: the kernel wrote it in the sender's
    /// kill()), which the agent then does not obey. Each record answers
    /// one delivery; a signal that found one already pending (coalesced
    /// with an operator's) was not counted, so the operator's is obeyed.
    pub fn take_signal(&mut self, sig: i32) -> bool {
        let Some(i) = REFUSABLE.iter().position(|&s| s == sig) else {
            return false;
        };
        let took = self.refused[i] > 0;
        self.refused[i] = self.refused[i].saturating_sub(1);
        took
    }

    pub fn protected(&self) -> &[Protected] {
        &self.protected
    }

    /// Whether `pid` is the agent or one of its threads.
    fn is_agent(&self, pid: u32) -> bool {
        pid != 0 && (pid == self.agent_pid || Path::new(&format!("/proc/{}/task/{pid}", self.agent_pid)).exists())
    }

    /// What protected path `path` is (itself or under it).
    fn covers(&self, path: &str) -> Option<&Protected> {
        let path = Path::new(path);
        self.protected.iter().find(|p| {
            // The events file's rotated siblings (`events.jsonl.1`) too.
            path.starts_with(&p.path)
                || path
                    .to_str()
                    .zip(p.path.to_str())
                    .is_some_and(|(a, b)| a.strip_prefix(b).is_some_and(|rest| rest.starts_with('.')))
        })
    }

    /// The attempt on the agent this event is, if it is one.
    pub fn judge(&mut self, s: &Sys, o: &SysObservation) -> Option<Tamper> {
        if s.header.kind == EventKind::Risky && s.nr == tamper::SIGNAL_NR {
            let sig = s.args[tamper::ARG_SIG] as i32;
            if let Some(i) = REFUSABLE.iter().position(|&r| r == sig)
                && s.args[tamper::ARG_RESULT] == RESULT_QUEUED
            {
                self.refused[i] += 1;
            }
            return Some(self.signal(s));
        }
        match o {
            SysObservation::Risky(r) => {
                let target = r.act.target_pid.unwrap_or(0);
                let op = r.act.op;
                match op {
                    RiskyOp::Ptrace if s.args[0] != PTRACE_TRACEME && self.is_agent(target) => {}
                    RiskyOp::ProcessVmReadv | RiskyOp::ProcessVmWritev | RiskyOp::FdSteal if self.is_agent(target) => {}
                    RiskyOp::Bpf => return bpf(s),
                    _ => return None,
                }
                Some(Tamper {
                    kind: op.name(),
                    summary: format!(
                        "pid {} ({}) called {} on the agent (pid {target}){}",
                        s.header.pid,
                        s.header.comm,
                        op.name(),
                        outcome(s.ret)
                    ),
                    evidence: json!({ "op": op.name(), "target_pid": target, "agent_pid": self.agent_pid,
                        "request": s.args[0], "result": s.ret }),
                })
            }
            SysObservation::File(f) => self.file(s, f),
            _ => None,
        }
    }

    fn signal(&self, s: &Sys) -> Tamper {
        let sig = s.args[tamper::ARG_SIG] as i32;
        let name = signal_name(sig);
        let tid = s.args[tamper::ARG_TID] as u32;
        let code = s.args[tamper::ARG_CODE] as i64 as i32;
        Tamper {
            kind: "signal",
            summary: format!(
                "pid {} ({}) sent {name} to the agent (pid {})",
                s.header.pid,
                s.header.comm,
                s.target_pid.unwrap_or(self.agent_pid)
            ),
            evidence: json!({
                "op": "signal",
                "signal": name,
                "signo": sig,
                "target_pid": s.target_pid,
                "target_tid": tid,
                "si_code": code,
                "group": s.args[tamper::ARG_GROUP] != 0,
                "delivery": delivery(s.args[tamper::ARG_RESULT]),
            }),
        }
    }

    fn file(&self, s: &Sys, f: &FileObservation) -> Option<Tamper> {
        // /proc/<agent>/mem opened: the same as process_vm_writev.
        if let Some(r) = &f.other_proc
            && r.op == RiskyOp::ProcMem
            && r.target_pid.is_some_and(|p| self.is_agent(p))
        {
            return Some(Tamper {
                kind: "proc_mem",
                summary: format!(
                    "pid {} ({}) opened the agent's memory {}{}",
                    s.header.pid,
                    s.header.comm,
                    f.path.as_deref().unwrap_or("?"),
                    outcome(s.ret)
                ),
                evidence: json!({ "op": "proc_mem", "path": f.path, "target_pid": r.target_pid, "result": s.ret }),
            });
        }
        let changes = match f.op {
            FileOp::Open => f.access.write || f.access.truncate || f.access.create,
            FileOp::Truncate | FileOp::Rename | FileOp::Unlink | FileOp::Link | FileOp::Chmod | FileOp::Chown => true,
            FileOp::Mkdir | FileOp::Symlink | FileOp::Exec => false,
        };
        if !changes {
            return None;
        }
        // A rename or link onto a protected name replaces it as surely as a write.
        let (path, p) = [f.path.as_deref(), f.target.as_deref()]
            .into_iter()
            .flatten()
            .find_map(|path| self.covers(path).map(|p| (path, p)))?;
        let op = f.op_name();
        Some(Tamper {
            kind: "file",
            summary: format!(
                "pid {} ({}) {op} {path}: the agent's {}{}",
                s.header.pid,
                s.header.comm,
                p.what,
                outcome(s.ret)
            ),
            evidence: json!({
                "op": op,
                "path": path,
                "protected": p.what,
                "protected_path": p.path,
                "access": f.access.words(),
                "result": s.ret,
            }),
        })
    }
}

/// A `bpf()` command that can detach the agent's programs or reach its maps.
fn bpf(s: &Sys) -> Option<Tamper> {
    let cmd = s.args[0];
    let name = tamper::bpf_tamper_cmd(cmd)?;
    Some(Tamper {
        kind: "bpf",
        summary: format!(
            "pid {} ({}) called bpf({name}), which can detach the agent's programs or write its maps{}",
            s.header.pid,
            s.header.comm,
            outcome(s.ret)
        ),
        evidence: json!({ "op": "bpf", "cmd": name, "cmd_nr": cmd, "result": s.ret }),
    })
}

fn outcome(ret: i64) -> String {
    if ret < 0 {
        format!(
            " (refused: {})",
            crate::pipeline::observe::errno_name(ret).unwrap_or("error")
        )
    } else {
        String::new()
    }
}

/// `SIGTERM`, `SIGRTMIN+2`...
pub fn signal_name(sig: i32) -> String {
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_owned(),
        Err(_) if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&sig) => {
            format!("SIGRTMIN+{}", sig - libc::SIGRTMIN())
        }
        Err(_) => format!("signal {sig}"),
    }
}

/// The tracepoint's result: what the kernel did with the signal.
fn delivery(result: u64) -> &'static str {
    match result {
        RESULT_QUEUED => "queued",
        1 => "ignored",
        2 => "already_pending",
        3 => "overflow",
        4 => "info_lost",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::new(
            std::process::id(),
            [
                Protected {
                    path: "/etc/mcpwatch/config.toml".into(),
                    what: "configuration",
                },
                Protected {
                    path: "/var/log/mcpwatch/events.jsonl".into(),
                    what: "events file",
                },
                Protected {
                    path: "relative".into(),
                    what: "ignored",
                },
            ],
        )
    }

    #[test]
    fn relative_paths_are_not_protected() {
        assert_eq!(guard().protected().len(), 2);
    }

    #[test]
    fn a_protected_file_and_its_rotated_siblings_are_covered() {
        let g = guard();
        assert_eq!(g.covers("/etc/mcpwatch/config.toml").unwrap().what, "configuration");
        assert_eq!(
            g.covers("/var/log/mcpwatch/events.jsonl.1").unwrap().what,
            "events file"
        );
        assert!(g.covers("/etc/mcpwatch/config.toml2").is_none());
        assert!(g.covers("/etc/mcpwatch").is_none());
    }

    #[test]
    fn the_agent_and_its_threads_are_the_agent() {
        let g = guard();
        assert!(g.is_agent(std::process::id()));
        // The test runs on a thread of its own: a thread of the process.
        assert!(g.is_agent(nix::unistd::gettid().as_raw() as u32));
        assert!(!g.is_agent(0));
        assert!(!g.is_agent(1));
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(19), "SIGSTOP");
        assert_eq!(signal_name(libc::SIGRTMIN() + 2), "SIGRTMIN+2");
    }
}
