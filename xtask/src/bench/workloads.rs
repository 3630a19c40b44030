//! The workloads: the loops of `mcpwatch-load` (bare or as a watched
//! server), `perf bench sched messaging` and a crate build.

use std::{
    fs,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{
    harness::{Agent, Bins, Scratch, pinned},
    plan::{CLOSED_PORT, Plan},
};

/// The small crate `cargo build --release` compiles as a macro workload.
pub const CRATE_SOURCE: &str = r#"
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

trait Shape: Debug { fn area(&self) -> f64; fn name(&self) -> String { format!("{self:?}") } }
#[derive(Debug, Clone)] struct Circle(f64);
#[derive(Debug, Clone)] struct Rect(f64, f64);
impl Shape for Circle { fn area(&self) -> f64 { 3.14159 * self.0 * self.0 } }
impl Shape for Rect { fn area(&self) -> f64 { self.0 * self.1 } }

pub fn stats<T: Copy + Into<f64>>(v: &[T]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x.into()).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x.into() - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

pub fn words(text: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for w in text.split_whitespace() { *m.entry(w.to_lowercase()).or_insert(0) += 1; }
    m
}

pub fn main() {
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

/// `perf` from Debian's linux-perf, installed when missing.
pub fn ensure_perf() -> anyhow::Result<()> {
    crate::testenv::apt_ensure(&["linux-perf"], "for `perf bench sched messaging`")
}

/// Runs the workload binary (wrapped as a watched server when `agent` is
/// given); returns its result object.
pub fn load(bins: &Bins, scratch: &Scratch, watched: Option<&Agent>, args: &[&str]) -> anyhow::Result<Value> {
    load_as(bins, scratch, watched.map(|a| (a, "bench")), args)
}

/// [`load`] wrapped as the server named (`bench`, or `bench-enforce`: the
/// same grants in enforce mode).
pub fn load_as(
    bins: &Bins,
    scratch: &Scratch,
    watched: Option<(&Agent, &str)>,
    args: &[&str],
) -> anyhow::Result<Value> {
    load_on(bins, scratch, None, watched, args)
}

/// [`load_as`], pinned to `cpu` when given (wrapper and workload alike).
pub fn load_on(
    bins: &Bins,
    scratch: &Scratch,
    cpu: Option<u32>,
    watched: Option<(&Agent, &str)>,
    args: &[&str],
) -> anyhow::Result<Value> {
    let result = scratch.path("out/result.json");
    let _ = fs::remove_file(&result);
    let result_s = result.to_string_lossy().into_owned();
    let load = bins.load.to_string_lossy().into_owned();
    let mut argv = vec![load.as_str(), "--result", &result_s];
    argv.extend(args);
    let mut cmd = match watched {
        Some((a, server)) => a.wrap_on(cpu, server, &argv),
        None => {
            let mut c = pinned(cpu, &bins.load);
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

pub fn loop_ns(
    bins: &Bins,
    scratch: &Scratch,
    watched: Option<&Agent>,
    name: &str,
    plan: &Plan,
) -> anyhow::Result<f64> {
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
pub fn build_crate(scratch: &Scratch) -> anyhow::Result<f64> {
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
pub fn messaging(plan: &Plan) -> anyhow::Result<f64> {
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
