//! The `[enforce]` and `[wrapper]` sections of the configuration file.

use serde::Deserialize;

use super::{Layer, seccomp};
use crate::policy::manifest::Mode;

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EnforceConfig {
    /// The mode of manifests that set none.
    pub default_mode: Mode,
    /// Refuse to start a server in enforce mode when this kernel lacks a
    /// layer it needs (default: start it, with an `enforce.degraded` alert).
    pub refuse_degraded: bool,
    /// Syscalls the seccomp filter fails with EPERM (empty: the built-in list).
    pub seccomp_deny: Vec<String>,
    /// Layers treated as missing on this kernel: tests the degraded path on
    /// a kernel that has them all.
    pub simulate_missing: Vec<String>,
    /// Where the resolver of enforced servers forwards the names their
    /// manifests declare (`ip:port`; default: the first nameserver of
    /// /etc/resolv.conf, port 53).
    pub dns_upstream: Option<String>,
}

impl Default for EnforceConfig {
    fn default() -> Self {
        Self {
            default_mode: Mode::Audit,
            refuse_degraded: false,
            seccomp_deny: Vec::new(),
            simulate_missing: Vec::new(),
            dns_upstream: None,
        }
    }
}

impl EnforceConfig {
    /// Checks the names; the error is (field, reason).
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, n) in self.seccomp_deny.iter().enumerate() {
            if seccomp::number(n).is_none() {
                return Err((
                    format!("enforce.seccomp_deny[{i}]"),
                    format!(
                        "`{n}` is not a syscall the filter knows ({})",
                        seccomp::known().join(", ")
                    ),
                ));
            }
        }
        for (i, n) in self.simulate_missing.iter().enumerate() {
            if Layer::parse(n).is_none() {
                return Err((
                    format!("enforce.simulate_missing[{i}]"),
                    format!("`{n}` is not a layer (landlock, seccomp, cgroup, kill)"),
                ));
            }
        }
        if let Some(u) = &self.dns_upstream
            && u.parse::<std::net::SocketAddr>().is_err()
        {
            return Err((
                "enforce.dns_upstream".into(),
                format!("`{u}` is not an ip:port (e.g. 127.0.0.53:53)"),
            ));
        }
        Ok(())
    }

    /// The resolver's upstream: the setting, else /etc/resolv.conf's first
    /// nameserver, else 127.0.0.53:53.
    pub fn upstream(&self) -> std::net::SocketAddr {
        self.dns_upstream
            .as_deref()
            .and_then(|u| u.parse().ok())
            .or_else(super::resolver::system_upstream)
            .unwrap_or_else(|| ([127, 0, 0, 53], 53).into())
    }

    /// The syscalls the filter denies.
    pub fn deny_list(&self) -> Vec<String> {
        if self.seccomp_deny.is_empty() {
            seccomp::DEFAULT_DENY.iter().map(|s| (*s).to_owned()).collect()
        } else {
            self.seccomp_deny.clone()
        }
    }

    pub fn simulated_missing(&self) -> Vec<Layer> {
        self.simulate_missing.iter().filter_map(|n| Layer::parse(n)).collect()
    }
}

/// `[wrapper]`: read by `mcpwatch exec` itself (the agent may be the problem).
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WrapperConfig {
    /// Refuse to start a server unwatched (agent down, slow, refusing)
    /// instead of starting it with a warning; as `--require-agent` on every
    /// wrapper of the host.
    pub fail_closed: bool,
    /// Where the wrapper reports a server it starts unwatched or refuses.
    pub syslog_socket: std::path::PathBuf,
}

impl Default for WrapperConfig {
    fn default() -> Self {
        Self {
            fail_closed: false,
            syslog_socket: super::failopen::DEV_LOG.into(),
        }
    }
}
