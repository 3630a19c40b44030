//! Builds the benchmark's floor object (`floor-ebpf`) with aya-build and
//! leaves it in OUT_DIR, where `src/floor.rs` embeds it.
//!
//! With `AYA_BUILD_SKIP=1` (check-only builds, clippy without the eBPF
//! toolchain) an empty placeholder is written instead; `mcpwatch-load floor`
//! then refuses to load it with a clear error.
use std::path::Path;

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let out_dir = std::env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?;
    let skip = std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        std::fs::write(Path::new(&out_dir).join("floor"), b"").context("writing placeholder eBPF object")?;
    }
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let manifest_dir = Path::new(&manifest_dir);
    // Every source the object is built from: a directory in rerun-if-changed
    // does not catch edits to the files inside it here.
    for dir in ["floor-ebpf/src", "../agent-common/src"] {
        let dir = manifest_dir.join(dir);
        for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            println!("cargo:rerun-if-changed={}", entry?.path().display());
        }
    }
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("floor-ebpf/Cargo.toml").display()
    );
    // Quiet inner cargo: aya-build repeats its stderr as build-script
    // warnings (see agent/build.rs); errors and diagnostics still show.
    // SAFETY: the build script is single-threaded here.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    let ebpf_dir = manifest_dir.join("floor-ebpf");
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [Package {
            name: "floor-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context("building the floor's eBPF program (run `cargo xtask setup` if the toolchain is missing)")
}
