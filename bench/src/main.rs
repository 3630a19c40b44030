//! `mcpwatch-load`: the workloads `cargo xtask bench` times, as one small
//! release binary (run bare, or as a watched server under `mcpwatch exec`),
//! and the floor they are measured against.
//!
//! Each workload writes one JSON object to `--result` (not stdout: under the
//! wrapper stdout is a server's wire, captured as its MCP conversation).
//!
//! - `openat N [--path P]`: openat(2) of a missing path (or of P, closed
//!   again), N times.
//! - `getppid N`: getppid(2) N times (a syscall no tool follows: the tax of
//!   a hook on every syscall).
//! - `openat-for SECONDS`: openat of a missing path as fast as one thread
//!   can, for SECONDS (the unpaced loss test).
//! - `connect N PORT`: socket + connect to a closed loopback port + close.
//! - `forkexec N`: fork, exec /bin/true, wait.
//! - `rate R SECONDS`: openat of a missing path at R per second, paced in
//!   1 ms slots, over `--threads` generators; with `--deny-every K`, every
//!   K-th open is of `DIR/deny-N`, a file the server did not declare (an
//!   alert each, for the latency measurement; the files must exist).
//! - `floor` (root): attach the agent's hooks doing nothing but the
//!   watched-set lookup, print `ready`, hold them until SIGINT/SIGTERM.

mod floor;

use std::{
    ffi::CString,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use serde_json::json;

#[derive(Parser)]
struct Cli {
    /// Where the result goes (JSON).
    #[arg(long, global = true)]
    result: Option<PathBuf>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    Openat {
        count: u64,
        /// An existing file to open (and close) instead of a missing one.
        #[arg(long)]
        path: Option<PathBuf>,
    },
    Getppid {
        count: u64,
    },
    OpenatFor {
        seconds: f64,
    },
    Connect {
        count: u64,
        port: u16,
    },
    Forkexec {
        count: u64,
    },
    Rate {
        rate: u64,
        seconds: f64,
        /// Every K-th open is of `DIR/deny-N` (a file outside the server's grant).
        #[arg(long)]
        deny_every: Option<u64>,
        #[arg(long, default_value = "/tmp/mcpwatch-bench-deny")]
        deny_dir: PathBuf,
        /// Generator threads (each paces rate/threads).
        #[arg(long, default_value_t = 1)]
        threads: u64,
    },
    /// The benchmark floor (root): attach the agent's hooks doing nothing but
    /// the watched-set lookup, print `ready`, and hold them until SIGINT/SIGTERM.
    Floor,
}

/// A path that does not exist, under a directory that does not either.
const MISSING: &str = "/nonexistent-mcpwatch-bench/missing";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let result = match cli.mode {
        Mode::Floor => return floor::run(),
        Mode::Openat { count, path } => {
            let path = match path {
                Some(p) => CString::new(p.as_os_str().as_encoded_bytes())?,
                None => CString::new(MISSING)?,
            };
            let ns = timed(count, || unsafe {
                let fd = libc::openat(libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY);
                if fd >= 0 {
                    libc::close(fd);
                }
            });
            json!({"mode": "openat", "ops": count, "ns_per_op": ns})
        }
        Mode::Getppid { count } => {
            // The raw call: nothing between the loop and the kernel.
            let ns = timed(count, || unsafe {
                libc::syscall(libc::SYS_getppid);
            });
            json!({"mode": "getppid", "ops": count, "ns_per_op": ns})
        }
        Mode::OpenatFor { seconds } => {
            let path = CString::new(MISSING)?;
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed().as_secs_f64() < seconds {
                for _ in 0..1024 {
                    unsafe { libc::openat(libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY) };
                }
                n += 1024;
            }
            let elapsed = start.elapsed().as_secs_f64();
            json!({"mode": "openat-for", "events": n, "seconds": elapsed, "achieved_rate": n as f64 / elapsed})
        }
        Mode::Connect { count, port } => {
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
                },
                sin_zero: [0; 8],
            };
            let ns = timed(count, || unsafe {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                libc::connect(
                    fd,
                    &addr as *const _ as *const libc::sockaddr,
                    size_of::<libc::sockaddr_in>() as u32,
                );
                libc::close(fd);
            });
            json!({"mode": "connect", "ops": count, "ns_per_op": ns})
        }
        Mode::Forkexec { count } => {
            let prog = CString::new("/bin/true")?;
            let argv = [prog.as_ptr(), std::ptr::null()];
            let ns = timed(count, || unsafe {
                let pid = libc::fork();
                if pid == 0 {
                    libc::execv(prog.as_ptr(), argv.as_ptr());
                    libc::_exit(127);
                }
                let mut status = 0;
                libc::waitpid(pid, &mut status, 0);
            });
            json!({"mode": "forkexec", "ops": count, "ns_per_op": ns})
        }
        Mode::Rate {
            rate,
            seconds,
            deny_every,
            deny_dir,
            threads,
        } => {
            let threads = threads.max(1);
            let start = Instant::now();
            let parts: Vec<anyhow::Result<(u64, usize)>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let deny_dir = &deny_dir;
                        // Thread t opens every `threads`-th deny file.
                        s.spawn(move || paced(rate / threads, seconds, deny_every, deny_dir, t, threads))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("generator thread"))
                    .collect()
            });
            let elapsed = start.elapsed().as_secs_f64();
            let (mut events, mut denied) = (0, 0);
            for p in parts {
                let (e, d) = p?;
                events += e;
                denied += d;
            }
            json!({
                "mode": "rate",
                "target_rate": rate,
                "threads": threads,
                "events": events,
                "denied": denied,
                "seconds": elapsed,
                "achieved_rate": events as f64 / elapsed,
            })
        }
    };
    let text = result.to_string();
    match cli.result {
        Some(p) => std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?,
        None => println!("{text}"),
    }
    Ok(())
}

/// Nanoseconds per call of `op`, over `count` calls.
fn timed(count: u64, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..count {
        op();
    }
    start.elapsed().as_nanos() as f64 / count.max(1) as f64
}

/// Opens at `rate` per second for `seconds` (one of `threads` generators,
/// number `thread`); returns (opens, undeclared opens).
fn paced(
    rate: u64,
    seconds: f64,
    deny_every: Option<u64>,
    deny_dir: &std::path::Path,
    thread: u64,
    threads: u64,
) -> anyhow::Result<(u64, usize)> {
    if rate == 0 {
        bail!("rate must be positive");
    }
    let missing = CString::new(MISSING)?;
    // Undeclared files to open (successful opens: failed ones of ordinary
    // paths are no one's business). `DIR/deny-N` must exist: created by the
    // caller, outside the watched server, so their creation raises nothing.
    let every = deny_every.unwrap_or(0);
    let deny_file = |i: u64| {
        CString::new(
            deny_dir
                .join(format!("deny-{}", i * threads + thread))
                .to_string_lossy()
                .as_bytes(),
        )
    };
    let total = (rate as f64 * seconds) as u64;
    let mut done = 0u64;
    let mut denied = 0usize;
    let start = Instant::now();
    let slot = Duration::from_millis(1);
    let per_slot = (rate / 1000).max(1);
    while done < total {
        let elapsed = start.elapsed();
        let due = ((elapsed.as_secs_f64() * rate as f64) as u64).min(total);
        if done >= due {
            // Ahead of schedule: wait for the next slot.
            let next = slot.saturating_sub(Duration::from_nanos(elapsed.as_nanos() as u64 % 1_000_000));
            std::thread::sleep(next);
            continue;
        }
        let batch = (due - done).min(per_slot);
        for _ in 0..batch {
            done += 1;
            if every > 0 && done.is_multiple_of(every) {
                let path = deny_file(denied as u64)?;
                let fd = unsafe { libc::openat(libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY) };
                if fd >= 0 {
                    unsafe { libc::close(fd) };
                }
                denied += 1;
            } else {
                unsafe { libc::openat(libc::AT_FDCWD, missing.as_ptr(), libc::O_RDONLY) };
            }
        }
    }
    Ok((done, denied))
}
