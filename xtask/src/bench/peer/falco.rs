//! Falco's modern eBPF probe as the peer: falcosecurity/libs' `scap-open`
//! example (tracepoints, a reader that only drains and counts), started
//! pinned, stopped with SIGINT, its own counts read from what it prints then.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::bench::harness::interrupt;

/// `--ppm_sc` code of openat in libs 48dfd53c (`scap-open --print_syscalls`).
const PPM_SC_OPENAT: &str = "197";
/// What scap-open prints once its programs are attached.
const READY: &str = "* Live capture in progress";
/// Loading its ~200 programs takes seconds; more on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// What Falco follows in a configuration.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// `--ppm_sc 197`: openat only (every process's).
    Openat,
    /// Every syscall it knows.
    All,
}

/// A running scap-open.
pub struct Falco {
    child: Child,
    /// Everything it printed, once it exits.
    out: Option<JoinHandle<String>>,
}

/// scap-open's own counts, printed at exit.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Events the kernel side tried to write (`n_evts`), drops included.
    pub kernel: u64,
    /// Events the ring was full for (`n_drops_buffer_total`).
    pub dropped: u64,
    /// Events the reader got (`SCAP_SUCCESS`).
    pub read: u64,
}

impl Falco {
    /// Starts `scap_open` on `cpu` and waits until it is attached.
    pub fn start(scap_open: &Path, capture: Capture, cpu: u32) -> anyhow::Result<Self> {
        // Line-buffered stdout: the ready line arrives when printed.
        let mut cmd = Command::new("stdbuf");
        cmd.args(["-oL", "taskset", "-c", &cpu.to_string()])
            .arg(scap_open)
            .arg("--modern_bpf");
        if capture == Capture::Openat {
            cmd.args(["--ppm_sc", PPM_SC_OPENAT]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", scap_open.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let (ready_tx, ready_rx) = mpsc::channel();
        let out = thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with(READY) {
                    let _ = ready_tx.send(());
                }
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let mut falco = Falco { child, out: Some(out) };
        if ready_rx.recv_timeout(START_TIMEOUT).is_err() {
            let _ = interrupt(&mut falco.child);
            let text = falco
                .out
                .take()
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default();
            bail!("scap-open did not start capturing:\n{text}");
        }
        Ok(falco)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, then the counts it prints.
    pub fn stop(mut self) -> anyhow::Result<Counts> {
        interrupt(&mut self.child)?;
        let text = self
            .out
            .take()
            .expect("taken once")
            .join()
            .map_err(|_| anyhow::anyhow!("scap-open's reader thread panicked"))?;
        parse_counts(&text).with_context(|| format!("no counts in scap-open's output:\n{text}"))
    }
}

impl Drop for Falco {
    /// On an error path: no scap-open outlives the bench.
    fn drop(&mut self) {
        let _ = interrupt(&mut self.child);
    }
}

/// The counts in scap-open's exit report (`[1] n_evts: N`,
/// `[1] n_drops_buffer_total: N`, ``Number of `SCAP_SUCCESS` (...): N``).
fn parse_counts(text: &str) -> Option<Counts> {
    let value = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|r| r.rsplit(':').next())
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    Some(Counts {
        kernel: value("[1] n_evts:")?,
        dropped: value("[1] n_drops_buffer_total:")?,
        read: value("Number of `SCAP_SUCCESS`")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_read_from_scap_opens_exit_report() {
        let text = "[1] kernel-side counters\n[1] n_evts: 214968\n[1] n_drops_buffer_total: 12\n\
                    [1] n_drops_buffer_clone_fork_exit: 0\n------------> Userspace stats\n\
                    Number of `SCAP_SUCCESS` (events correctly captured): 214939\n";
        let c = parse_counts(text).expect("counts");
        assert_eq!((c.kernel, c.dropped, c.read), (214968, 12, 214939));
        assert!(parse_counts("[SCAP-OPEN]: Bye!\n").is_none());
    }
}
