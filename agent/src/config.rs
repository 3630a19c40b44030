//! The configuration file (`--config`, TOML): metrics, alert sinks, policy
//! manifest directories, spool and state directories. Every section has
//! defaults that work with no file at all; unknown fields are errors naming
//! the field (a typo must not silently switch a sink off).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

mod sinks;
pub use sinks::*;

/// Where the agent looks when `--config` is not given; a missing file there is fine.
pub const DEFAULT_CONFIG: &str = "/etc/mcpwatch/config.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mcpwatch";
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9464";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{}: field `{field}`: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where each sink keeps its spool (`<spool_dir>/<sink name>/`).
    /// Default: `<state_dir>/spool`.
    pub spool_dir: Option<PathBuf>,
    /// The agent's persistent state.
    pub state_dir: PathBuf,
    pub metrics: MetricsConfig,
    pub policy: PolicyConfig,
    pub sinks: Vec<SinkConfig>,
    /// The events file (`--events-out`).
    pub events: EventsConfig,
    pub servers: ServersConfig,
    pub kernel: KernelConfig,
    /// Enforcement: the default mode, the seccomp list, degraded kernels.
    pub enforce: crate::enforce::config::EnforceConfig,
    /// `mcpwatch exec`: fail closed, where it reports.
    pub wrapper: crate::enforce::config::WrapperConfig,
    /// Seconds between `agent.heartbeat` alerts (0: none).
    pub heartbeat_s: u64,
}

/// Bounds on what servers leave in the agent: unprivileged users register
/// names at will through the wrapper.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServersConfig {
    /// Server names one non-root user may have registered and not yet
    /// forgotten; beyond, a registration is refused.
    pub max_per_uid: usize,
    /// Seconds after a server's last process exited before its name, state
    /// and metric series are forgotten (a final scrape sees the last values).
    pub forget_after_s: u64,
}

impl Default for ServersConfig {
    fn default() -> Self {
        Self {
            max_per_uid: 64,
            forget_after_s: 300,
        }
    }
}

/// The kernel objects (`--pin`, `--keep-sensors-on-exit`).
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KernelConfig {
    /// The bpffs directory the maps and links are pinned in (default
    /// `/sys/fs/bpf/mcpwatch`).
    pub pin_dir: Option<PathBuf>,
    /// Leave them pinned and attached at a clean stop, for the next agent.
    pub keep_sensors_on_exit: bool,
}

/// Bounds of the events file: rotated past `max_bytes` (0: never), `keep`
/// rotated files kept; the disk it can take is `(keep + 1) * max_bytes`.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    pub max_bytes: u64,
    pub keep: u32,
    /// The lines' schema: the agent's own (`mcpwatch`) or OCSF.
    pub format: EventsFormat,
    /// Which lines are written (`output::summary`).
    pub level: EventsLevel,
}

/// How much of what the servers do becomes lines.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EventsLevel {
    /// Alerts, the agent's own lines (loss) and the servers' starts and exits only.
    Alerts,
    /// Alerts, plus one line per tool call and per server exit saying what
    /// it touched (counts and first examples of files, hosts, programs).
    Summary,
    /// Every event (a first `npx -y` launch alone writes thousands of lines).
    #[default]
    All,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EventsFormat {
    /// The agent's own lines (`"kind":"exec"`...).
    #[default]
    Mcpwatch,
    /// OCSF 1.6.0 events (see `output::format::ocsf`).
    Ocsf,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
            keep: 4,
            format: EventsFormat::default(),
            level: EventsLevel::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            spool_dir: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            metrics: MetricsConfig::default(),
            policy: PolicyConfig::default(),
            sinks: Vec::new(),
            events: EventsConfig::default(),
            servers: ServersConfig::default(),
            kernel: KernelConfig::default(),
            enforce: Default::default(),
            wrapper: Default::default(),
            heartbeat_s: 300,
        }
    }
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// `/metrics`, `/healthz` and `/readyz` are served here (loopback by default).
    pub address: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            address: DEFAULT_METRICS_ADDRESS.parse().expect("valid default address"),
        }
    }
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Directories holding server manifests (consumed by the policy stage).
    pub manifest_dirs: Vec<PathBuf>,
    /// Repeats of an alert within this many seconds are folded into one
    /// summary with a count.
    pub alert_window_s: u64,
    /// Distinct alerts of one rule for one server per window before the rest
    /// are folded too (flood control).
    pub alert_distinct_max: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let limits = crate::policy::dedup::Limits::default();
        Self {
            manifest_dirs: Vec::new(),
            alert_window_s: limits.window_ns / 1_000_000_000,
            alert_distinct_max: limits.distinct_max,
        }
    }
}

impl PolicyConfig {
    pub fn limits(&self) -> crate::policy::dedup::Limits {
        crate::policy::dedup::Limits {
            window_ns: self.alert_window_s.max(1).saturating_mul(1_000_000_000),
            distinct_max: self.alert_distinct_max,
        }
    }
}

impl Config {
    /// Loads the file at `path`. `explicit`: given with `--config` (then a
    /// missing file is an error; the default path may be absent).
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(Config::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        cfg.validate().map_err(|(field, reason)| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            reason,
        })?;
        Ok(cfg)
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir.clone().unwrap_or_else(|| self.state_dir.join("spool"))
    }

    fn validate(&self) -> Result<(), (String, String)> {
        self.enforce.validate()?;
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.sinks.iter().enumerate() {
            if !names.insert(&s.name) {
                return Err((format!("sinks[{i}].name"), format!("`{}` names two sinks", s.name)));
            }
            s.validate(i)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.metrics.address.to_string(), "127.0.0.1:9464");
        assert!(c.metrics.address.ip().is_loopback());
        assert_eq!(c.spool_dir(), Path::new("/var/lib/mcpwatch/spool"));
    }

    #[test]
    fn missing_default_file_is_fine_missing_explicit_is_not() {
        let p = Path::new("/nonexistent/mcpwatch.toml");
        assert_eq!(Config::load(p, false).unwrap(), Config::default());
        let e = Config::load(p, true).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/mcpwatch.toml"), "{e}");
    }

    #[test]
    fn full_file_parses() {
        let c = parse(
            r#"
            state_dir = "/tmp/s"
            [metrics]
            address = "127.0.0.1:9999"
            [policy]
            manifest_dirs = ["/etc/mcpwatch/manifests", "/opt/m"]
            alert_distinct_max = 500
            [[sinks]]
            name = "siem"
            spool = { max_alerts = 10 }
            syslog = { transport = "tcp", address = "127.0.0.1:514", format = "cef" }
            [[sinks]]
            name = "hec"
            [sinks.webhook]
            url = "https://splunk.example:8088/services/collector/event"
            format = "splunk_hec"
            auth = { value_env = "HEC_TOKEN" }
            [[sinks]]
            name = "local"
            file = { path = "/var/log/mcpwatch/alerts.jsonl" }
            "#,
        )
        .unwrap();
        assert_eq!(c.policy.manifest_dirs.len(), 2);
        assert_eq!(c.policy.alert_distinct_max, 500);
        assert_eq!(c.policy.limits().window_ns, 60_000_000_000, "the default window");
        assert_eq!(c.spool_dir(), Path::new("/tmp/s/spool"));
        assert_eq!(c.sinks[0].spool.max_alerts, 10);
        assert_eq!(c.sinks[0].spool.max_bytes, SpoolConfig::default().max_bytes);
        assert!(matches!(c.sinks[1].kind(), Some(SinkKind::Webhook(w)) if w.format == WebhookFormat::SplunkHec));
        assert!(matches!(c.sinks[2].kind(), Some(SinkKind::File(f)) if f.keep == 5));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[metrics]\nadress = \"127.0.0.1:1\"", "adress"),
            ("[metrics]\naddress = \"nowhere\"", "address"),
            ("[[sinks]]\nname = \"a\"\n", "sinks[0].{file,syslog,webhook}"),
            (
                "[[sinks]]\nname = \"a\"\nsyslog = { transport = \"tcp\", address = \"x\" }",
                "sinks[0].syslog.address",
            ),
            (
                "[[sinks]]\nname = \"a\"\nsyslog = { transport = \"sctp\", address = \"x\" }",
                "sctp",
            ),
            (
                "[[sinks]]\nname = \"a\"\nwebhook = { url = \"ftp://x\" }",
                "sinks[0].webhook.url",
            ),
            ("[[sinks]]\nname = \"a/b\"\nfile = { path = \"/x\" }", "sinks[0].name"),
            (
                "[[sinks]]\nname = \"a\"\nfile = { path = \"/x\", rotate = 1 }",
                "rotate",
            ),
        ];
        for (text, field) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(field), "{text:?}: {e}");
        }
    }

    /// The commented configuration the package installs: as shipped it is
    /// the defaults; every `# key = value` uncommented gives the defaults
    /// too (the comments tell the truth); the `##` examples are valid.
    #[test]
    fn the_shipped_config_states_the_defaults() {
        let text = include_str!("../../packaging/config.toml");
        let p = Path::new("packaging/config.toml");
        assert_eq!(Config::parse(text, p).unwrap(), Config::default());
        let setting = regex::Regex::new(r"^(\[\[?[a-z]+\]\]?|[a-z_]+ = .+)$").unwrap();
        let uncomment = |text: &str, prefix: &str| -> (String, usize) {
            let mut n = 0;
            let out = text
                .lines()
                .map(|l| match l.strip_prefix(prefix).filter(|r| setting.is_match(r)) {
                    Some(r) => {
                        n += 1;
                        r.to_owned()
                    }
                    None => l.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("\n");
            (out, n)
        };
        let (all, n) = uncomment(text, "# ");
        assert!(n >= 20, "only {n} settings uncommented");
        assert_eq!(Config::parse(&all, p).unwrap(), Config::default());
        let (examples, n) = uncomment(&all, "## ");
        assert!(n >= 5, "only {n} examples uncommented");
        let c = Config::parse(&examples, p).unwrap();
        assert_eq!(c.sinks.len(), 2);
    }
}
