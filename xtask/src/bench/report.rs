//! The report: the machine it ran on, and the figures as Markdown tables.

use std::{
    fs,
    io::Read as _,
    process::{Command, Stdio},
    thread,
};

use serde_json::{Value, json};

use super::plan::{IDLE_SERVERS, LOOPS};

pub fn machine() -> Value {
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

pub fn pct(r: f64) -> String {
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
    for (section, part) in [
        ("overhead", overhead as fn(&Value) -> String),
        ("throughput", throughput),
        ("enforcement", enforcement),
    ] {
        if !r[section].is_null() {
            s += &part(r);
        }
    }
    if !r["gate"].is_null() {
        s += &super::gate::table(&r["gate"]);
    }
    s
}

/// Sections 1 and 2.
fn overhead(r: &Value) -> String {
    let mut s = String::new();
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
    s
}

/// Sections 3 to 5.
fn throughput(r: &Value) -> String {
    let mut s = String::new();
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

/// Section 6.
fn enforcement(r: &Value) -> String {
    let mut s = String::new();
    s += "\n| enforcement (the same watched server) | audit mode | enforce mode | enforce / audit |\n";
    s += "|---|---|---|---|\n";
    for (name, label, unit) in [
        ("startup", "start-up: `mcpwatch exec -- /bin/true`, spawn to exit", 1e6),
        ("openat", "openat + close of a declared file (Landlock, seccomp)", 1.0),
        (
            "connect",
            "socket + connect + close, declared address (cgroup allowlist)",
            1.0,
        ),
    ] {
        let e = &r["enforcement"][name];
        let f = |k: &str| e[k].as_f64().unwrap_or(f64::NAN) / unit;
        let fmt = |v: f64| {
            if unit > 1.0 {
                format!("{v:.2} ms")
            } else {
                format!("{v:.0} ns")
            }
        };
        s += &format!(
            "| {label} | {} | {} | {:.3}x ({}) |\n",
            fmt(f("audit_ns")),
            fmt(f("enforce_ns")),
            e["ratio"].as_f64().unwrap_or(f64::NAN),
            pct(e["ratio"].as_f64().unwrap_or(f64::NAN)),
        );
    }
    s
}
