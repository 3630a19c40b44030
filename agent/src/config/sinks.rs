//! The `[[sinks]]` of the configuration file: where alerts go (file, syslog,
//! webhook), their spool, retries, batches and document schema.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

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

/// What a sink receives besides alerts.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SinkLevel {
    /// Alerts only.
    #[default]
    Alerts,
    /// Alerts and the lines of the events file's `summary` level (tool
    /// calls with what they touched, activity, watch, loss...).
    Summary,
    /// Alerts and every event line (the events file's `all`): a firehose,
    /// bounded like alerts by the sink's queue, spool and memory.
    All,
}

/// One alert destination. Exactly one of `file`, `syslog`, `webhook`.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Names the sink in metrics, logs and the spool directory.
    pub name: String,
    #[serde(default)]
    pub level: SinkLevel,
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

impl SinkConfig {
    /// Checks the `i`-th sink's settings: the field and the reason when bad.
    pub(super) fn validate(&self, i: usize) -> Result<(), (String, String)> {
        let at = |f: &str| format!("sinks[{i}].{f}");
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !self.name.starts_with('.');
        if !name_ok {
            return Err((
                at("name"),
                "1-64 characters of [A-Za-z0-9._-], not starting with '.'".into(),
            ));
        }
        if self.spool.max_alerts == 0 || self.spool.max_bytes == 0 {
            return Err((at("spool"), "max_alerts and max_bytes must be above 0".into()));
        }
        if self.retry.initial_backoff_ms == 0
            || self.retry.max_backoff_ms < self.retry.initial_backoff_ms
            || self.retry.timeout_ms == 0
        {
            return Err((
                at("retry"),
                "need 0 < initial_backoff_ms <= max_backoff_ms and timeout_ms > 0".into(),
            ));
        }
        match self.kind() {
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
                if sl.format == MessageFormat::Cef && self.level != SinkLevel::Alerts {
                    return Err((
                        at("level"),
                        "CEF carries alerts only: `level = \"alerts\"`, or `format = \"json\"` for summary lines"
                            .into(),
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, EventsFormat};

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(text, std::path::Path::new("test.toml"))
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
    fn a_sink_level_is_alerts_unless_set_and_cef_refuses_summary() {
        let sink = |extra: &str| format!("[[sinks]]\nname = \"a\"\n{extra}\nwebhook = {{ url = \"http://h:1/\" }}");
        assert_eq!(parse(&sink("")).unwrap().sinks[0].level, SinkLevel::Alerts);
        assert_eq!(
            parse(&sink("level = \"summary\"")).unwrap().sinks[0].level,
            SinkLevel::Summary
        );
        assert_eq!(parse(&sink("level = \"all\"")).unwrap().sinks[0].level, SinkLevel::All);
        assert!(
            parse(&sink("level = \"some\""))
                .unwrap_err()
                .to_string()
                .contains("unknown variant")
        );
        let cef = "[[sinks]]\nname = \"a\"\nlevel = \"summary\"\nsyslog = { transport = \"udp\", address = \"h:1\", format = \"cef\" }";
        assert!(parse(cef).unwrap_err().to_string().contains("CEF carries alerts only"));
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
}
