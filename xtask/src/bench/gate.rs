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
//! figures after it are reported apart). The worst case is a third run,
//! gated, whose every 10th call is near all 16 secret rules' anchors, so
//! that the gate compiles and runs every rule (`worst_case`).

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
    stats::{boottime_ns, mem_kib, percentile},
};

const SERVER: &str = "bench-gate";
/// The echo server (Python: the same in both runs, so it cancels out).
const ECHO: &str = r#"
import json, os, sys, time
out = sys.stdout.buffer
tool = {"name": "echo", "description": "Echoes its arguments.", "inputSchema": {"type": "object"}}
stamps = []
for line in sys.stdin.buffer:
    read_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
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
    if line.startswith(b'{"id":'):
        stamps.append(b"%s %d %d" % (line[6:line.index(b",")], read_ns, time.clock_gettime_ns(time.CLOCK_BOOTTIME)))
with open(os.environ["MCPWATCH_BENCH_STAMPS"], "wb") as f:
    f.write(b"\n".join(stamps))
"#;
/// The pin of the echo server's tool: sha256 of its canonical
/// `[name, description, inputSchema]` (`mcp::pins::Tool::pin`). Were it
/// wrong, every call would be refused and the bench would stop on it.
const ECHO_PIN: &str = "sha256:3d01ea6d662567564446124ae15dd0992f7c8770bb8bb4951726fb9dbb70bbb7";
/// Call ids after the 10 MB result start here (to tell their decisions apart).
const AFTER_BIG: usize = 1_000_000;
/// The worst case for the gate's memory: a text near every secret rule's
/// anchor (so that every rule is compiled and searched), holding no secret
/// (the echo must come back unchanged). The agent's unit test
/// `secrets::tests::rules_run_only_near_their_anchors` checks that this
/// text (its copy there) is near all 16 rules.
const NEAR_EVERY_RULE: &str = "AKIA ghp_ github_pat_ glpat- xoxb- hooks.slack.com/ npm_ pypi-AgEIcHlwaS5vcmc sk-ant- \
    T3BlbkFJ eyJhbGciOi.eyJzdWIi -----BEGIN private_key_id secret_access_key AIza api_key=abc PASSWORD=x";
/// In the worst-case run, one message in this many carries it.
const NEAR_ALL_EVERY: usize = 10;

/// One session's figures.
struct Session {
    /// Round trips before the 10 MB result, and after it (nanoseconds).
    before: Vec<f64>,
    after: Vec<f64>,
    /// One way, before the 10 MB result: client's write to the server's
    /// read (in), and server's flush to the client's read (out), from
    /// `CLOCK_BOOTTIME` on both sides (the echo writes its stamps to a
    /// file at exit).
    inbound: Vec<f64>,
    outbound: Vec<f64>,
    /// The gate's memory before and after the 10 MB result (gated runs).
    mem: Option<(Value, Value)>,
}

/// `n` round trips, a 10 MB result, `n / 5` more; with `stderr` (the
/// gate's, kept for its decisions), the gate's memory. `worst`: every
/// [`NEAR_ALL_EVERY`]th message before the 10 MB result carries
/// [`NEAR_EVERY_RULE`].
fn session(cmd: &[String], n: usize, stderr: Option<&std::path::Path>, worst: bool) -> anyhow::Result<Session> {
    let stamps = std::env::temp_dir().join(format!("mcpwatch-bench-stamps-{}", std::process::id()));
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..])
        .env("MCPWATCH_BENCH_STAMPS", &stamps)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    match stderr {
        Some(p) => c.stderr(fs::File::create(p)?),
        None => c.stderr(Stdio::null()),
    };
    let mut child = c.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    // id -> (client's write, client's read), CLOCK_BOOTTIME ns.
    let mut sent = std::collections::HashMap::new();
    let mut trip = |id: usize, args: Value| -> anyhow::Result<f64> {
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                         "params": {"name": "echo", "arguments": args}});
        let mut bytes = serde_json::to_vec(&msg)?;
        bytes.push(b'\n');
        let t = Instant::now();
        let written = boottime_ns();
        stdin.write_all(&bytes)?;
        line.clear();
        stdout.read_line(&mut line)?;
        sent.insert(id, (written, boottime_ns()));
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
        let mut args = usual();
        if worst && i % NEAR_ALL_EVERY == 0 {
            args["note"] = json!(NEAR_EVERY_RULE);
        }
        let ns = trip(i, args)?;
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
    let text = fs::read_to_string(&stamps).with_context(|| format!("the echo's stamps in {}", stamps.display()))?;
    let _ = fs::remove_file(&stamps);
    let (mut inbound, mut outbound) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for l in text.lines() {
        let mut f = l.split(' ');
        let (Some(id), Some(Ok(read)), Some(Ok(flushed))) = (
            f.next(),
            f.next().map(str::parse::<u64>),
            f.next().map(str::parse::<u64>),
        ) else {
            bail!("the echo's stamps: unreadable line {l:?}");
        };
        // (The gate's own requests have ids of its own.)
        let Ok(id) = id.parse::<usize>() else {
            continue;
        };
        if let Some(&(written, got)) = sent.get(&id).filter(|_| (50..AFTER_BIG - 1).contains(&id)) {
            inbound.push(read.saturating_sub(written) as f64);
            outbound.push(got.saturating_sub(flushed) as f64);
        }
    }
    if inbound.len() != n {
        bail!("the echo stamped {} of the {n} measured messages", inbound.len());
    }
    Ok(Session {
        before,
        after,
        inbound,
        outbound,
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

/// The gate's own measure of each judged message, from its standard error.
#[derive(Default)]
struct Decided {
    /// Before the 10 MB result, and after it.
    before: Vec<f64>,
    after: Vec<f64>,
    /// Those before it with an id that carried [`NEAR_EVERY_RULE`] in a worst-case run.
    near_all: Vec<f64>,
}

fn decided_ns(stderr: &std::path::Path) -> anyhow::Result<Decided> {
    let text = fs::read_to_string(stderr)?;
    let mut out = Decided::default();
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
            Ok(i) if i >= AFTER_BIG => out.after.push(ns),
            // (Not the warm-up, nor the 10 MB call itself.)
            Ok(i) if (50..AFTER_BIG - 1).contains(&i) => {
                out.before.push(ns);
                if i % NEAR_ALL_EVERY == 0 {
                    out.near_all.push(ns);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

pub fn gate(bins: &Bins, scratch: &Scratch, plan: &Plan) -> anyhow::Result<Value> {
    // A binary just built has its pages dirty in the page cache until they
    // are written back, and a gate's `Private_Dirty` would count them (8 MiB
    // and more): written back first.
    fs::File::open(&bins.agent)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing back {}", bins.agent.display()))?;
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
    let (mut g_in, mut g_out, mut d_in, mut d_out) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut g_big, mut d_big, mut own_big) = (Vec::new(), Vec::new(), Vec::new());
    let (mut worst, mut worst_near_all) = (Vec::new(), Vec::new());
    let mut mem = (Value::Null, Value::Null);
    let mut worst_mem = (Value::Null, Value::Null);
    for r in 0..plan.runs {
        eprintln!("bench: gate, run {}/{}", r + 1, plan.runs);
        let err = dir.join(format!("gate-{r}.stderr"));
        let s = session(&gated, plan.gate_messages, Some(&err), false)?;
        g.extend(s.before);
        g_in.extend(s.inbound);
        g_out.extend(s.outbound);
        g_big.extend(s.after);
        mem = s.mem.unwrap_or((Value::Null, Value::Null));
        let o = decided_ns(&err)?;
        own.extend(o.before);
        own_big.extend(o.after);
        let s = session(&direct, plan.gate_messages, None, false)?;
        d.extend(s.before);
        d_in.extend(s.inbound);
        d_out.extend(s.outbound);
        d_big.extend(s.after);
        // The worst case: a gate that has compiled every secret rule.
        let err = dir.join(format!("gate-worst-{r}.stderr"));
        let s = session(&gated, plan.gate_messages, Some(&err), true)?;
        worst_mem = s.mem.unwrap_or((Value::Null, Value::Null));
        let o = decided_ns(&err)?;
        worst.extend(o.before);
        worst_near_all.extend(o.near_all);
    }
    for v in [
        &mut g,
        &mut d,
        &mut own,
        &mut g_big,
        &mut d_big,
        &mut own_big,
        &mut worst,
        &mut worst_near_all,
        &mut g_in,
        &mut g_out,
        &mut d_in,
        &mut d_out,
    ] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    let us = |v: f64| v / 1e3;
    let pct = |v: &[f64]| json!({"p50": us(percentile(v, 50.0)), "p99": us(percentile(v, 99.0))});
    let own_pct =
        |v: &[f64]| json!({"decisions": v.len(), "p50": us(percentile(v, 50.0)), "p99": us(percentile(v, 99.0))});
    let added = |g: &[f64], d: &[f64]| {
        json!({"p50": us(percentile(g, 50.0) - percentile(d, 50.0)),
               "p99": us(percentile(g, 99.0) - percentile(d, 99.0))})
    };
    Ok(json!({
        "messages": g.len(),
        "direct_rtt_us": pct(&d),
        "gated_rtt_us": pct(&g),
        "added_rtt_us": added(&g, &d),
        "added_inbound_us": added(&g_in, &d_in),
        "added_outbound_us": added(&g_out, &d_out),
        "gate_decision_us": own_pct(&own),
        "memory": mem.0,
        "after_10mb": {
            "messages": g_big.len(),
            "added_rtt_us": added(&g_big, &d_big),
            "gate_decision_us": own_pct(&own_big),
            "memory": mem.1,
        },
        "worst_case": {
            "near_every_rule_every": NEAR_ALL_EVERY,
            "gate_decision_us": own_pct(&worst),
            "near_every_rule_us": own_pct(&worst_near_all),
            "memory": worst_mem.0,
            "after_10mb": {"memory": worst_mem.1},
        },
    }))
}

/// The section's figures as Markdown tables.
pub fn table(g: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let w = &g["worst_case"];
    let mut s = format!(
        "\n| MCP gate: tools/call to an echo server ({} messages per mode) | p50 | p99 |\n|---|---|---|\n",
        g["messages"]
    );
    let every = w["near_every_rule_every"].as_u64().unwrap_or(0);
    for (label, v) in [
        ("round trip, direct", &g["direct_rtt_us"]),
        ("round trip, through the gate", &g["gated_rtt_us"]),
        ("added round trip", &g["added_rtt_us"]),
        ("added one way, client to server (a request)", &g["added_inbound_us"]),
        ("added one way, server to client (a result)", &g["added_outbound_us"]),
        ("the gate's own time per call (read to relayed)", &g["gate_decision_us"]),
        (
            "added round trip after a 10 MB result",
            &g["after_10mb"]["added_rtt_us"],
        ),
        (
            "the gate's own time after a 10 MB result",
            &g["after_10mb"]["gate_decision_us"],
        ),
        (
            &*format!("worst case (every {every}th call near all 16 secret rules' anchors): the gate's own time"),
            &w["gate_decision_us"],
        ),
        ("worst case: the calls near all 16 anchors", &w["near_every_rule_us"]),
    ] {
        s += &format!("| {label} | {:.1} µs | {:.1} µs |\n", f(&v["p50"]), f(&v["p99"]));
    }
    s += "\n| the gate process's memory | RSS | private dirty |\n|---|---|---|\n";
    for (label, m) in [
        ("usual calls, after the run", &g["memory"]),
        (
            "usual calls, after a 10 MB result and more calls",
            &g["after_10mb"]["memory"],
        ),
        ("worst case (every secret rule compiled), after the run", &w["memory"]),
        (
            "worst case, after a 10 MB result and more calls",
            &w["after_10mb"]["memory"],
        ),
    ] {
        s += &format!(
            "| {label} | {:.0} KiB | {:.0} KiB ({:.2} MiB) |\n",
            f(&m["rss_kib"]),
            f(&m["private_dirty_kib"]),
            f(&m["private_dirty_kib"]) / 1024.0
        );
    }
    s
}

fn nix_hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}
