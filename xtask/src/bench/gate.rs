//! Section 6: the gate's cost. One host talks to an echo server (every
//! line it reads comes straight back; it answers `tools/list` with its one
//! tool, and a call naming `big` with a 10 MB result) twice, through
//! `mcpwatch exec --gate` and directly, one message at a time, in
//! alternating blocks; the added round trip is the difference of the two
//! runs' percentiles. Each message is a `tools/call` of an approved tool:
//! the gate parses and judges it on the way in (the first one after its
//! own listing of the server's tools) and relays the echo on the way out.
//! The gate's own figure (read to written, per judged message) comes from
//! the decisions it writes to its standard error when no agent runs.
//! Memory: the gate process's RSS and its private part (`smaps_rollup`),
//! after the run, and again after a 10 MB result and more messages (the
//! figures after it are reported apart).

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
/// The echo server (Python: the same in both runs, so it cancels out).
const ECHO: &str = r#"
import json, sys
out = sys.stdout.buffer
tool = {"name": "echo", "description": "Echoes its arguments.", "inputSchema": {"type": "object"}}
for line in sys.stdin.buffer:
    if b'"tools/list"' in line:
        m = json.loads(line)
        out.write(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": {"tools": [tool]}}).encode() + b"\n")
    elif b'"big"' in line:
        m = json.loads(line)
        text = b"x" * (10 << 20)
        out.write(b'{"jsonrpc":"2.0","id":' + json.dumps(m["id"]).encode() + b',"result":{"content":[{"type":"text","text":"' + text + b'"}]}}\n')
    else:
        out.write(line)
    out.flush()
"#;
/// The pin of the echo server's tool: sha256 of its canonical
/// `[name, description, inputSchema]` (`mcp::pins::Tool::pin`). Were it
/// wrong, every call would be refused and the bench would stop on it.
const ECHO_PIN: &str = "sha256:3d01ea6d662567564446124ae15dd0992f7c8770bb8bb4951726fb9dbb70bbb7";
/// Call ids after the 10 MB result start here (to tell their decisions apart).
const AFTER_BIG: usize = 1_000_000;

/// One session's figures.
struct Session {
    /// Round trips before the 10 MB result, and after it (nanoseconds).
    before: Vec<f64>,
    after: Vec<f64>,
    /// The gate's memory before and after the 10 MB result (gated runs).
    mem: Option<(Value, Value)>,
}

/// `n` round trips, a 10 MB result, `n / 5` more; with `stderr` (the
/// gate's, kept for its decisions), the gate's memory.
fn session(cmd: &[String], n: usize, stderr: Option<&std::path::Path>) -> anyhow::Result<Session> {
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
    let mut trip = |id: usize, args: Value| -> anyhow::Result<f64> {
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                         "params": {"name": "echo", "arguments": args}});
        let mut bytes = serde_json::to_vec(&msg)?;
        bytes.push(b'\n');
        let t = Instant::now();
        stdin.write_all(&bytes)?;
        line.clear();
        stdout.read_line(&mut line)?;
        let ns = t.elapsed().as_nanos() as f64;
        if line.len() != bytes.len() && args.get("big").is_none() {
            bail!("{cmd:?} answered {:?} to {msg}", &line[..line.len().min(300)]);
        }
        Ok(ns)
    };
    let usual = || json!({"path": "/srv/data/notes.txt", "text": "hello"});
    let mut before = Vec::with_capacity(n);
    // The first messages warm the caches up.
    for i in 0..n + 50 {
        let ns = trip(i, usual())?;
        if i >= 50 {
            before.push(ns);
        }
    }
    let pid = child.id();
    let mem_before = stderr.is_some().then(|| memory(pid)).transpose()?;
    trip(AFTER_BIG - 1, json!({"big": true}))?;
    let after = (0..n / 5)
        .map(|i| trip(AFTER_BIG + i, usual()))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    let mem_after = stderr.is_some().then(|| memory(pid)).transpose()?;
    drop(stdin);
    child.wait()?;
    Ok(Session {
        before,
        after,
        mem: mem_before.zip(mem_after),
    })
}

/// RSS, its anonymous part and the private (unshared) pages, KiB.
fn memory(pid: u32) -> anyhow::Result<Value> {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| -> u64 {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Ok(
        json!({"rss_kib": mem_kib(pid, "VmRSS")?, "rss_anon_kib": mem_kib(pid, "RssAnon")?,
              "hwm_kib": mem_kib(pid, "VmHWM")?, "private_dirty_kib": field("Private_Dirty"),
              "private_clean_kib": field("Private_Clean")}),
    )
}

/// The gate's own measure of each judged message, from its standard error:
/// before the 10 MB result and after it.
fn decided_ns(stderr: &std::path::Path) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let text = fs::read_to_string(stderr)?;
    let mut out = (Vec::new(), Vec::new());
    for v in text
        .lines()
        .filter_map(|l| l.split_once("): ").map(|(_, j)| j))
        .filter_map(|j| serde_json::from_str::<Value>(j).ok())
        .filter(|v| v["decision"] == "call" && v["outcome"] == "allowed")
    {
        let (Some(ns), Some(id)) = (v["latency_ns"].as_f64(), v["call_id"].as_str()) else {
            continue;
        };
        match id.parse::<usize>() {
            Ok(i) if i >= AFTER_BIG => out.1.push(ns),
            // (Not the warm-up, nor the 10 MB call itself.)
            Ok(i) if (50..AFTER_BIG - 1).contains(&i) => out.0.push(ns),
            _ => {}
        }
    }
    Ok(out)
}

pub fn gate(bins: &Bins, scratch: &Scratch, plan: &Plan) -> anyhow::Result<Value> {
    let dir = scratch.path("gate");
    let state = dir.join("state");
    fs::create_dir_all(state.join("gate"))?;
    // The approval the gate reads when no agent runs.
    let host = nix_hostname();
    fs::write(
        state.join(format!("gate/{SERVER}.json")),
        json!({"server": SERVER, "approved": {"echo": {"host": host, "hash": ECHO_PIN, "description": ""}}})
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
    let direct = vec!["python3".to_owned(), "-c".to_owned(), ECHO.to_owned()];
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
    let (mut g_big, mut d_big, mut own_big) = (Vec::new(), Vec::new(), Vec::new());
    let mut mem = (Value::Null, Value::Null);
    for r in 0..plan.runs {
        eprintln!("bench: gate, run {}/{}", r + 1, plan.runs);
        let err = dir.join(format!("gate-{r}.stderr"));
        let s = session(&gated, plan.gate_messages, Some(&err))?;
        g.extend(s.before);
        g_big.extend(s.after);
        mem = s.mem.unwrap_or((Value::Null, Value::Null));
        let (o, o_big) = decided_ns(&err)?;
        own.extend(o);
        own_big.extend(o_big);
        let s = session(&direct, plan.gate_messages, None)?;
        d.extend(s.before);
        d_big.extend(s.after);
    }
    for v in [&mut g, &mut d, &mut own, &mut g_big, &mut d_big, &mut own_big] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    let us = |v: f64| v / 1e3;
    let pct = |v: &[f64]| json!({"p50": us(percentile(v, 50.0)), "p99": us(percentile(v, 99.0))});
    let added = |g: &[f64], d: &[f64]| {
        json!({"p50": us(percentile(g, 50.0) - percentile(d, 50.0)),
               "p99": us(percentile(g, 99.0) - percentile(d, 99.0))})
    };
    Ok(json!({
        "messages": g.len(),
        "direct_rtt_us": pct(&d),
        "gated_rtt_us": pct(&g),
        "added_rtt_us": added(&g, &d),
        "gate_decision_us": {"decisions": own.len(), "p50": us(percentile(&own, 50.0)), "p99": us(percentile(&own, 99.0))},
        "memory": mem.0,
        "after_10mb": {
            "messages": g_big.len(),
            "added_rtt_us": added(&g_big, &d_big),
            "gate_decision_us": {"decisions": own_big.len(), "p50": us(percentile(&own_big, 50.0)), "p99": us(percentile(&own_big, 99.0))},
            "memory": mem.1,
        },
    }))
}

fn nix_hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}
