//! `cargo xtask fuzz`: the long run of the parsers' cargo-fuzz targets
//! (`fuzz/`), each for a bounded time. The short run is the proptest
//! properties beside each parser, which `cargo xtask test` runs.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{root, run};

/// Every target in `fuzz/fuzz_targets/`, with the seed inputs kept in the
/// repository (read, never written: libFuzzer adds to the first directory).
pub const TARGETS: [(&str, &[&str]); 5] = [
    ("manifest", &["manifests"]),
    ("hostconfig", &[]),
    ("jsonrpc", &[]),
    ("dns", &[]),
    ("decode", &[]),
];

/// Runs `target` (all when `None`) for `seconds` each; a crash fails with the
/// input libFuzzer saved under `fuzz/artifacts/<target>/`.
pub fn fuzz(target: Option<&str>, seconds: u64) -> anyhow::Result<()> {
    ensure_cargo_fuzz()?;
    let targets: Vec<_> = TARGETS
        .iter()
        .filter(|(t, _)| target.is_none_or(|want| want == *t))
        .collect();
    if targets.is_empty() {
        let names: Vec<_> = TARGETS.iter().map(|(t, _)| *t).collect();
        bail!("no fuzz target {target:?}; there are {}", names.join(", "));
    }
    for (t, seeds) in targets {
        let corpus = root().join("fuzz/corpus").join(t);
        std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
        let mut c = Command::new("rustup");
        c.args(["run", "nightly", "cargo", "fuzz", "run", t])
            // No sanitizer: the parsers are safe Rust (one unaligned read
            // behind a length check), and ASan would double the build of
            // every dependency. Debug assertions on: overflow is a crash.
            .args(["--sanitizer", "none", "--debug-assertions"])
            .arg(&corpus)
            .args(seeds.iter().map(|s| root().join(s)))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .args(["-rss_limit_mb=2048", "-max_len=65536", "-print_final_stats=1"])
            // The agent's build script would build the BPF object: not needed here.
            .env("AYA_BUILD_SKIP", "1");
        run(&mut c)?;
    }
    Ok(())
}

/// Installs cargo-fuzz from crates.io when `cargo fuzz` is not there.
fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}
