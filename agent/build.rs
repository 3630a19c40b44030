//! Builds the eBPF object (`agent-ebpf`) with aya-build and leaves it in OUT_DIR.
//!
//! With `AYA_BUILD_SKIP=1` (check-only builds, clippy without the eBPF
//! toolchain) an empty placeholder is written instead; the agent then refuses
//! to load it with a clear error.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let out_dir = std::env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?;
    let skip = std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        let object = std::path::Path::new(&out_dir).join("mcpwatch");
        std::fs::write(&object, b"").context("writing placeholder eBPF object")?;
    }
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    // Every source the object is built from: a directory in rerun-if-changed
    // does not catch edits to the files inside it here.
    for dir in ["../agent-ebpf/src", "../agent-ebpf/src/probes", "../agent-common/src"] {
        let dir = std::path::Path::new(&manifest_dir).join(dir);
        for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            println!("cargo:rerun-if-changed={}", entry?.path().display());
        }
    }
    println!(
        "cargo:rerun-if-changed={}",
        std::path::Path::new(&manifest_dir)
            .join("../agent-ebpf/Cargo.toml")
            .display()
    );
    // aya-build turns every line the inner cargo prints on stderr into a
    // `cargo:warning`: its ~35 "Compiling ..." lines were repeated on every
    // build of the agent. A quiet inner cargo still reports its errors, and
    // the compiler's own diagnostics reach us through its JSON stdout.
    // SAFETY: the build script is single-threaded here; no other thread reads
    // the environment while it is changed.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    let ebpf_dir = std::path::Path::new(&manifest_dir).join("../agent-ebpf");
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [Package {
            name: "agent-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context("building the eBPF programs (run `cargo xtask setup` if the toolchain is missing)")
}
