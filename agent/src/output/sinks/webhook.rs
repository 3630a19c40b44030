//! HTTP webhook sink: one POST per alert, as plain ECS JSON, a Splunk HEC
//! event or an Elasticsearch `_bulk` request. TLS through rustls (webpki
//! roots plus an optional private CA). The auth header's value is read once
//! from a file or an environment variable and marked sensitive, so it never
//! appears in logs or debug output.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::json;

use crate::{
    alerts::Alert,
    config::{AuthConfig, WebhookFormat, WebhookSinkConfig},
    output::format::ecs,
};

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("reading the auth value from {what}: {reason}")]
    Auth { what: String, reason: String },
    #[error("reading the CA file {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("bad url: {0}")]
    Url(String),
    #[error("building the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("POST failed: {0}")]
    Send(#[source] reqwest::Error),
    #[error("the receiver answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("Elasticsearch rejected the document: {0}")]
    Rejected(String),
}

pub struct WebhookSink {
    client: reqwest::Client,
    url: reqwest::Url,
    format: WebhookFormat,
    index: String,
    auth: Option<(HeaderName, HeaderValue)>,
}

fn auth_header(a: &AuthConfig) -> Result<(HeaderName, HeaderValue), WebhookError> {
    let (what, raw) = match (&a.value_file, &a.value_env) {
        (Some(p), _) => (
            p.display().to_string(),
            std::fs::read_to_string(p).map_err(|e| e.to_string()),
        ),
        (None, Some(var)) => (format!("${var}"), std::env::var(var).map_err(|_| "not set".to_owned())),
        (None, None) => ("nothing".into(), Err("value_file or value_env is needed".into())),
    };
    let fail = |reason: String| WebhookError::Auth {
        what: what.clone(),
        reason,
    };
    let raw = raw.map_err(fail)?;
    let name = HeaderName::from_bytes(a.header.as_bytes()).map_err(|e| fail(e.to_string()))?;
    let mut value = HeaderValue::from_str(raw.trim_end_matches(['\r', '\n'])).map_err(|e| fail(e.to_string()))?;
    value.set_sensitive(true);
    Ok((name, value))
}

impl WebhookSink {
    pub fn new(cfg: &WebhookSinkConfig, timeout: Duration) -> Result<Self, WebhookError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A fresh connection per alert after an outage, not a stale pooled one.
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("mcpwatch/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cfg.ca_file {
            let fail = |reason: String| WebhookError::Ca {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail(e.to_string()))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            client: builder.build().map_err(WebhookError::Client)?,
            url: reqwest::Url::parse(&cfg.url).map_err(|e| WebhookError::Url(e.to_string()))?,
            format: cfg.format,
            index: cfg.index.clone(),
            auth: cfg.auth.as_ref().map(auth_header).transpose()?,
        })
    }

    /// The request body and content type for an alert.
    pub fn body(&self, alert: &Alert) -> (Vec<u8>, &'static str) {
        let doc = ecs::to_ecs(alert);
        match self.format {
            WebhookFormat::Json => (doc.to_string().into_bytes(), "application/json"),
            WebhookFormat::SplunkHec => {
                let time = humantime::parse_rfc3339(&alert.ts)
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs_f64());
                let ev = json!({
                    "time": time,
                    "host": alert.host,
                    "source": "mcpwatch",
                    "sourcetype": "mcpwatch:alert",
                    "event": doc,
                });
                (ev.to_string().into_bytes(), "application/json")
            }
            WebhookFormat::ElasticBulk => {
                // `_id` is the alert id: a replay after an unanswered request
                // overwrites instead of duplicating.
                let action = json!({ "index": { "_index": self.index, "_id": alert.id } });
                (format!("{action}\n{doc}\n").into_bytes(), "application/x-ndjson")
            }
        }
    }

    pub async fn deliver(&mut self, alert: &Alert) -> Result<(), WebhookError> {
        let (body, ctype) = self.body(alert);
        let mut req = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, ctype)
            .header("x-mcpwatch-alert-id", alert.id.as_str())
            .body(body);
        if let Some((name, value)) = &self.auth {
            req = req.header(name.clone(), value.clone());
        }
        let resp = req.send().await.map_err(WebhookError::Send)?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(WebhookError::Status {
                status: status.as_u16(),
                body: text.chars().take(200).collect(),
            });
        }
        if self.format == WebhookFormat::ElasticBulk {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if v["errors"] != json!(false) {
                return Err(WebhookError::Rejected(text.chars().take(300).collect()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::format::ecs::tests::full_alert;

    fn sink(format: WebhookFormat) -> WebhookSink {
        let cfg = WebhookSinkConfig {
            url: "http://127.0.0.1:1/x".into(),
            format,
            index: "idx".into(),
            auth: None,
            ca_file: None,
        };
        WebhookSink::new(&cfg, Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn shapes_of_the_three_formats() {
        let a = full_alert();
        let (b, t) = sink(WebhookFormat::ElasticBulk).body(&a);
        assert_eq!(t, "application/x-ndjson");
        let text = String::from_utf8(b).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0], json!({"index": {"_index": "idx", "_id": "123-4"}}));
        assert_eq!(ecs::from_ecs(&lines[1]).unwrap(), a);
        assert!(text.ends_with('\n'));
        let (b, _) = sink(WebhookFormat::SplunkHec).body(&a);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["sourcetype"], "mcpwatch:alert");
        assert!(v["time"].as_f64().unwrap() > 1.7e9);
        assert_eq!(ecs::from_ecs(&v["event"]).unwrap(), a);
    }

    #[test]
    fn auth_value_is_sensitive_and_never_printed() {
        let var = format!("MCPWATCH_TEST_TOKEN_{}", std::process::id());
        // SAFETY: this test alone reads or writes this variable.
        unsafe { std::env::set_var(&var, "Splunk s3cr3t\n") };
        let (name, value) = auth_header(&AuthConfig {
            header: "Authorization".into(),
            value_file: None,
            value_env: Some(var.clone()),
        })
        .unwrap();
        assert_eq!(name, "authorization");
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().unwrap(), "Splunk s3cr3t");
        assert!(!format!("{value:?}").contains("s3cr3t"));
        let missing = auth_header(&AuthConfig {
            header: "Authorization".into(),
            value_file: None,
            value_env: Some(format!("{var}_UNSET")),
        })
        .unwrap_err()
        .to_string();
        assert!(missing.contains("not set") && !missing.contains("s3cr3t"), "{missing}");
    }
}
