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
//!
//! Each figure is the median of the runs; each slowdown a ratio of medians
//! taken in the same runs. Prints a table, writes JSON.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::{cargo, root, run};

/// Sizes of one bench run.
#[derive(Clone, Copy)]
pub struct Plan {
    pub runs: usize,
    pub openat: u64,
    pub connect: u64,
    pub forkexec: u64,
    /// `perf bench sched messaging -l`.
    pub messaging_loops: u32,
    /// Seconds per throughput step.
    pub step_seconds: f64,
    pub first_rate: u64,
    pub max_steps: usize,
    pub latency_seconds: f64,
    /// Alerts wanted in the latency run.
    pub latency_alerts: u64,
}

impl Plan {
    pub const FULL: Plan = Plan {
        runs: 5,
        openat: 2_000_000,
        connect: 200_000,
        forkexec: 1_000,
        messaging_loops: 300,
        step_seconds: 30.0,
        first_rate: 62_500,
        max_steps: 7,
        latency_seconds: 30.0,
        latency_alerts: 3_000,
    };
    /// Seconds, for the test suite: every path runs, no figure means anything.
    pub const SMOKE: Plan = Plan {
        runs: 1,
        openat: 20_000,
        connect: 2_000,
        forkexec: 20,
        messaging_loops: 5,
        step_seconds: 1.0,
        first_rate: 20_000,
        max_steps: 2,
        latency_seconds: 1.0,
        latency_alerts: 50,
    };
}

/// The small crate `cargo build --release` compiles as a macro workload.
const CRATE_SOURCE: &str = r#"
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

trait Shape: Debug { fn area(&self) -> f64; fn name(&self) -> String { format!("{self:?}") } }
#[derive(Debug, Clone)] struct Circle(f64);
#[derive(Debug, Clone)] struct Rect(f64, f64);
impl Shape for Circle { fn area(&self) -> f64 { 3.14159 * self.0 * self.0 } }
impl Shape for Rect { fn area(&self) -> f64 { self.0 * self.1 } }

fn stats<T: Copy + Into<f64>>(v: &[T]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x.into()).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x.into() - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

fn words(text: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for w in text.split_whitespace() { *m.entry(w.to_lowercase()).or_insert(0) += 1; }
    m
}

fn main() {
    let shapes: Vec<Box<dyn Shape>> = (0..100)
        .map(|i| if i % 2 == 0 { Box::new(Circle(i as f64)) as Box<dyn Shape> } else { Box::new(Rect(i as f64, 2.0)) })
        .collect();
    let areas: Vec<f64> = shapes.iter().map(|s| s.area()).collect();
    let (m, sd) = stats(&areas);
    let ints: Vec<u32> = (0..1000).collect();
    let (mi, sdi) = stats(&ints);
    let mut h: HashMap<String, Vec<String>> = HashMap::new();
    for s in &shapes { h.entry(s.name()).or_default().push(format!("{:.2}", s.area())); }
    let w = words("the quick brown fox jumps over the lazy dog The End");
    println!("{m} {sd} {mi} {sdi} {} {:?}", h.len(), w);
}
"#;

/// The loops, in the order they run.
const LOOPS: [&str; 3] = ["openat", "connect", "forkexec"];
const MODES: [&str; 3] = ["none", "floor", "agent"];
/// A port nothing listens on (connects are refused).
const CLOSED_PORT: u16 = 9;
const IDLE_SERVERS: usize = 10;

struct Bins {
    agent: PathBuf,
    /// `mcpwatch-load`: the workloads and the floor.
    load: PathBuf,
}

/// Builds the release agent and the workload binary (with the floor).
fn build() -> anyhow::Result<Bins> {
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "mcpwatch",
        "--package",
        "mcpwatch-bench",
    ]))?;
    let dir = root().join("target/release");
    Ok(Bins {
        agent: dir.join("mcpwatch"),
        load: dir.join("mcpwatch-load"),
    })
}

/// `perf` from Debian's linux-perf, installed when missing.
fn ensure_perf() -> anyhow::Result<()> {
    crate::testenv::apt_ensure(&["linux-perf"], "for `perf bench sched messaging`")
}

/// The bench's private directory: manifests, config, sockets, the alert FIFO.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("mcpwatch-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("manifests"))?;
        fs::create_dir_all(dir.join("deny"))?;
        // The bench server's grant: what the loops do, nothing of `deny/`.
        fs::write(
            dir.join("manifests/bench.json"),
            json!({
                "name": "bench",
                "match": {"server": ["bench"]},
                "read": ["/nonexistent-mcpwatch-bench/**"],
                "exec": ["/bin/true"],
                "network": {"outbound": {"allow_host": ["127.0.0.1"], "allow_port": [CLOSED_PORT]}}
            })
            .to_string(),
        )?;
        // The macro workload's crate: no dependencies, some generic code.
        fs::create_dir_all(dir.join("crate/src"))?;
        fs::write(
            dir.join("crate/Cargo.toml"),
            "[package]\nname = \"bench-build\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        )?;
        fs::write(dir.join("crate/src/main.rs"), CRATE_SOURCE)?;
        let fifo = dir.join("alerts.fifo");
        nix_mkfifo(&fifo)?;
        let config = |sink: &str| {
            format!(
                r#"state_dir = "{d}/state"
[metrics]
address = "127.0.0.1:0"
[policy]
manifest_dirs = ["{d}/manifests"]
# Every alert of the latency run goes out (no flood folding).
alert_distinct_max = 100000000
{sink}"#,
                d = dir.display()
            )
        };
        // Alerts in the event stream only (/dev/null) for the loops...
        fs::write(dir.join("config.toml"), config(""))?;
        // ...and also to the FIFO the latency reader holds open.
        let sink = format!(
            "[[sinks]]\nname = \"bench\"\nfile = {{ path = \"{}\", rotate_bytes = 1099511627776 }}\n",
            fifo.display()
        );
        fs::write(dir.join("config-alerts.toml"), config(&sink))?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn nix_mkfifo(path: &Path) -> anyhow::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        bail!("mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
    }
    Ok(())
}

/// A running agent.
struct Agent {
    child: Child,
    bin: PathBuf,
    socket: PathBuf,
}

impl Agent {
    /// `config`: `config.toml`, or `config-alerts.toml` (alerts to the FIFO:
    /// a reader must hold it open).
    fn start(bins: &Bins, scratch: &Scratch, config: &str) -> anyhow::Result<Self> {
        let socket = scratch.path("control.sock");
        let log = fs::File::create(scratch.path("agent.log"))?;
        let child = Command::new(&bins.agent)
            .args(["agent", "--config"])
            .arg(scratch.path(config))
            .args(["--events-out", "/dev/null", "--no-user-host-configs", "--socket"])
            .arg(&socket)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting the agent")?;
        let agent = Agent {
            child,
            bin: bins.agent.clone(),
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while agent.status().is_err() {
            if Instant::now() > deadline {
                bail!("the agent did not answer in 120 s:\n{}", agent.log(scratch));
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(agent)
    }

    fn log(&self, scratch: &Scratch) -> String {
        fs::read_to_string(scratch.path("agent.log")).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn status(&self) -> anyhow::Result<Value> {
        let out = Command::new(&self.bin)
            .args(["status", "--socket"])
            .arg(&self.socket)
            .output()?;
        if !out.status.success() {
            bail!("status: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// (events decoded, events lost) once the ring is drained: the counts
    /// stop moving.
    fn settled_counts(&self) -> anyhow::Result<(u64, u64)> {
        let mut last = (u64::MAX, u64::MAX);
        loop {
            let s = self.status()?;
            let now = (s["events"].as_u64().unwrap_or(0), s["lost"].as_u64().unwrap_or(0));
            if now == last {
                return Ok(now);
            }
            last = now;
            thread::sleep(Duration::from_millis(300));
        }
    }

    /// Wraps `cmd` as a watched server.
    fn wrap(&self, server: &str, cmd: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(["exec", "--server", server, "--require-agent", "--socket"])
            .arg(&self.socket)
            .arg("--")
            .args(cmd);
        c
    }

    fn stop(mut self) -> anyhow::Result<()> {
        let status = interrupt(&mut self.child)?;
        if !status.success() {
            bail!("the agent exited with {status}");
        }
        Ok(())
    }
}

/// SIGINT to `child` (the agent and the floor shut down on it), then its status.
fn interrupt(child: &mut Child) -> std::io::Result<std::process::ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    child.wait()
}

impl Drop for Agent {
    /// On an error path: no agent outlives the bench.
    fn drop(&mut self) {
        let _ = interrupt(&mut self.child);
    }
}

/// The floor programs, attached until dropped.
struct Floor(Child);

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = interrupt(&mut self.0);
    }
}

impl Floor {
    fn start(bins: &Bins) -> anyhow::Result<Self> {
        let mut child = Command::new(&bins.load)
            .arg("floor")
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the floor")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.wait();
            bail!("the floor did not attach");
        }
        Ok(Floor(child))
    }

    fn stop(mut self) -> anyhow::Result<()> {
        interrupt(&mut self.0)?;
        Ok(())
    }
}

/// Runs the workload binary (wrapped as a watched server when `agent` is
/// given); returns its result object.
fn load(bins: &Bins, scratch: &Scratch, watched: Option<&Agent>, args: &[&str]) -> anyhow::Result<Value> {
    let result = scratch.path("result.json");
    let _ = fs::remove_file(&result);
    let result_s = result.to_string_lossy().into_owned();
    let load = bins.load.to_string_lossy().into_owned();
    let mut argv = vec![load.as_str(), "--result", &result_s];
    argv.extend(args);
    let mut cmd = match watched {
        Some(a) => a.wrap("bench", &argv),
        None => {
            let mut c = Command::new(argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    let out = cmd.stdin(Stdio::null()).output().context("running mcpwatch-load")?;
    if !out.status.success() {
        bail!(
            "mcpwatch-load {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&fs::read(&result)?)?)
}

fn loop_ns(bins: &Bins, scratch: &Scratch, watched: Option<&Agent>, name: &str, plan: &Plan) -> anyhow::Result<f64> {
    let (n, port) = (
        match name {
            "openat" => plan.openat,
            "connect" => plan.connect,
            _ => plan.forkexec,
        }
        .to_string(),
        CLOSED_PORT.to_string(),
    );
    let mut args = vec![name, n.as_str()];
    if name == "connect" {
        args.push(&port);
    }
    let v = load(bins, scratch, watched, &args)?;
    v["ns_per_op"].as_f64().context("ns_per_op")
}

/// `cargo build --release` of the small crate from scratch: seconds.
fn build_crate(scratch: &Scratch) -> anyhow::Result<f64> {
    let target = scratch.path("crate-target");
    let _ = fs::remove_dir_all(&target);
    let start = Instant::now();
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--offline", "--quiet"])
        .current_dir(scratch.path("crate"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .context("building the bench crate")?;
    if !out.status.success() {
        bail!("building the bench crate: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(start.elapsed().as_secs_f64())
}

/// `perf bench sched messaging`: seconds.
fn messaging(plan: &Plan) -> anyhow::Result<f64> {
    let out = Command::new("perf")
        .args(["bench", "sched", "messaging", "-l"])
        .arg(plan.messaging_loops.to_string())
        .output()
        .context("running perf bench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Total time:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
        .with_context(|| format!("no total time in perf's output:\n{text}"))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// user + sys CPU of `pid` so far, in nanoseconds (`/proc/PID/stat`, the
/// same accounting getrusage reads).
fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Ok(ticks * 1_000_000_000 / hz)
}

/// `VmRSS` / `VmHWM` of `pid`, in KiB.
fn mem_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|r| r.trim_start_matches(':').split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("{field} of {pid}"))
}

fn boottime_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

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

fn machine() -> Value {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let mut uts = String::new();
    let _ = Command::new("uname")
        .arg("-r")
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| c.stdout.take().expect("piped").read_to_string(&mut uts));
    json!({
        "kernel": uts.trim(),
        "cpu": cpu,
        "cpus": thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "mem_kib": read("/proc/meminfo").lines().next().and_then(|l| l.split_whitespace().nth(1)).unwrap_or(""),
    })
}

/// Runs the whole bench; writes `out` and prints the table.
pub fn bench(plan: Plan, out: &Path) -> anyhow::Result<Value> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads BPF programs: run it as root");
    }
    ensure_perf()?;
    let bins = build()?;
    let scratch = Scratch::new()?;
    let overhead = overhead(&bins, &scratch, &plan)?;
    let throughput = throughput(&bins, &scratch, &plan)?;
    let report = json!({
        "machine": machine(),
        "plan": {"runs": plan.runs, "openat": plan.openat, "connect": plan.connect, "forkexec": plan.forkexec,
                 "messaging_loops": plan.messaging_loops, "step_seconds": plan.step_seconds},
        "overhead": overhead,
        "throughput": throughput,
    });
    fs::write(out, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", out.display()))?;
    println!("{}", table(&report));
    println!("(JSON: {})", out.display());
    Ok(report)
}

fn pct(r: f64) -> String {
    format!("{:+.1}%", (r - 1.0) * 100.0)
}

/// The report as Markdown tables.
pub fn table(r: &Value) -> String {
    let mut s = String::new();
    let m = &r["machine"];
    s += &format!(
        "Machine: {} CPUs ({}), kernel {}; medians of {} runs.\n\n",
        m["cpus"],
        m["cpu"].as_str().unwrap_or(""),
        m["kernel"].as_str().unwrap_or(""),
        r["plan"]["runs"]
    );
    s += "| unwatched workload | no BPF | floor | mcpwatch | floor slowdown | mcpwatch slowdown | mcpwatch / floor |\n";
    s += "|---|---|---|---|---|---|---|\n";
    let u = &r["overhead"]["unwatched"];
    for name in ["openat", "connect", "forkexec", "messaging", "build"] {
        let w = &u[name];
        let f = |k: &str| w[k].as_f64().unwrap_or(f64::NAN);
        let (fmt, label): (fn(f64) -> String, &str) = if name == "messaging" {
            (|v| format!("{:.3} s", v / 1e9), "perf bench sched messaging")
        } else if name == "build" {
            (|v| format!("{:.3} s", v / 1e9), "cargo build --release, small crate")
        } else {
            (|v| format!("{v:.0} ns"), name)
        };
        let label = match name {
            "openat" => "openat, missing file (per call)",
            "connect" => "socket+connect refused+close (per loop)",
            "forkexec" => "fork+exec+wait (per loop)",
            _ => label,
        };
        s += &format!(
            "| {label} | {} | {} | {} | {} | {} | {:.3}x |\n",
            fmt(f("none")),
            fmt(f("floor")),
            fmt(f("agent")),
            pct(f("floor_slowdown")),
            pct(f("agent_slowdown")),
            f("agent_vs_floor"),
        );
    }
    s += "\n| watched workload | unwatched | watched | extra per event |\n|---|---|---|---|\n";
    for name in LOOPS {
        let w = &r["overhead"]["watched"][name];
        let f = |k: &str| w[k].as_f64().unwrap_or(f64::NAN);
        s += &format!(
            "| {name} | {:.0} ns | {:.0} ns | {:+.0} ns |\n",
            f("unwatched_ns"),
            f("watched_ns"),
            f("extra_ns_per_event")
        );
    }
    let t = &r["throughput"];
    s += "\n| throughput step (target/s) | generator threads | achieved/s | agent events | lost | agent CPU per event |\n";
    s += "|---|---|---|---|---|---|\n";
    let steps = t["steps"].as_array().map(Vec::as_slice).unwrap_or_default();
    // The run at twice the best rate, unless it is the last step already.
    let double = Some(&t["at_double"]).filter(|d| !d.is_null() && steps.last() != Some(*d));
    for st in steps.iter().chain(double) {
        s += &format!(
            "| {} | {} | {:.0} | {} | {} | {:.0} ns |\n",
            st["target_rate"],
            st["threads"],
            st["achieved_rate"].as_f64().unwrap_or(0.0),
            st["agent_events"],
            st["lost"],
            st["cpu_ns_per_event"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let l = &t["latency"];
    s += &format!(
        "\nBest rate without loss: {:.0} events/s; agent CPU {:.0} ns per event there.\n\
         RSS: {:.1} MiB idle with {IDLE_SERVERS} watched servers, {:.1} MiB peak.\n\
         Event-to-alert latency at {} events/s ({} alerts): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms.\n",
        t["best_rate"].as_f64().unwrap_or(0.0),
        t["cpu_ns_per_event"].as_f64().unwrap_or(f64::NAN),
        t["rss_idle_kib"].as_f64().unwrap_or(0.0) / 1024.0,
        t["rss_peak_kib"].as_f64().unwrap_or(0.0) / 1024.0,
        l["rate"],
        l["alerts"],
        l["p50_ms"].as_f64().unwrap_or(f64::NAN),
        l["p99_ms"].as_f64().unwrap_or(f64::NAN),
        l["max_ms"].as_f64().unwrap_or(f64::NAN),
    );
    s
}

/// The test suite's smoke run: every section runs and yields its figures.
pub fn smoke() -> anyhow::Result<()> {
    let out = std::env::temp_dir().join(format!("mcpwatch-bench-smoke-{}.json", std::process::id()));
    let r = bench(Plan::SMOKE, &out)?;
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
    Ok(())
}
