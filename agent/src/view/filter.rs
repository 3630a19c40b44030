//! Which lines a reader wants: by server, kind, tool, minimum severity, time.

use serde_json::Value;

use super::s;

/// Severities in order; an event line has none and passes only without a
/// minimum.
const SEVERITIES: [&str; 5] = ["info", "low", "medium", "high", "critical"];

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub servers: Vec<String>,
    pub kinds: Vec<String>,
    pub tools: Vec<String>,
    /// Only alerts of at least this severity.
    pub min_severity: Option<String>,
    /// Only alerts.
    pub alerts_only: bool,
    /// RFC 3339 UTC, as the lines carry it: compared as text, which orders
    /// the agent's fixed-width timestamps.
    pub since: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("unknown severity {0:?} (info, low, medium, high, critical)")]
    Severity(String),
    #[error("--since {0:?}: neither a duration (90s, 15m, 2h, 1d) nor an RFC 3339 time ({1})")]
    Since(String, String),
}

impl Filter {
    pub fn check(&self) -> Result<(), FilterError> {
        match &self.min_severity {
            Some(m) if rank(m).is_none() => Err(FilterError::Severity(m.clone())),
            _ => Ok(()),
        }
    }

    pub fn wants(&self, e: &Value) -> bool {
        let kind = s(e, "kind");
        let alert = kind == "alert";
        if self.alerts_only && !alert {
            return false;
        }
        if !self.servers.is_empty() && !self.servers.iter().any(|x| x == s(e, "server")) {
            return false;
        }
        if !self.kinds.is_empty() && !self.kinds.iter().any(|k| k == kind || (alert && k == s(e, "rule"))) {
            return false;
        }
        if !self.tools.is_empty() && !self.tools.iter().any(|t| t == s(e, "tool")) {
            return false;
        }
        if let Some(min) = self.min_severity.as_deref().and_then(rank)
            && !(alert && rank(s(e, "severity")).is_some_and(|r| r >= min))
        {
            return false;
        }
        if let Some(since) = &self.since
            && s(e, "ts") < since.as_str()
        {
            return false;
        }
        true
    }
}

impl Filter {
    /// For the report: server and time only (it lists every kind itself).
    pub fn wants_server_time(&self, e: &Value) -> bool {
        (self.servers.is_empty() || self.servers.iter().any(|x| x == s(e, "server")))
            && self.since.as_deref().is_none_or(|since| s(e, "ts") >= since)
    }
}

pub fn rank(severity: &str) -> Option<usize> {
    SEVERITIES.iter().position(|s| *s == severity)
}

/// `--since`: a duration back from `now` or an RFC 3339 time, as the lines'
/// own timestamp text (UTC, nanoseconds).
pub fn since(arg: &str, now: std::time::SystemTime) -> Result<String, FilterError> {
    let at = match humantime::parse_duration(arg) {
        Ok(d) => now.checked_sub(d).unwrap_or(std::time::UNIX_EPOCH),
        Err(de) => humantime::parse_rfc3339_weak(arg)
            .map_err(|te| FilterError::Since(arg.to_owned(), format!("{de}; {te}")))?,
    };
    Ok(humantime::format_rfc3339_nanos(at).to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn filters_combine() {
        let alert = json!({"kind": "alert", "server": "fs", "rule": "cred.ssh", "severity": "high",
            "tool": "read", "ts": "2026-12-01T04:02:10.000000000Z"});
        let file = json!({"kind": "file", "server": "fs", "tool": "read", "ts": "2026-12-01T04:00:00.000000000Z"});
        let f = Filter {
            min_severity: Some("medium".into()),
            ..Default::default()
        };
        assert!(
            f.wants(&alert) && !f.wants(&file),
            "a minimum severity keeps alerts only"
        );
        let f = Filter {
            kinds: vec!["cred.ssh".into()],
            servers: vec!["fs".into()],
            ..Default::default()
        };
        assert!(f.wants(&alert) && !f.wants(&file), "a rule id is a kind");
        let f = Filter {
            tools: vec!["write".into()],
            ..Default::default()
        };
        assert!(!f.wants(&alert));
        let f = Filter {
            since: Some("2026-12-01T04:01:00.000000000Z".into()),
            ..Default::default()
        };
        assert!(f.wants(&alert) && !f.wants(&file));
        assert!(
            Filter {
                min_severity: Some("urgent".into()),
                ..Default::default()
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn since_takes_a_duration_or_a_time_and_speaks_the_lines_format() {
        let now = humantime::parse_rfc3339("2026-12-01T04:00:00Z").unwrap();
        assert_eq!(since("90m", now).unwrap(), "2026-12-01T02:30:00.000000000Z");
        assert_eq!(
            since("2026-11-30T10:00:00Z", now).unwrap(),
            "2026-11-30T10:00:00.000000000Z"
        );
        assert!(since("yesterday-ish", now).is_err());
    }
}
