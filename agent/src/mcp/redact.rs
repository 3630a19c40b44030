//! Secrets out of tool-call arguments before they are logged: by key name
//! (`password`, `api_key`, `token`...) and by pattern in any string value
//! (cloud keys, tokens, private keys, bearer credentials).

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

pub const REDACTED: &str = "[REDACTED]";

/// Parts of key names (lower case, without `_` and `-`) whose value is a
/// secret whatever it looks like.
const SECRET_KEY_PARTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "apikey",
    "accesskey",
    "privatekey",
    "credential",
    "authorization",
    "cookie",
    "sessionid",
];

/// Whether a key names a secret (`api_key`, `X-Auth-Token`, `clientSecret`; not `max_tokens`).
pub fn is_secret_key(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .collect::<String>()
        .to_lowercase();
    SECRET_KEY_PARTS.iter().any(|p| k.contains(p)) || k.ends_with("token") || k == "pin" || k == "otp"
}

/// Secrets recognisable by their shape, with the kind named in the redaction.
static SECRET_VALUE: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    [
        ("aws_access_key", r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
        (
            "github_token",
            r"\bgh[pousr]_[A-Za-z0-9]{30,}\b|\bgithub_pat_[A-Za-z0-9_]{30,}\b",
        ),
        ("slack_token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),
        ("api_key", r"\bsk-(ant-|proj-)?[A-Za-z0-9_-]{20,}\b"),
        ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
        (
            "jwt",
            r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
        ),
        (
            "private_key",
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)",
        ),
        ("bearer", r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}"),
        ("url_password", r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@"),
    ]
    .into_iter()
    .map(|(kind, re)| (kind, Regex::new(re).expect("secret value regex")))
    .collect()
});

/// A copy of `v` with secrets replaced.
pub fn redact(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(k) && !v.is_null() {
                        Value::String(REDACTED.into())
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        Value::String(s) => Value::String(redact_str(s)),
        v => v.clone(),
    }
}

/// `s` with every secret-shaped span replaced by `[REDACTED:<kind>]`.
pub fn redact_str(s: &str) -> String {
    let mut out = s.to_owned();
    for (kind, re) in SECRET_VALUE.iter() {
        if re.is_match(&out) {
            out = re
                .replace_all(&out, |c: &regex::Captures<'_>| {
                    // Keep the scheme and user of a URL, drop only the password.
                    if *kind == "url_password" {
                        format!("{}[REDACTED:{kind}]@", &c[1])
                    } else {
                        format!("[REDACTED:{kind}]")
                    }
                })
                .into_owned();
        }
    }
    out
}

/// Compact JSON of redacted arguments, cut to `max` bytes (on a char boundary).
pub fn summary(args: &Value, max: usize) -> String {
    let mut s = redact(args).to_string();
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_go_by_key_name() {
        let v = redact(&json!({
            "path": "/tmp/x", "password": "hunter2", "API_KEY": 12345,
            "headers": {"Authorization": "x", "accept": "json"}, "token": null,
            "max_tokens": 100, "X-Auth-Token": "t", "clientSecret": "c"
        }));
        assert_eq!(v["path"], "/tmp/x");
        assert_eq!(v["password"], REDACTED);
        assert_eq!(v["API_KEY"], REDACTED);
        assert_eq!(v["headers"]["Authorization"], REDACTED);
        assert_eq!(v["headers"]["accept"], "json");
        assert_eq!(v["token"], Value::Null);
        assert_eq!(v["max_tokens"], 100);
        assert_eq!(v["X-Auth-Token"], REDACTED);
        assert_eq!(v["clientSecret"], REDACTED);
    }

    #[test]
    fn secrets_go_by_shape_anywhere() {
        let v = redact(&json!({
            "cmd": ["curl", "-H", "Authorization: Bearer abcdefghijklmnopqrstuvwxyz0123"],
            "note": "key AKIAIOSFODNN7EXAMPLE and ghp_0123456789abcdefghijABCDEFGHIJ0123",
            "url": "https://bob:s3cr3t@example.com/x",
            "pem": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n",
            "model": "sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAA"
        }));
        assert_eq!(v["cmd"][2], "Authorization: [REDACTED:bearer]");
        assert_eq!(v["note"], "key [REDACTED:aws_access_key] and [REDACTED:github_token]");
        assert_eq!(v["url"], "https://bob:[REDACTED:url_password]@example.com/x");
        assert_eq!(v["pem"], "[REDACTED:private_key]\n");
        assert_eq!(v["model"], "[REDACTED:api_key]");
    }

    #[test]
    fn summary_is_bounded() {
        let s = summary(&json!({"text": "é".repeat(100)}), 21);
        assert!(s.len() <= 21 + '…'.len_utf8(), "{s}");
        assert!(s.ends_with('…'));
    }
}
