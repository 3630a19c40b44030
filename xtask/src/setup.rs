//! What the eBPF build needs, installed idempotently.
//!
//! - rust-src for the nightly toolchain (aya-build builds the programs with
//!   `-Z build-std=core`);
//! - Debian's llvm-22-dev (bpf-linker links against LLVM 22);
//! - bpf-linker, built from crates.io against that LLVM.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::run;

const LLVM_PACKAGE: &str = "llvm-22-dev";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13.0";

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn has_nightly() -> bool {
    output(Command::new("rustup").args(["toolchain", "list"]))
        .is_some_and(|s| s.lines().any(|l| l.starts_with("nightly")))
}

fn has_rust_src() -> bool {
    output(Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))
        .is_some_and(|s| s.lines().any(|l| l.starts_with("rust-src")))
}

fn has_llvm() -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", LLVM_PACKAGE]))
        .is_some_and(|s| s.contains("install ok installed"))
        && std::path::Path::new(LLVM_PREFIX).join("lib").exists()
}

fn has_bpf_linker() -> bool {
    output(Command::new("bpf-linker").arg("--version")).is_some_and(|s| s.contains(BPF_LINKER_VERSION))
}

/// Whether everything is in place.
pub fn ready() -> bool {
    has_nightly() && has_rust_src() && has_llvm() && has_bpf_linker()
}

/// Installs what is missing; quiet when nothing is.
pub fn ensure() -> anyhow::Result<()> {
    if ready() { Ok(()) } else { install() }
}

/// Installs everything that is missing, saying what it does.
pub fn install() -> anyhow::Result<()> {
    if !has_nightly() {
        eprintln!("xtask setup: installing the nightly toolchain");
        run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))
            .context("the eBPF programs need a nightly toolchain")?;
    }
    if !has_rust_src() {
        eprintln!("xtask setup: adding rust-src to nightly");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    if !has_llvm() {
        eprintln!("xtask setup: installing {LLVM_PACKAGE} from Debian");
        let sudo = if nix_is_root() { None } else { Some("sudo") };
        let apt = |args: &[&str]| {
            let mut c = Command::new(sudo.unwrap_or("apt-get"));
            if sudo.is_some() {
                c.arg("apt-get");
            }
            c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            c
        };
        run(&mut apt(&["update", "-qq"]))?;
        run(&mut apt(&["install", "-y", "-qq", LLVM_PACKAGE]))?;
    }
    if !has_bpf_linker() {
        eprintln!("xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about 3 minutes)");
        run(Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--force",
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", LLVM_PREFIX))?;
    }
    if !ready() {
        bail!("set-up finished but the toolchain is still incomplete");
    }
    eprintln!("xtask setup: ready");
    Ok(())
}

fn nix_is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}
