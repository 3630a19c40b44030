//! Side by side with Falco's modern eBPF probe (`--peer-falco SCAP_OPEN`).
//!
//! Four configurations in the same interleaved rounds, the order rotating
//! every round: no tool, Falco following openat only, Falco following every
//! syscall, mcpwatch. Each tool runs on CPU 0, the loops on CPU 1. In every
//! round: an openat loop and a getppid loop (a syscall neither follows), and
//! under mcpwatch the openat loop again as a watched server. Then:
//! - BPF run time per captured openat (`kernel.bpf_stats_enabled`, its own
//!   pass: the statistics cost time themselves);
//! - the reader: an unpaced openat flood of `flood_seconds` under Falco
//!   (openat only), under mcpwatch with alerts only and with every event a
//!   JSON line: reader CPU per event read, loss, idle and peak RSS.
//!
//! Medians; each figure's extra cost against the no-tool loops of the same
//! rounds. `table` turns the result into the README's table.

mod bpf_stats;
mod falco;
mod table;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{
    harness::{ALERTS_ONLY, Agent, Bins, Scratch},
    stats::{cpu_ns, median, mem_kib},
    workloads::load_on,
};
use falco::{Capture, Falco};
pub use table::table;

/// Where each tool runs, and where the loops do.
const TOOL_CPU: u32 = 0;
const GEN_CPU: u32 = 1;
const CONFIGS: [&str; 4] = ["none", "falco_openat", "falco_all", "mcpwatch"];

/// Sizes of the side-by-side run.
#[derive(Clone)]
pub struct PeerPlan {
    pub scap_open: PathBuf,
    pub rounds: usize,
    pub openat: u64,
    pub getppid: u64,
    /// Loops per tool in the bpf_stats pass.
    pub bpf_loops: usize,
    pub flood_seconds: f64,
    /// Floods per reader configuration.
    pub floods: usize,
}

impl PeerPlan {
    pub fn new(scap_open: PathBuf, rounds: Option<usize>) -> Self {
        Self {
            scap_open,
            rounds: rounds.unwrap_or(14),
            openat: 500_000,
            getppid: 1_000_000,
            bpf_loops: 3,
            flood_seconds: 10.0,
            floods: 3,
        }
    }
}

/// A tool attached for one configuration.
enum Tool {
    None,
    Falco(Falco),
    Mcpwatch(Agent),
}

impl Tool {
    fn start(config: &str, bins: &Bins, scratch: &Scratch, plan: &PeerPlan) -> anyhow::Result<Self> {
        Ok(match config {
            "falco_openat" => Tool::Falco(Falco::start(&plan.scap_open, Capture::Openat, TOOL_CPU)?),
            "falco_all" => Tool::Falco(Falco::start(&plan.scap_open, Capture::All, TOOL_CPU)?),
            "mcpwatch" => Tool::Mcpwatch(Agent::start_on(bins, scratch, "config.toml", Some(TOOL_CPU))?),
            _ => Tool::None,
        })
    }

    fn stop(self) -> anyhow::Result<()> {
        match self {
            Tool::None => Ok(()),
            Tool::Falco(f) => f.stop().map(drop),
            Tool::Mcpwatch(a) => a.stop(),
        }
    }
}

/// One loop on the generator's CPU (a watched server of `agent` if given): ns per call.
fn gen_ns(bins: &Bins, scratch: &Scratch, agent: Option<&Agent>, args: &[&str]) -> anyhow::Result<f64> {
    let v = load_on(bins, scratch, Some(GEN_CPU), agent.map(|a| (a, "bench")), args)?;
    v["ns_per_op"].as_f64().context("ns_per_op")
}

/// The interleaved rounds: config -> loop -> samples (ns per call).
fn rounds(bins: &Bins, scratch: &Scratch, plan: &PeerPlan) -> anyhow::Result<Value> {
    let (openat, getppid) = (plan.openat.to_string(), plan.getppid.to_string());
    let mut samples = vec![[Vec::new(), Vec::new(), Vec::new()]; CONFIGS.len()];
    for r in 0..plan.rounds {
        for k in 0..CONFIGS.len() {
            let c = (k + r) % CONFIGS.len();
            eprintln!("bench: side by side, round {}/{}, {}", r + 1, plan.rounds, CONFIGS[c]);
            let tool = Tool::start(CONFIGS[c], bins, scratch, plan)?;
            samples[c][0].push(gen_ns(bins, scratch, None, &["openat", &openat])?);
            samples[c][1].push(gen_ns(bins, scratch, None, &["getppid", &getppid])?);
            if let Tool::Mcpwatch(a) = &tool {
                samples[c][2].push(gen_ns(bins, scratch, Some(a), &["openat", &openat])?);
            }
            tool.stop()?;
        }
    }
    let mut out = serde_json::Map::new();
    for (c, name) in CONFIGS.iter().enumerate() {
        let [o, g, w] = &samples[c];
        out.insert(
            name.to_string(),
            json!({"openat": median(o), "getppid": median(g), "openat_watched": median(w),
                   "samples": {"openat": o, "getppid": g, "openat_watched": w}}),
        );
    }
    Ok(Value::Object(out))
}

/// BPF ns per call of a loop, over the programs the tool loaded (median of
/// loops): per openat (captured; for mcpwatch also not watched) and per
/// getppid (a syscall neither follows: what each tool's program costs every
/// other syscall of the host, apart from the tracepoint's own dispatch).
fn bpf_pass(bins: &Bins, scratch: &Scratch, plan: &PeerPlan) -> anyhow::Result<Value> {
    let _on = bpf_stats::Enabled::new()?;
    let (openat, getppid) = (plan.openat.to_string(), plan.getppid.to_string());
    let per_call = |tool: &Tool, watched: bool, ids: &_, args: &[&str], calls: u64| -> anyhow::Result<f64> {
        let mut v = Vec::new();
        for _ in 0..plan.bpf_loops {
            let agent = match (tool, watched) {
                (Tool::Mcpwatch(a), true) => Some(a),
                _ => None,
            };
            let before = bpf_stats::total(ids)?;
            gen_ns(bins, scratch, agent, args)?;
            v.push((bpf_stats::total(ids)? - before) as f64 / calls as f64);
        }
        Ok(median(&v))
    };
    let mut out = serde_json::Map::new();
    for config in ["falco_openat", "mcpwatch"] {
        eprintln!("bench: side by side, BPF run time, {config}");
        let before = bpf_stats::run_times()?;
        let tool = Tool::start(config, bins, scratch, plan)?;
        let ids = bpf_stats::loaded_since(&before)?;
        let openat_ns = |watched| per_call(&tool, watched, &ids, &["openat", &openat], plan.openat);
        let mut fig = json!({
            "programs": ids.len(),
            "captured_ns": openat_ns(true)?,
            "getppid_ns": per_call(&tool, false, &ids, &["getppid", &getppid], plan.getppid)?,
        });
        if config == "mcpwatch" {
            fig["unwatched_ns"] = openat_ns(false)?.into();
        }
        out.insert(config.into(), fig);
        tool.stop()?;
    }
    Ok(Value::Object(out))
}

/// One unpaced flood under `config`: reader CPU per event, loss, RSS.
fn flood(bins: &Bins, scratch: &Scratch, plan: &PeerPlan, config: &str) -> anyhow::Result<Value> {
    let secs = plan.flood_seconds.to_string();
    let settle = || std::thread::sleep(std::time::Duration::from_secs(2));
    if config == "falco" {
        let f = Falco::start(&plan.scap_open, Capture::Openat, TOOL_CPU)?;
        settle();
        let (idle, cpu0) = (mem_kib(f.pid(), "VmRSS")?, cpu_ns(f.pid())?);
        let g = load_on(bins, scratch, Some(GEN_CPU), None, &["openat-for", &secs])?;
        settle();
        let (cpu, peak) = (cpu_ns(f.pid())? - cpu0, mem_kib(f.pid(), "VmHWM")?);
        let c = f.stop()?;
        return Ok(json!({
            "generated": g["events"], "rate": g["achieved_rate"], "read": c.read, "lost": c.dropped,
            "loss_pct": 100.0 * c.dropped as f64 / c.kernel.max(1) as f64,
            "cpu_ns_per_event": cpu as f64 / c.read.max(1) as f64,
            "rss_idle_kib": idle, "rss_peak_kib": peak,
        }));
    }
    let file = if config == "mcpwatch_alerts" {
        ALERTS_ONLY
    } else {
        "config.toml"
    };
    let a = Agent::start_on(bins, scratch, file, Some(TOOL_CPU))?;
    settle();
    let idle = mem_kib(a.pid(), "VmRSS")?;
    let (ev0, lost0) = a.settled_counts()?;
    let cpu0 = cpu_ns(a.pid())?;
    let g = load_on(
        bins,
        scratch,
        Some(GEN_CPU),
        Some((&a, "bench")),
        &["openat-for", &secs],
    )?;
    let (ev1, lost1) = a.settled_counts()?;
    let (cpu, peak) = (cpu_ns(a.pid())? - cpu0, mem_kib(a.pid(), "VmHWM")?);
    a.stop()?;
    let (read, lost) = (ev1 - ev0, lost1 - lost0);
    Ok(json!({
        "generated": g["events"], "rate": g["achieved_rate"], "read": read, "lost": lost,
        "loss_pct": 100.0 * lost as f64 / (read + lost).max(1) as f64,
        "cpu_ns_per_event": cpu as f64 / read.max(1) as f64,
        "rss_idle_kib": idle, "rss_peak_kib": peak,
    }))
}

/// Floods of each reader configuration, interleaved: runs and medians.
fn floods(bins: &Bins, scratch: &Scratch, plan: &PeerPlan) -> anyhow::Result<Value> {
    const READERS: [&str; 3] = ["falco", "mcpwatch_alerts", "mcpwatch_all"];
    let mut runs = vec![Vec::new(); READERS.len()];
    for r in 0..plan.floods {
        for k in 0..READERS.len() {
            let c = (k + r) % READERS.len();
            eprintln!("bench: side by side, flood {}/{}, {}", r + 1, plan.floods, READERS[c]);
            runs[c].push(flood(bins, scratch, plan, READERS[c])?);
        }
    }
    let mut out = serde_json::Map::new();
    for (c, name) in READERS.iter().enumerate() {
        let med = |k: &str| median(&runs[c].iter().filter_map(|v| v[k].as_f64()).collect::<Vec<_>>());
        out.insert(
            name.to_string(),
            json!({"cpu_ns_per_event": med("cpu_ns_per_event"), "loss_pct": med("loss_pct"), "rate": med("rate"),
                   "rss_idle_kib": med("rss_idle_kib"), "rss_peak_kib": med("rss_peak_kib"), "runs": runs[c]}),
        );
    }
    Ok(Value::Object(out))
}

/// The whole side by side: rounds, BPF pass, floods, and the figures.
pub fn peer(bins: &Bins, scratch: &Scratch, plan: &PeerPlan) -> anyhow::Result<Value> {
    check(&plan.scap_open)?;
    let loops = rounds(bins, scratch, plan)?;
    let bpf = bpf_pass(bins, scratch, plan)?;
    let floods = floods(bins, scratch, plan)?;
    let figures = table::figures(&loops, &bpf, &floods);
    Ok(json!({
        "peer": "falcosecurity/libs scap-open, modern eBPF",
        "scap_open": plan.scap_open,
        "rounds": plan.rounds, "openat": plan.openat, "getppid": plan.getppid,
        "flood_seconds": plan.flood_seconds, "floods": plan.floods,
        "tool_cpu": TOOL_CPU, "generator_cpu": GEN_CPU,
        "loops": loops, "bpf": bpf, "floods_by_reader": floods, "figures": figures,
    }))
}

fn check(scap_open: &Path) -> anyhow::Result<()> {
    if !scap_open.is_file() {
        anyhow::bail!(
            "{}: no scap-open there (built from falcosecurity/libs outside the repository: see the README, Performance)",
            scap_open.display()
        );
    }
    Ok(())
}
