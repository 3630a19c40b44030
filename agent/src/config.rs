//! The configuration file (`--config`, TOML): metrics, alert sinks, policy
//! manifest directories, spool and state directories. Every section has
//! defaults that work with no file at all; unknown fields are errors naming
//! the field (a typo must not silently switch a sink off).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

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

/// The document an alert becomes in the JSON sinks.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Schema {
    /// Elastic Common Schema 8.11.
    #[default]
    Ecs,
    /// OCSF 1.6.0 Detection Finding.
    Ocsf,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
            keep: 4,
            format: EventsFormat::default(),
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

/// One alert destination. Exactly one of `file`, `syslog`, `webhook`.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Names the sink in metrics, logs and the spool directory.
    pub name: String,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    pub file: Option<FileSinkConfig>,
    pub syslog: Option<SyslogSinkConfig>,
    pub webhook: Option<WebhookSinkConfig>,
}

/// The destination part of a sink, once validated.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind<'a> {
    File(&'a FileSinkConfig),
    Syslog(&'a SyslogSinkConfig),
    Webhook(&'a WebhookSinkConfig),
}

impl SinkConfig {
    pub fn kind(&self) -> Option<SinkKind<'_>> {
        match (&self.file, &self.syslog, &self.webhook) {
            (Some(f), None, None) => Some(SinkKind::File(f)),
            (None, Some(s), None) => Some(SinkKind::Syslog(s)),
            (None, None, Some(w)) => Some(SinkKind::Webhook(w)),
            _ => None,
        }
    }
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Alerts waiting on disk at most; beyond, new alerts are dropped and counted.
    pub max_alerts: u64,
    pub max_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            max_alerts: 100_000,
            max_bytes: 256 << 20,
        }
    }
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Ceiling of the first wait after a failed delivery; doubles up to
    /// `max_backoff_ms`, each wait drawn at random below it (full jitter).
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// One delivery attempt at most (connect + send + answer).
    pub timeout_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff_ms: 200,
            max_backoff_ms: 30_000,
            timeout_ms: 10_000,
        }
    }
}

impl RetryConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// A file path, or `-` for stdout.
    pub path: PathBuf,
    /// Rotate when the file would grow past this (0: never).
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    /// Rotated files kept (`path.1` newest ... `path.N`).
    #[serde(default = "default_keep")]
    pub keep: u32,
    #[serde(default)]
    pub schema: Schema,
}

fn default_rotate_bytes() -> u64 {
    64 << 20
}

fn default_keep() -> u32 {
    5
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransport {
    Udp,
    Tcp,
    Unix,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MessageFormat {
    /// The alert as an ECS JSON document.
    #[default]
    Json,
    /// ArcSight Common Event Format.
    Cef,
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyslogSinkConfig {
    pub transport: SyslogTransport,
    /// `host:port` for udp/tcp, a socket path for unix (datagram, like /dev/log).
    pub address: String,
    #[serde(default)]
    pub format: MessageFormat,
    /// The JSON message's schema (`format = "json"`).
    #[serde(default)]
    pub schema: Schema,
    /// Syslog facility number (default 13, "log audit").
    #[serde(default = "default_facility")]
    pub facility: u8,
    /// APP-NAME of the RFC 5424 header.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// The IANA private enterprise number in the SD-ID (`mcpwatch@<n>`):
    /// an organisation sets its own; the default, 32473, is the number
    /// RFC 5612 reserves for documentation and examples.
    #[serde(default = "default_enterprise_number")]
    pub enterprise_number: u32,
}

fn default_enterprise_number() -> u32 {
    32473
}

fn default_facility() -> u8 {
    13
}

fn default_app_name() -> String {
    "mcpwatch".into()
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// POST the ECS document as `application/json`.
    #[default]
    Json,
    /// Splunk HTTP Event Collector (`/services/collector/event`).
    SplunkHec,
    /// Elasticsearch `_bulk` (one `create` action per alert, `_id` = alert id).
    ElasticBulk,
}

impl WebhookFormat {
    /// Formats that carry many alerts in one request.
    pub fn batches(self) -> bool {
        matches!(self, WebhookFormat::SplunkHec | WebhookFormat::ElasticBulk)
    }
}

/// How many alerts one request may carry (`splunk_hec`, `elastic_bulk`).
/// A request takes what waits when the previous one is answered, up to
/// these caps: no alert is held back to fill a batch.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    pub max_events: usize,
    /// Bytes of the alerts' spooled form; one alert always goes alone.
    pub max_bytes: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_events: 100,
            max_bytes: 1 << 20,
        }
    }
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    pub url: String,
    #[serde(default)]
    pub format: WebhookFormat,
    /// The index: `elastic_bulk`'s (default `mcpwatch-alerts`, may be a data
    /// stream), or `splunk_hec`'s (default: the token's default index).
    pub index: Option<String>,
    /// Splunk HEC `source`.
    #[serde(default = "default_hec_source")]
    pub source: String,
    /// Splunk HEC `sourcetype`.
    #[serde(default = "default_hec_sourcetype")]
    pub sourcetype: String,
    #[serde(default)]
    pub batch: BatchConfig,
    /// The document each alert becomes.
    #[serde(default)]
    pub schema: Schema,
    pub auth: Option<AuthConfig>,
    /// Extra PEM CA certificate(s) to trust for https (a private SIEM CA).
    pub ca_file: Option<PathBuf>,
}

/// `elastic_bulk`'s index when none is set.
pub const DEFAULT_ELASTIC_INDEX: &str = "mcpwatch-alerts";

fn default_hec_source() -> String {
    "mcpwatch".into()
}

fn default_hec_sourcetype() -> String {
    "mcpwatch:alert".into()
}

/// An authorization header whose value is read from a file or an environment
/// variable, never from the config file itself, and never logged.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default = "default_auth_header")]
    pub header: String,
    pub value_file: Option<PathBuf>,
    pub value_env: Option<String>,
}

fn default_auth_header() -> String {
    "Authorization".into()
}

/// `host:port` where host is an IP address (IPv6 in brackets) or a DNS name
/// (resolved at connect time, not here: the SIEM may not resolve yet).
fn is_host_port(s: &str) -> bool {
    if s.parse::<SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    port.parse::<u16>().is_ok_and(|p| p > 0) && host.len() <= 253 && host.trim_end_matches('.').split('.').all(label_ok)
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
            let at = |f: &str| format!("sinks[{i}].{f}");
            let name_ok = !s.name.is_empty()
                && s.name.len() <= 64
                && s.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !s.name.starts_with('.');
            if !name_ok {
                return Err((
                    at("name"),
                    "1-64 characters of [A-Za-z0-9._-], not starting with '.'".into(),
                ));
            }
            if !names.insert(&s.name) {
                return Err((at("name"), format!("`{}` names two sinks", s.name)));
            }
            if s.spool.max_alerts == 0 || s.spool.max_bytes == 0 {
                return Err((at("spool"), "max_alerts and max_bytes must be above 0".into()));
            }
            if s.retry.initial_backoff_ms == 0
                || s.retry.max_backoff_ms < s.retry.initial_backoff_ms
                || s.retry.timeout_ms == 0
            {
                return Err((
                    at("retry"),
                    "need 0 < initial_backoff_ms <= max_backoff_ms and timeout_ms > 0".into(),
                ));
            }
            match s.kind() {
                None => return Err((at("{file,syslog,webhook}"), "exactly one destination is needed".into())),
                Some(SinkKind::File(f)) if f.path.as_os_str().is_empty() => {
                    return Err((at("file.path"), "empty path".into()));
                }
                Some(SinkKind::Syslog(sl)) => {
                    if sl.transport != SyslogTransport::Unix && !is_host_port(&sl.address) {
                        return Err((
                            at("syslog.address"),
                            format!("`{}` is not host:port (a name, an IPv4 address or [IPv6])", sl.address),
                        ));
                    }
                    if sl.enterprise_number == 0 {
                        return Err((
                            at("syslog.enterprise_number"),
                            "a private enterprise number (0 is reserved)".into(),
                        ));
                    }
                    if sl.format == MessageFormat::Cef && sl.schema != Schema::Ecs {
                        return Err((at("syslog.schema"), "a schema for `format = \"json\"` only".into()));
                    }
                    if sl.facility > 23 {
                        return Err((at("syslog.facility"), "0-23".into()));
                    }
                }
                Some(SinkKind::Webhook(w)) => {
                    let url = reqwest::Url::parse(&w.url).map_err(|e| (at("webhook.url"), e.to_string()))?;
                    if !matches!(url.scheme(), "http" | "https") {
                        return Err((at("webhook.url"), "http or https only".into()));
                    }
                    if w.batch.max_events == 0 || w.batch.max_bytes == 0 {
                        return Err((at("webhook.batch"), "max_events and max_bytes must be above 0".into()));
                    }
                    if let Some(a) = &w.auth
                        && a.value_file.is_some() == a.value_env.is_some()
                    {
                        return Err((at("webhook.auth"), "exactly one of value_file, value_env".into()));
                    }
                }
                Some(SinkKind::File(_)) => {}
            }
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

    /// The delivery example of the README's Alert delivery section.
    #[test]
    fn the_readme_delivery_example_parses() {
        let c = parse(
            r#"
            [[sinks]]
            name = "siem"
            syslog = { transport = "tcp", address = "siem.example.com:514", format = "cef" }
            [[sinks]]
            name = "splunk"
            retry = { initial_backoff_ms = 500, max_backoff_ms = 60000, timeout_ms = 10000 }
            [sinks.webhook]
            url = "https://splunk.example.com:8088/services/collector/event"
            format = "splunk_hec"
            index = "security"
            sourcetype = "mcpwatch:alert"
            batch = { max_events = 200 }
            auth = { value_file = "/etc/mcpwatch/hec.token" }
            [[sinks]]
            name = "lake"
            [sinks.webhook]
            url = "https://es.example.com:9200/_bulk"
            format = "elastic_bulk"
            index = "logs-mcpwatch-default"
            schema = "ocsf"
            auth = { value_env = "ES_AUTH" }
            [events]
            format = "ocsf"
            "#,
        )
        .unwrap();
        let Some(SinkKind::Webhook(hec)) = c.sinks[1].kind() else {
            panic!()
        };
        assert_eq!(
            (hec.index.as_deref(), hec.batch.max_events, hec.batch.max_bytes),
            (Some("security"), 200, 1 << 20)
        );
        assert_eq!(hec.source, "mcpwatch");
        let Some(SinkKind::Webhook(lake)) = c.sinks[2].kind() else {
            panic!()
        };
        assert_eq!(lake.schema, Schema::Ocsf);
        assert_eq!(c.events.format, EventsFormat::Ocsf);
        let cef_ocsf = "[[sinks]]\nname = \"a\"\nsyslog = { transport = \"udp\", address = \"h:1\", format = \"cef\", schema = \"ocsf\" }";
        assert!(parse(cef_ocsf).unwrap_err().to_string().contains("syslog.schema"));
    }

    #[test]
    fn syslog_targets_may_be_host_names() {
        for ok in [
            "siem.example.com:514",
            "siem:6514",
            "10.0.0.5:514",
            "[::1]:514",
            "siem.example.com.:514",
        ] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in [
            "siem.example.com",
            "siem:0",
            "siem:99999",
            ":514",
            "a..b:514",
            "-x.y:514",
            "a b:514",
            "::1:514",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
        let text = "[[sinks]]\nname = \"a\"\nsyslog = { transport = \"udp\", address = \"siem.example.com:514\" }";
        parse(text).unwrap();
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
}
