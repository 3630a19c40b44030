//! What enforcement costs: the same watched server in audit mode (`bench`)
//! and in enforce mode (`bench-enforce`: Landlock, seccomp and the cgroup
//! network allowlist), under one agent, the two alternating in every run.
//!
//! - start-up: `mcpwatch exec -- /bin/true` from spawn to exit (the
//!   registration, the sandbox compiled, applied and the cgroup joined, the
//!   exec, the program's first instruction and its exit);
//! - openat + close of a file the server may read, watched (Landlock's
//!   `file_open` check, and the seccomp filter every syscall runs);
//! - socket + connect + close to a declared loopback address and port,
//!   refused by the kernel (nothing listens) after the cgroup `connect4`
//!   program allowed it (its policy and allowlist lookups).

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{
    harness::{Agent, Bins, ENFORCED, GRANTED_FILE, Scratch},
    plan::{CLOSED_PORT, Plan},
    stats::median,
    workloads::load_as,
};

/// The two servers compared: (label, server name).
const SERVERS: [(&str, &str); 2] = [("audit", "bench"), ("enforce", ENFORCED)];
/// What is timed, in the order of the report.
pub const MEASURES: [&str; 3] = ["startup", "openat", "connect"];

/// Nanoseconds from spawning the wrapped `/bin/true` to its exit, median of `n`.
fn startup_ns(agent: &Agent, server: &str, n: u64) -> anyhow::Result<f64> {
    let mut v = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let status = agent
            .wrap(server, &["/bin/true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("starting the wrapped /bin/true")?;
        if !status.success() {
            bail!("{server}: mcpwatch exec -- /bin/true exited with {status}");
        }
        v.push(t.elapsed().as_nanos() as f64);
    }
    Ok(median(&v))
}

pub fn enforcement(bins: &Bins, scratch: &Scratch, plan: &Plan) -> anyhow::Result<Value> {
    let agent = Agent::start(bins, scratch, "config.toml")?;
    let granted = scratch.path(GRANTED_FILE).to_string_lossy().into_owned();
    let (opens, connects, port) = (
        plan.enforced_openat.to_string(),
        plan.enforced_connect.to_string(),
        CLOSED_PORT.to_string(),
    );
    // [measure][server] -> samples.
    let mut samples = vec![vec![Vec::new(); SERVERS.len()]; MEASURES.len()];
    for r in 0..plan.runs {
        for k in 0..SERVERS.len() {
            // Alternate which mode goes first.
            let s = (k + r) % SERVERS.len();
            let (label, server) = SERVERS[s];
            eprintln!("bench: enforcement run {}/{}, {label}", r + 1, plan.runs);
            samples[0][s].push(startup_ns(&agent, server, plan.starts)?);
            let w = Some((&agent, server));
            let o = load_as(bins, scratch, w, &["openat", &opens, "--path", &granted])?;
            samples[1][s].push(o["ns_per_op"].as_f64().context("ns_per_op")?);
            let c = load_as(bins, scratch, w, &["connect", &connects, &port])?;
            samples[2][s].push(c["ns_per_op"].as_f64().context("ns_per_op")?);
        }
    }
    // Let the agent take the last events before it stops.
    agent.settled_counts()?;
    std::thread::sleep(Duration::from_millis(200));
    agent.stop()?;
    let mut out = serde_json::Map::new();
    for (i, name) in MEASURES.iter().enumerate() {
        let (audit, enforce) = (median(&samples[i][0]), median(&samples[i][1]));
        out.insert(
            name.to_string(),
            json!({
                "audit_ns": audit,
                "enforce_ns": enforce,
                "ratio": enforce / audit,
                "extra_ns": enforce - audit,
                "samples": {"audit": samples[i][0], "enforce": samples[i][1]},
            }),
        );
    }
    Ok(Value::Object(out))
}
