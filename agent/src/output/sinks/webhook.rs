//! HTTP webhook sink: a POST per alert (or event line, at `level =
//! "summary"`) as plain JSON (ECS or OCSF), or per batch as Splunk HEC events or an Elasticsearch `_bulk` request (whose
//! answer is read item by item). TLS through rustls (webpki roots plus an
//! optional private CA). The auth header's value is read once from a file or
//! an environment variable and marked sensitive, so it never appears in logs
//! or debug output.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::json;

use super::record::SinkRecord;
use crate::config::{AuthConfig, BatchConfig, DEFAULT_ELASTIC_INDEX, Schema, WebhookFormat, WebhookSinkConfig};

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
    /// The receiver refused the content itself (400, 413, 422): sending the
    /// same request again cannot help.
    #[error("the receiver refused the content ({status}): {body}")]
    Refused { status: u16, body: String },
    #[error("unexpected Elasticsearch answer: {0}")]
    BadAnswer(String),
}

/// What became of one alert of a request the receiver answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Accepted,
    /// Refused for good (an Elasticsearch item's 4xx other than 409 and
    /// 429): to the dead-letter file.
    Refused(String),
    /// Failed for now (429, 5xx): sent again.
    Retry(String),
}

pub struct WebhookSink {
    client: reqwest::Client,
    url: reqwest::Url,
    format: WebhookFormat,
    index: Option<String>,
    source: String,
    sourcetype: String,
    batch: BatchConfig,
    schema: Schema,
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
            source: cfg.source.clone(),
            sourcetype: cfg.sourcetype.clone(),
            batch: cfg.batch,
            schema: cfg.schema,
            auth: cfg.auth.as_ref().map(auth_header).transpose()?,
        })
    }

    pub fn format(&self) -> WebhookFormat {
        self.format
    }

    pub fn batch(&self) -> BatchConfig {
        self.batch
    }

    /// The request body and content type for records (`json` carries one).
    pub fn body(&self, records: &[SinkRecord]) -> (Vec<u8>, &'static str) {
        match self.format {
            WebhookFormat::Json => {
                let doc = records.first().map(|r| r.document(self.schema)).unwrap_or_default();
                (doc.to_string().into_bytes(), "application/json")
            }
            WebhookFormat::SplunkHec => {
                // HEC takes events one after the other in one body.
                let mut body = Vec::new();
                for rec in records {
                    let time = humantime::parse_rfc3339(rec.ts())
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs_f64());
                    let mut ev = json!({
                        "time": time,
                        "host": rec.host(),
                        "source": self.source,
                        "sourcetype": self.sourcetype,
                        "event": rec.document(self.schema),
                    });
                    if let Some(index) = &self.index {
                        ev["index"] = json!(index);
                    }
                    body.extend_from_slice(ev.to_string().as_bytes());
                    body.push(b'\n');
                }
                (body, "application/json")
            }
            WebhookFormat::ElasticBulk => {
                // `create` (data streams refuse `index`), `_id` the alert id:
                // a replay after an unanswered request is a 409, not a copy.
                // Event lines have no id: Elasticsearch gives them one.
                let index = self.index.as_deref().unwrap_or(DEFAULT_ELASTIC_INDEX);
                let mut body = Vec::new();
                for rec in records {
                    let mut action = json!({ "create": { "_index": index } });
                    if let Some(id) = rec.alert_id() {
                        action["create"]["_id"] = json!(id);
                    }
                    body.extend_from_slice(format!("{action}\n{}\n", rec.document(self.schema)).as_bytes());
                }
                (body, "application/x-ndjson")
            }
        }
    }

    /// Sends `records` in one request; on an answer, what became of each.
    pub async fn deliver(&mut self, records: &[SinkRecord]) -> Result<Vec<Item>, WebhookError> {
        let (body, ctype) = self.body(records);
        let mut req = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, ctype)
            .body(body);
        if let Some(id) = records.first().and_then(SinkRecord::alert_id) {
            req = req.header("x-mcpwatch-alert-id", id);
        }
        if let Some((name, value)) = &self.auth {
            req = req.header(name.clone(), value.clone());
        }
        let resp = req.send().await.map_err(WebhookError::Send)?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let body = text.chars().take(200).collect();
            let status = status.as_u16();
            return Err(if matches!(status, 400 | 413 | 422) {
                WebhookError::Refused { status, body }
            } else {
                WebhookError::Status { status, body }
            });
        }
        if self.format == WebhookFormat::ElasticBulk {
            return bulk_items(&text, records.len());
        }
        Ok(vec![Item::Accepted; records.len()])
    }
}

/// Each item of a `_bulk` answer, in the request's order: created, or
/// already there (409: a replay of an alert whose answer was lost) is
/// accepted; 429 and 5xx are retried; any other status is refused for good.
fn bulk_items(text: &str, n: usize) -> Result<Vec<Item>, WebhookError> {
    let bad = || WebhookError::BadAnswer(text.chars().take(300).collect());
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| bad())?;
    let items = v["items"].as_array().ok_or_else(bad)?;
    if items.len() != n {
        return Err(bad());
    }
    items
        .iter()
        .map(|item| {
            let result = item.as_object().and_then(|o| o.values().next()).ok_or_else(bad)?;
            let status = result["status"].as_u64().ok_or_else(bad)?;
            let reason = || {
                let e = &result["error"];
                format!(
                    "{status} {}: {}",
                    e["type"].as_str().unwrap_or("error"),
                    e["reason"].as_str().unwrap_or("")
                )
            };
            Ok(match status {
                200..=299 | 409 => Item::Accepted,
                429 | 500.. => Item::Retry(reason()),
                _ => Item::Refused(reason()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::format::ecs;
    use crate::output::format::ecs::tests::full_alert;

    fn sink(format: WebhookFormat) -> WebhookSink {
        let cfg = WebhookSinkConfig {
            url: "http://127.0.0.1:1/x".into(),
            format,
            index: Some("idx".into()),
            source: "mcpwatch".into(),
            sourcetype: "mcpwatch:alert".into(),
            batch: Default::default(),
            schema: Default::default(),
            auth: None,
            ca_file: None,
        };
        WebhookSink::new(&cfg, Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn shapes_of_the_three_formats() {
        let a = full_alert();
        let mut b2 = a.clone();
        b2.id = "123-5".into();
        let (r, r2) = (SinkRecord::from(a.clone()), SinkRecord::from(b2.clone()));
        let (b, t) = sink(WebhookFormat::ElasticBulk).body(&[r.clone(), r2.clone()]);
        assert_eq!(t, "application/x-ndjson");
        let text = String::from_utf8(b).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], json!({"create": {"_index": "idx", "_id": "123-4"}}));
        assert_eq!(ecs::from_ecs(&lines[1]).unwrap(), a);
        assert_eq!(lines[2], json!({"create": {"_index": "idx", "_id": "123-5"}}));
        assert!(text.ends_with('\n'));
        let (b, _) = sink(WebhookFormat::SplunkHec).body(&[r, r2]);
        let events: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&b)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(events.len(), 2);
        let v = &events[0];
        assert_eq!(v["sourcetype"], "mcpwatch:alert");
        assert_eq!(v["index"], "idx");
        assert!(v["time"].as_f64().unwrap() > 1.7e9);
        assert_eq!(ecs::from_ecs(&v["event"]).unwrap(), a);
        assert_eq!(ecs::from_ecs(&events[1]["event"]).unwrap().id, "123-5");
    }

    /// Elasticsearch's per-item statuses: created and conflict (a replay)
    /// are delivered, 429/5xx retried, another 4xx refused for good; an
    /// answer that does not match the request is a failure of the whole.
    #[test]
    fn bulk_answers_are_read_item_by_item() {
        let text = r#"{"took":3,"errors":true,"items":[
            {"create":{"_index":"i","_id":"a","status":201}},
            {"create":{"_index":"i","_id":"b","status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},
            {"create":{"_index":"i","_id":"c","status":400,"error":{"type":"document_parsing_exception","reason":"bad field"}}},
            {"create":{"_index":"i","_id":"d","status":429,"error":{"type":"es_rejected_execution_exception","reason":"busy"}}},
            {"create":{"_index":"i","_id":"e","status":503,"error":{"type":"unavailable_shards_exception","reason":"x"}}}]}"#;
        let items = bulk_items(text, 5).unwrap();
        assert_eq!(items[..2], [Item::Accepted, Item::Accepted]);
        assert_eq!(
            items[2],
            Item::Refused("400 document_parsing_exception: bad field".into())
        );
        assert!(matches!(&items[3], Item::Retry(r) if r.starts_with("429")));
        assert!(matches!(&items[4], Item::Retry(r) if r.starts_with("503")));
        assert!(bulk_items(text, 4).is_err());
        assert!(bulk_items("{}", 1).is_err());
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
