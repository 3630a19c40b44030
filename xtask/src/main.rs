//! `cargo xtask`: set-up, build, run and test mcpwatch with one command each.

mod bench;
mod deploy;
mod fuzz;
mod host;
mod image;
mod install;
mod setup;
mod testenv;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the eBPF build needs (idempotent): nightly rust-src, llvm-22-dev, bpf-linker.
    Setup {
        /// Also install what the integration tests drive (MCP SDK and servers, Debian packages).
        #[arg(long)]
        test_deps: bool,
    },
    /// Build the agent (and its eBPF object).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up if needed, build in release mode and run `mcpwatch agent` with ARGS.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up if needed, then: rustfmt check, clippy (-D warnings) on userspace and
    /// eBPF, unit tests, and the integration tests (root: they load the programs).
    Test {
        /// Only run tests whose name contains this.
        filter: Option<String>,
    },
    /// Measure what the agent costs (root; minutes): unwatched overhead against
    /// no BPF and the floor, watched cost, throughput without loss, CPU and
    /// memory, event-to-alert latency. Prints a table and writes JSON.
    Bench {
        /// Where the JSON report goes.
        #[arg(long, default_value = "target/bench.json")]
        out: PathBuf,
        /// Runs per figure (medians).
        #[arg(long)]
        runs: Option<usize>,
        /// Seconds per throughput step (30 by default).
        #[arg(long)]
        step_seconds: Option<f64>,
        /// The seconds-long smoke run of the test suite instead (figures meaningless).
        #[arg(long)]
        smoke: bool,
        /// Also side by side with Falco's modern eBPF probe: the path of a
        /// `scap-open` built from falcosecurity/libs (outside the repository).
        #[arg(long, value_name = "PATH_TO_SCAP_OPEN")]
        peer_falco: Option<PathBuf>,
        /// Only the side by side with Falco (`--only peer`).
        #[arg(long, requires = "peer_falco", conflicts_with = "only")]
        peer_only: bool,
        /// Only these sections, comma-separated: overhead, throughput,
        /// enforcement, gate, peer (all by default; peer needs --peer-falco).
        #[arg(long, value_name = "SECTION,...")]
        only: Option<bench::Sections>,
        /// Interleaved rounds of the side by side (14 by default).
        #[arg(long)]
        rounds: Option<usize>,
    },
    /// Build in release mode and install the agent, the shipped manifests, a
    /// commented /etc/mcpwatch/config.toml (an existing one is kept) and the
    /// hardened systemd unit (root).
    Install {
        /// Install under this directory instead of / (packaging, a look first).
        #[arg(long, value_name = "DIR")]
        destdir: Option<PathBuf>,
        /// Where the binary goes: PREFIX/bin/mcpwatch.
        #[arg(long, value_name = "DIR", default_value = "/usr/local")]
        prefix: PathBuf,
        /// Install this mcpwatch binary instead of building one in release
        /// mode (one already built: the Quick start test installs the one under test).
        #[arg(long, value_name = "PATH")]
        bin: Option<PathBuf>,
    },
    /// Build the Debian package target/debian/mcpwatch_VERSION_amd64.deb.
    Deb {
        /// Then install it with dpkg, verify it and purge it (root; what
        /// `cargo xtask test` does).
        #[arg(long)]
        check: bool,
    },
    /// Build the container image (FROM scratch, local files only) with podman.
    Image {
        /// The image's name (default localhost/mcpwatch:VERSION).
        #[arg(long)]
        tag: Option<String>,
    },
    /// Render the Helm chart and check it and deploy/kubernetes: Kubernetes
    /// schemas, checkov, the least-privilege promises.
    Deploy {
        /// Regenerate deploy/kubernetes/mcpwatch.yaml from the chart first.
        #[arg(long)]
        write: bool,
    },
    /// Fuzz the parsers of untrusted input with cargo-fuzz (nightly; installs
    /// cargo-fuzz if missing): manifest, hostconfig, jsonrpc, dns, decode.
    Fuzz {
        /// One target only (default: each in turn).
        #[arg(long)]
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
    },
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// Runs a command in the workspace root, failing on a non-zero exit.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    cmd.current_dir(root());
    eprintln!("xtask: {}", describe(cmd));
    let status = cmd.status().with_context(|| format!("spawning {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", describe(cmd));
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

pub fn build(release: bool) -> anyhow::Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--package", "mcpwatch"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    Ok(root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("mcpwatch"))
}

fn test(filter: Option<String>) -> anyhow::Result<()> {
    host::ensure_null()?;
    host::remove_stale_test_pins()?;
    setup::ensure()?;
    testenv::ensure()?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    // The eBPF crates are left out here: built for the host their bins would link std
    // (features unify across the workspace); they get their own clippy run for the BPF
    // target below.
    run(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "agent-ebpf",
        "--exclude",
        "floor-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The eBPF crates, for their own target, with the flags aya-build uses.
    run(Command::new("rustup")
        .args([
            "run",
            "nightly",
            "cargo",
            "clippy",
            "--package",
            "agent-ebpf",
            "--package",
            "floor-ebpf",
            "--bins",
            "--release",
        ])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args(["--target-dir", "target/ebpf-clippy", "--", "-D", "warnings"])
        .env("RUSTFLAGS", "--cfg=bpf_target_arch=\"x86_64\""))?;
    let bin = build(false)?;
    if filter.is_none() {
        // The chart and the plain manifests (no root, no agent; about a minute).
        deploy::check(false)?;
    }
    let filter: Vec<String> = filter.into_iter().collect();
    // Unit tests of every host crate (the eBPF crates' bins have no host `main`).
    run(cargo()
        .args([
            "test",
            "--workspace",
            "--exclude",
            "mcpwatch-tests",
            "--exclude",
            "agent-ebpf",
            "--exclude",
            "floor-ebpf",
            "--",
        ])
        .args(&filter))?;
    // Integration tests load the real programs, one agent at a time.
    run(cargo()
        .args(["test", "--package", "mcpwatch-tests", "--", "--test-threads=1"])
        .args(&filter)
        .env("MCPWATCH_BIN", &bin)
        .env("MCPWATCH_TESTENV", testenv::dir()))?;
    if filter.is_empty() {
        // The process, policy and network-enforcement rooms again, with the agent holding only the
        // systemd unit's capabilities instead of full root.
        run(cargo()
            .args(["test", "--package", "mcpwatch-tests"])
            .args([
                "--test",
                "probe_process",
                "--test",
                "policy_attacks",
                "--test",
                "enforce_network",
            ])
            .args(["--", "--test-threads=1"])
            .env("MCPWATCH_BIN", &bin)
            .env("MCPWATCH_TESTENV", testenv::dir())
            .env("MCPWATCH_LEAST_PRIVILEGE", "1"))?;
    }
    host::check_null_after("the tests")?;
    if filter.is_empty() {
        // The benchmark keeps working: every section once, for seconds.
        bench::smoke()?;
        host::check_null_after("the benchmark smoke run")?;
        install::package_check()?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Setup { test_deps } => {
            setup::install()?;
            if test_deps { testenv::ensure() } else { Ok(()) }
        }
        Cmd::Build { release } => {
            setup::ensure()?;
            build(release).map(drop)
        }
        Cmd::Run { args } => {
            setup::ensure()?;
            let bin = build(true)?;
            let mut c = Command::new(bin);
            c.arg("agent").args(args);
            run(&mut c)
        }
        Cmd::Test { filter } => test(filter),
        Cmd::Install { destdir, prefix, bin } => {
            setup::ensure()?;
            install::install(destdir.as_deref(), &prefix, bin)
        }
        Cmd::Deb { check } => {
            setup::ensure()?;
            match check {
                true => install::package_check(),
                false => install::deb().map(drop),
            }
        }
        Cmd::Image { tag } => {
            setup::ensure()?;
            image::image(&tag.unwrap_or_else(image::default_tag))
        }
        Cmd::Deploy { write } => deploy::check(write),
        Cmd::Fuzz { target, seconds } => fuzz::fuzz(target.as_deref(), seconds),
        Cmd::Bench {
            out,
            runs,
            step_seconds,
            smoke,
            peer_falco,
            peer_only,
            only,
            rounds,
        } => {
            setup::ensure()?;
            if smoke {
                return bench::smoke();
            }
            let mut plan = bench::Plan::FULL;
            plan.runs = runs.unwrap_or(plan.runs);
            plan.step_seconds = step_seconds.unwrap_or(plan.step_seconds);
            plan.latency_seconds = plan.step_seconds;
            let peer = peer_falco.map(|p| bench::PeerPlan::new(p, rounds));
            let sections = if peer_only {
                bench::Sections::PEER
            } else {
                only.unwrap_or(bench::Sections::ALL)
            };
            bench::bench(plan, peer, sections, &root().join(out)).map(drop)
        }
    }
}
