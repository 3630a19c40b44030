//! BPF run time per event: `kernel.bpf_stats_enabled` on for a pass, the
//! programs' `run_time_ns` read with `bpftool prog show -j` before and after
//! a loop, summed over the programs a tool loaded.

use std::{
    collections::{HashMap, HashSet},
    fs,
    process::Command,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Statistics on while it lives; the previous setting back on drop.
pub struct Enabled {
    before: String,
}

impl Enabled {
    pub fn new() -> anyhow::Result<Self> {
        let before = fs::read_to_string(SYSCTL).with_context(|| format!("reading {SYSCTL}"))?;
        fs::write(SYSCTL, "1").with_context(|| format!("writing {SYSCTL}"))?;
        Ok(Self {
            before: before.trim().to_owned(),
        })
    }
}

impl Drop for Enabled {
    fn drop(&mut self) {
        let _ = fs::write(SYSCTL, &self.before);
    }
}

/// Every loaded program: id -> run time so far (ns).
pub fn run_times() -> anyhow::Result<HashMap<u64, u64>> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .context("running bpftool")?;
    if !out.status.success() {
        bail!("bpftool prog show: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("bpftool's JSON")?;
    Ok(v.as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| Some((p["id"].as_u64()?, p["run_time_ns"].as_u64().unwrap_or(0))))
        .collect())
}

/// The programs loaded since `before` was taken (a tool's own).
pub fn loaded_since(before: &HashMap<u64, u64>) -> anyhow::Result<HashSet<u64>> {
    Ok(run_times()?.into_keys().filter(|id| !before.contains_key(id)).collect())
}

/// Run time so far of the programs in `ids`.
pub fn total(ids: &HashSet<u64>) -> anyhow::Result<u64> {
    Ok(run_times()?
        .into_iter()
        .filter(|(id, _)| ids.contains(id))
        .map(|(_, ns)| ns)
        .sum())
}
