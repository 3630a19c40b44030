//! Section 6: the gate's cost. One host talks to `/bin/cat` (an echo: every
//! line it reads comes straight back) twice, through `mcpwatch exec --gate`
//! and directly, one message at a time, in alternating blocks; the added
//! round trip is the difference of the two runs' percentiles. Each message
//! is a `tools/call` of an approved tool: the gate parses and judges it on
//! the way in and relays the echo (not a listing: passed unparsed) on the
//! way out. The gate's own figure (read to
//! written, per judged message) comes from the decisions it writes to its
//! standard error when no agent runs. Memory: the gate process's RSS and its
//! private (anonymous) part, after the run.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{
    harness::{Bins, Scratch},
    plan::Plan,
    stats::{mem_kib, percentile},
};

const SERVER: &str = "bench-gate";

/// Round trips of `n` messages (nanoseconds each) and, with `stderr` (the
/// gate's, kept for its decisions), the gate's memory after them.
fn round_trips(
    cmd: &[String],
    n: usize,
    stderr: Option<&std::path::Path>,
) -> anyhow::Result<(Vec<f64>, Option<Value>)> {
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..]).stdin(Stdio::piped()).stdout(Stdio::piped());
    match stderr {
        Some(p) => c.stderr(fs::File::create(p)?),
        None => c.stderr(Stdio::null()),
    };
    let mut child = c.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 50 {
        let msg = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                         "params": {"name": "echo", "arguments": {"path": "/srv/data/notes.txt", "text": "hello"}}});
        let mut bytes = serde_json::to_vec(&msg)?;
        bytes.push(b'\n');
        let t = Instant::now();
        stdin.write_all(&bytes)?;
        line.clear();
        stdout.read_line(&mut line)?;
        let ns = t.elapsed().as_nanos() as f64;
        if line.len() != bytes.len() {
            bail!("{cmd:?} answered {line:?} to {msg}");
        }
        // The first messages warm the caches up.
        if i >= 50 {
            out.push(ns);
        }
    }
    let mem = if stderr.is_some() {
        let pid = child.id();
        Some(
            json!({"rss_kib": mem_kib(pid, "VmRSS")?, "rss_anon_kib": mem_kib(pid, "RssAnon")?, "hwm_kib": mem_kib(pid, "VmHWM")?}),
        )
    } else {
        None
    };
    drop(stdin);
    child.wait()?;
    Ok((out, mem))
}

/// The gate's own measure of each judged message, from its standard error.
fn decided_ns(stderr: &std::path::Path) -> anyhow::Result<Vec<f64>> {
    let text = fs::read_to_string(stderr)?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once("): ").map(|(_, j)| j))
        .filter_map(|j| serde_json::from_str::<Value>(j).ok())
        .filter(|v| v["decision"] == "call" && v["outcome"] == "allowed")
        .filter_map(|v| v["latency_ns"].as_f64())
        .collect())
}

pub fn gate(bins: &Bins, scratch: &Scratch, plan: &Plan) -> anyhow::Result<Value> {
    let dir = scratch.path("gate");
    let state = dir.join("state");
    fs::create_dir_all(state.join("gate"))?;
    // The approval the gate reads when no agent runs (any hash: the tool is never listed).
    let host = nix_hostname();
    fs::write(
        state.join(format!("gate/{SERVER}.json")),
        json!({"server": SERVER, "approved": {"echo": {"host": host, "hash": "sha256:00", "description": ""}}})
            .to_string(),
    )?;
    let config = dir.join("mcpwatch.toml");
    fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[wrapper]\nsyslog_socket = {:?}\n",
            state,
            dir.join("log.sock")
        ),
    )?;
    let direct = vec!["/bin/cat".to_owned()];
    let mut gated: Vec<String> = [
        bins.agent.to_string_lossy().as_ref(),
        "exec",
        "--gate",
        "--server",
        SERVER,
        "--socket",
        &dir.join("no-agent.sock").to_string_lossy(),
        "--config",
        &config.to_string_lossy(),
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    gated.extend(direct.iter().cloned());
    let (mut g, mut d, mut own) = (Vec::new(), Vec::new(), Vec::new());
    let mut mem = Value::Null;
    for r in 0..plan.runs {
        eprintln!("bench: gate, run {}/{}", r + 1, plan.runs);
        let err = dir.join(format!("gate-{r}.stderr"));
        let (s, m) = round_trips(&gated, plan.gate_messages, Some(&err))?;
        g.extend(s);
        mem = m.unwrap_or(Value::Null);
        own.extend(decided_ns(&err)?);
        d.extend(round_trips(&direct, plan.gate_messages, None)?.0);
    }
    for v in [&mut g, &mut d, &mut own] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    let us = |v: f64| v / 1e3;
    Ok(json!({
        "messages": g.len(),
        "direct_rtt_us": {"p50": us(percentile(&d, 50.0)), "p99": us(percentile(&d, 99.0))},
        "gated_rtt_us": {"p50": us(percentile(&g, 50.0)), "p99": us(percentile(&g, 99.0))},
        "added_rtt_us": {"p50": us(percentile(&g, 50.0) - percentile(&d, 50.0)),
                         "p99": us(percentile(&g, 99.0) - percentile(&d, 99.0))},
        "gate_decision_us": {"decisions": own.len(), "p50": us(percentile(&own, 50.0)), "p99": us(percentile(&own, 99.0))},
        "memory": mem,
    }))
}

fn nix_hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}
