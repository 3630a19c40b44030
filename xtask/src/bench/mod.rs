//! `cargo xtask bench`: what mcpwatch costs the host, measured on this machine.
//!
//! 1. Unwatched overhead: syscall loops (openat of a missing file, connect to
//!    a closed loopback port, fork+exec) and a macro workload (`perf bench
//!    sched messaging`) under no BPF, under the floor (the agent's hooks doing
//!    nothing but the watched-set lookup, `mcpwatch-load floor`) and under
//!    the agent, the three modes interleaved in every run.
//! 2. Watched cost: the same loops as a watched server.
//! 3. Throughput without loss: a watched server opening at a paced rate for
//!    the step's duration, doubling until the kernel reports a loss (or the
//!    generator cannot keep up); the loss at twice the best rate.
//! 4. Agent cost: CPU per event over that run, RSS idle with 10 watched
//!    servers, peak RSS.
//! 5. Latency: kernel timestamp of an event to its alert read from the
//!    agent's alert sink (a FIFO), at half the best rate.
//! 6. Enforcement: the same watched server in audit and in enforce mode:
//!    start-up, an openat under Landlock, a connect through the cgroup
//!    allowlist (`enforcement`).
//! 7. The MCP gate: added latency per message (p50/p99) and its memory
//!    (`gate`).
//! 8. With `--peer-falco SCAP_OPEN`: side by side with Falco's modern eBPF
//!    probe (`peer`); `--peer-only` runs only that.
//!
//! `--only` names the sections to run (`overhead`: 1 and 2, `throughput`: 3
//! to 5, `enforcement`, `gate`, `peer`); all by default.
//!
//! Each figure is the median of the runs; each slowdown a ratio of medians
//! taken in the same runs. Prints a table, writes JSON.
//!
//! Modules: `plan` (sizes), `harness` (binaries, scratch directory, agent,
//! floor), `workloads` (what is timed), `stats` (medians, /proc figures),
//! `report` (tables), `enforcement` (section 6), `gate` (section 7); the other
//! sections are here.

mod enforcement;
mod gate;
mod harness;
mod peer;
mod plan;
mod report;
mod stats;
mod workloads;

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::Path,
    process::Stdio,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use harness::{Agent, Bins, Floor, Scratch, build};
pub use peer::PeerPlan;
use plan::{IDLE_SERVERS, LOOPS, MODES, SECTIONS};
pub use plan::{Plan, Sections};
use report::{machine, table};
use stats::{boottime_ns, cpu_ns, median, mem_kib, percentile};
use workloads::{build_crate, ensure_perf, load, loop_ns, messaging};

/// Section 1 and 2: the loops under none, floor and agent, and watched.
fn overhead(bins: &Bins, scratch: &Scratch, plan: &Plan) -> anyhow::Result<Value> {
    // [mode][workload] -> samples; workloads 3 and 4 are the macro ones.
    let mut samples = vec![vec![Vec::new(); LOOPS.len() + 2]; MODES.len()];
    let mut watched = vec![Vec::new(); LOOPS.len()];
    for r in 0..plan.runs {
        for k in 0..MODES.len() {
            // Rotate the order so no mode always runs first (warm caches, drift).
            let m = (k + r) % MODES.len();
            eprintln!("bench: run {}/{}, {}", r + 1, plan.runs, MODES[m]);
            let floor = (m == 1).then(|| Floor::start(bins)).transpose()?;
            let agent = (m == 2)
                .then(|| Agent::start(bins, scratch, "config.toml"))
                .transpose()?;
            for (i, name) in LOOPS.iter().enumerate() {
                samples[m][i].push(loop_ns(bins, scratch, None, name, plan)?);
            }
            samples[m][LOOPS.len()].push(messaging(plan)? * 1e9);
            samples[m][LOOPS.len() + 1].push(build_crate(scratch)? * 1e9);
            if let Some(a) = &agent {
                for (i, name) in LOOPS.iter().enumerate() {
                    watched[i].push(loop_ns(bins, scratch, Some(a), name, plan)?);
                }
            }
            if let Some(f) = floor {
                f.stop()?;
            }
            if let Some(a) = agent {
                a.stop()?;
            }
        }
    }
    let med = |m: usize, i: usize| median(&samples[m][i]);
    let mut unwatched = serde_json::Map::new();
    let mut watched_out = serde_json::Map::new();
    for (i, name) in LOOPS.iter().chain(["messaging", "build"].iter()).enumerate() {
        let (none, floor, agent) = (med(0, i), med(1, i), med(2, i));
        let unit = if i < LOOPS.len() { "ns_per_op" } else { "ns_total" };
        unwatched.insert(
            name.to_string(),
            json!({
                "unit": unit,
                "none": none,
                "floor": floor,
                "agent": agent,
                "floor_slowdown": floor / none,
                "agent_slowdown": agent / none,
                "agent_vs_floor": agent / floor,
                "samples": {"none": samples[0][i], "floor": samples[1][i], "agent": samples[2][i]},
            }),
        );
        if i < LOOPS.len() {
            let w = median(&watched[i]);
            watched_out.insert(
                name.to_string(),
                json!({"unwatched_ns": agent, "watched_ns": w, "extra_ns_per_event": w - agent, "samples": watched[i]}),
            );
        }
    }
    Ok(json!({"unwatched": unwatched, "watched": watched_out}))
}

/// One paced step: (achieved rate, events the agent decoded, lost, agent CPU ns).
fn step(bins: &Bins, scratch: &Scratch, agent: &Agent, rate: u64, seconds: f64, threads: u32) -> anyhow::Result<Value> {
    let (ev0, lost0) = agent.settled_counts()?;
    let cpu0 = cpu_ns(agent.pid())?;
    let r = load(
        bins,
        scratch,
        Some(agent),
        &[
            "rate",
            &rate.to_string(),
            &seconds.to_string(),
            "--threads",
            &threads.to_string(),
        ],
    )?;
    let (ev1, lost1) = agent.settled_counts()?;
    let cpu = cpu_ns(agent.pid())? - cpu0;
    let events = ev1 - ev0;
    Ok(json!({
        "target_rate": rate,
        "threads": threads,
        "achieved_rate": r["achieved_rate"],
        "generated": r["events"],
        "agent_events": events,
        "lost": lost1 - lost0,
        "agent_cpu_ns": cpu,
        "cpu_ns_per_event": cpu as f64 / (events + lost1 - lost0).max(1) as f64,
    }))
}

/// Sections 3, 4 and 5, on one agent.
fn throughput(bins: &Bins, scratch: &Scratch, plan: &Plan) -> anyhow::Result<Value> {
    // Alerts are read as they are written, from the sink's FIFO; the reader
    // keeps the FIFO open for the agent's whole life.
    let (tx, rx) = mpsc::channel::<(u64, Value)>();
    let fifo = scratch.path("alerts.fifo");
    let reader = thread::spawn(move || -> anyhow::Result<()> {
        let mut f = BufReader::new(fs::File::open(&fifo)?);
        let mut line = String::new();
        while f.read_line(&mut line)? > 0 {
            let at = boottime_ns();
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send((at, v));
            }
            line.clear();
        }
        Ok(())
    });
    let agent = Agent::start(bins, scratch, "config-alerts.toml")?;

    // RSS idle, with 10 watched servers.
    let mut idle = Vec::new();
    for i in 0..IDLE_SERVERS {
        idle.push(
            agent
                .wrap(&format!("idle-{i}"), &["sleep", "3600"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = agent.status()?;
        let servers = s["servers"].as_array().map_or(0, |a| {
            a.iter()
                .filter(|s| s["name"].as_str().is_some_and(|n| n.starts_with("idle-")))
                .count()
        });
        if servers == IDLE_SERVERS || Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_secs(2));
    let rss_idle = mem_kib(agent.pid(), "VmRSS")?;
    for mut c in idle {
        let _ = c.kill();
        let _ = c.wait();
    }

    // Doubling until a loss, or until the generators cannot keep up (a second
    // generator thread when one falls short; the machine has two CPUs).
    let mut steps = Vec::new();
    let mut best: Option<Value> = None;
    let mut peak_kib = 0;
    let mut rate = plan.first_rate;
    let mut threads = 1;
    for _ in 0..plan.max_steps {
        eprintln!(
            "bench: throughput step at {rate} events/s ({threads} generator threads) for {} s",
            plan.step_seconds
        );
        let s = step(bins, scratch, &agent, rate, plan.step_seconds, threads)?;
        let lost = s["lost"].as_u64().unwrap_or(0);
        let achieved = s["achieved_rate"].as_f64().unwrap_or(0.0);
        steps.push(s.clone());
        if lost > 0 {
            break;
        }
        if best
            .as_ref()
            .is_none_or(|b| b["achieved_rate"].as_f64().unwrap_or(0.0) < achieved)
        {
            best = Some(s);
            peak_kib = mem_kib(agent.pid(), "VmHWM")?;
        }
        if achieved < 0.95 * rate as f64 {
            if threads == 1 {
                threads = 2;
                continue;
            }
            // The machine's own limit: nothing higher can be asked of it.
            break;
        }
        rate *= 2;
    }
    let best_rate = best.as_ref().and_then(|b| b["achieved_rate"].as_f64()).unwrap_or(0.0);
    let at_double = match steps.last() {
        Some(last) if last["lost"].as_u64().unwrap_or(0) > 0 => last.clone(),
        _ if best_rate > 0.0 => {
            eprintln!("bench: loss at twice the best rate ({:.0}/s)", 2.0 * best_rate);
            step(bins, scratch, &agent, (2.0 * best_rate) as u64, plan.step_seconds, 2)?
        }
        _ => Value::Null,
    };

    // Latency at half the best rate, with an alert every K events.
    let half = ((best_rate / 2.0) as u64).max(1_000);
    let events = (half as f64 * plan.latency_seconds) as u64;
    let every = (events / plan.latency_alerts).max(1);
    eprintln!("bench: latency at {half} events/s, an alert every {every}");
    // The undeclared files, made here (outside the watched server).
    let deny_dir = scratch.path("deny");
    for i in 0..events / every + 1 {
        fs::write(deny_dir.join(format!("deny-{i}")), b"")?;
    }
    let start = boottime_ns();
    let deny = deny_dir.to_string_lossy().into_owned();
    load(
        bins,
        scratch,
        Some(&agent),
        &[
            "rate",
            &half.to_string(),
            &plan.latency_seconds.to_string(),
            "--deny-every",
            &every.to_string(),
            "--deny-dir",
            &deny,
        ],
    )?;
    agent.settled_counts()?;
    thread::sleep(Duration::from_millis(500));
    let rss_end = mem_kib(agent.pid(), "VmRSS")?;
    let hwm = mem_kib(agent.pid(), "VmHWM")?;
    agent.stop()?;
    reader.join().map_err(|_| anyhow::anyhow!("alert reader panicked"))??;
    let mut lat: Vec<f64> = rx
        .try_iter()
        .filter_map(|(at, v)| {
            let k = v["mcpwatch"]["ktime_ns"].as_u64()?;
            let ours = v.to_string().contains("mcpwatch-bench-");
            (ours && k >= start).then(|| at.saturating_sub(k) as f64 / 1e6)
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(json!({
        "steps": steps,
        "best_rate": best_rate,
        "at_double": at_double,
        "cpu_ns_per_event": best.as_ref().map(|b| b["cpu_ns_per_event"].clone()),
        "rss_idle_kib": rss_idle,
        "rss_peak_kib": peak_kib.max(hwm),
        "rss_peak_at_best_kib": peak_kib,
        "rss_end_kib": rss_end,
        "latency": {
            "rate": half,
            "alerts": lat.len(),
            "p50_ms": percentile(&lat, 50.0),
            "p99_ms": percentile(&lat, 99.0),
            "max_ms": lat.last().copied(),
        },
    }))
}

/// Runs the bench's `sections` (the side by side with Falco when `peer` is
/// given); writes `out` and prints the tables.
pub fn bench(plan: Plan, peer: Option<PeerPlan>, sections: Sections, out: &Path) -> anyhow::Result<Value> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads BPF programs: run it as root");
    }
    if sections.only_peer() && peer.is_none() {
        bail!("the peer section (--peer-only, --only peer) needs --peer-falco PATH_TO_SCAP_OPEN");
    }
    let bins = build()?;
    let scratch = Scratch::new()?;
    let mut report = json!({
        "machine": machine(),
        "plan": {"runs": plan.runs, "openat": plan.openat, "connect": plan.connect, "forkexec": plan.forkexec,
                 "messaging_loops": plan.messaging_loops, "step_seconds": plan.step_seconds,
                 "gate_messages": plan.gate_messages,
                 "sections": SECTIONS.iter().filter(|s| sections.has(s)).collect::<Vec<_>>()},
    });
    if sections.has("overhead") {
        ensure_perf()?;
        report["overhead"] = overhead(&bins, &scratch, &plan)?;
    }
    if sections.has("throughput") {
        report["throughput"] = throughput(&bins, &scratch, &plan)?;
    }
    if sections.has("enforcement") {
        report["enforcement"] = enforcement::enforcement(&bins, &scratch, &plan)?;
    }
    if sections.has("gate") {
        report["gate"] = gate::gate(&bins, &scratch, &plan)?;
    }
    if let Some(p) = peer.as_ref().filter(|_| sections.has("peer")) {
        report["side_by_side"] = peer::peer(&bins, &scratch, p)?;
    }
    fs::write(out, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", out.display()))?;
    if !sections.only_peer() {
        println!("{}", table(&report));
    }
    if !report["side_by_side"].is_null() {
        println!("{}", peer::table(&report["side_by_side"]));
    }
    println!("(JSON: {})", out.display());
    Ok(report)
}

/// The test suite's smoke run: every section runs and yields its figures.
pub fn smoke() -> anyhow::Result<()> {
    let out = std::env::temp_dir().join(format!("mcpwatch-bench-smoke-{}.json", std::process::id()));
    let r = bench(Plan::SMOKE, None, Sections::ALL, &out)?;
    let _ = fs::remove_file(&out);
    for name in ["openat", "connect", "forkexec", "messaging", "build"] {
        for mode in MODES {
            let v = r["overhead"]["unwatched"][name][mode].as_f64().unwrap_or(f64::NAN);
            if !(v.is_finite() && v > 0.0) {
                bail!("bench smoke: no {mode} figure for {name}");
            }
        }
    }
    for name in LOOPS {
        if !r["overhead"]["watched"][name]["watched_ns"]
            .as_f64()
            .is_some_and(|v| v > 0.0)
        {
            bail!("bench smoke: no watched figure for {name}");
        }
    }
    let t = &r["throughput"];
    if t["steps"].as_array().is_none_or(|a| a.is_empty()) || t["rss_idle_kib"].as_u64().unwrap_or(0) == 0 {
        bail!("bench smoke: no throughput or memory figures");
    }
    if t["latency"]["alerts"].as_u64().unwrap_or(0) == 0 {
        bail!("bench smoke: no alert came back for the latency figure");
    }
    for name in enforcement::MEASURES {
        if !r["enforcement"][name]["ratio"]
            .as_f64()
            .is_some_and(|v| v.is_finite() && v > 0.0)
        {
            bail!("bench smoke: no enforcement figure for {name}");
        }
    }
    let g = &r["gate"];
    if g["gate_decision_us"]["decisions"].as_u64().unwrap_or(0) == 0
        || !g["gated_rtt_us"]["p99"].as_f64().is_some_and(|v| v > 0.0)
        || g["memory"]["rss_kib"].as_u64().unwrap_or(0) == 0
        || g["worst_case"]["near_every_rule_us"]["decisions"].as_u64().unwrap_or(0) == 0
        || g["worst_case"]["memory"]["private_dirty_kib"].as_u64().unwrap_or(0) == 0
    {
        bail!("bench smoke: no gate figures: {g}");
    }
    Ok(())
}
