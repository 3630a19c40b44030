//! `cargo xtask image`: the agent's container image, built from local files
//! only by packaging/image/build.sh (`FROM scratch`: no base image is pulled)
//! with podman, from the release binary.

use std::process::Command;

use crate::{root, run, testenv};

/// What building and running the image needs (Debian): podman, and runc
/// because crun cannot start containers on every kernel/cgroup set-up.
pub const APT_PACKAGES: &[&str] = &["podman", "runc"];

/// The tag `cargo xtask image` gives by default.
pub fn default_tag() -> String {
    format!("localhost/mcpwatch:{}", env!("CARGO_PKG_VERSION"))
}

pub fn image(tag: &str) -> anyhow::Result<()> {
    testenv::apt_ensure(APT_PACKAGES, "to build the image")?;
    let bin = crate::build(true)?;
    run(Command::new("sh")
        .arg(root().join("packaging/image/build.sh"))
        .arg(&bin)
        .arg(tag))?;
    println!("built {tag}: `podman save {tag} | ...` or `podman push {tag} REGISTRY/mcpwatch:TAG`");
    Ok(())
}
