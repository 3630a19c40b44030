//! Enforcement: what the kernel and the wrapper are told to deny for a
//! server whose manifest is in `enforce` mode.
//!
//! `sandbox` compiles a server's grants into what the wrapper applies before
//! it execs the server (a Landlock ruleset, a seccomp filter); `apply` is the
//! wrapper's side; `seccomp` the filter; `check` what this kernel can
//! enforce; `config` the `[enforce]` and `[wrapper]` settings; `failopen`
//! how the wrapper reports a server it starts unwatched; `cgroup` the
//! per-server cgroup network allowlist (`allowlist` what it allows,
//! `resolver` the DNS resolver that allows declared names' addresses); `kill`
//! what the kernel kills an unsandboxed enforced server for.

pub mod allowlist;
pub mod apply;
pub mod cgroup;
pub mod check;
pub mod config;
pub mod failopen;
pub mod identity;
pub mod kill;
pub mod resolver;
pub mod sandbox;
pub mod seccomp;

use serde::{Deserialize, Serialize};

/// A layer that blocks: the wrapper's Landlock and seccomp, `Cgroup` (the
/// network allowlist in a per-server cgroup) and `Kill` (in-kernel kill of
/// servers the agent did not launch).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Landlock,
    Seccomp,
    Cgroup,
    Kill,
}

impl Layer {
    pub const ALL: [Layer; 4] = [Layer::Landlock, Layer::Seccomp, Layer::Cgroup, Layer::Kill];

    pub fn name(self) -> &'static str {
        match self {
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
            Layer::Cgroup => "cgroup",
            Layer::Kill => "kill",
        }
    }

    pub fn parse(s: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|l| l.name() == s)
    }
}
