//! The roots a client gives a server (MCP `roots/list`, answered by the
//! client on the server's stdin): the directories the server is meant to
//! work in, granted by `${roots}` in its manifest. Only `file://` URIs of
//! plain absolute paths count, at most [`ROOTS_MAX`] of them.

use serde_json::Value;

/// Roots taken from one answer, at most.
pub const ROOTS_MAX: usize = 64;
/// `roots/list` requests remembered per agent until answered.
pub const ASKED_MAX: usize = 64;

/// The directories of a `roots/list` result (`{"roots": [{"uri": "file:///…"}]}`).
pub fn paths(result: &Value) -> Vec<String> {
    let Some(roots) = result.get("roots").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut out: Vec<String> = roots
        .iter()
        .filter_map(|r| r.get("uri")?.as_str())
        .filter_map(|u| url::Url::parse(u).ok())
        .filter(|u| u.scheme() == "file" && u.host_str().is_none_or(|h| h.is_empty() || h == "localhost"))
        .filter_map(|u| u.to_file_path().ok())
        .map(|p| p.to_string_lossy().trim_end_matches('/').to_owned())
        .filter(|p| {
            p.starts_with('/')
                && p.len() > 1
                && !p.split('/').any(|c| c == "..")
                && !p.contains(['*', '?', '[', ']', '{', '}'])
        })
        .take(ROOTS_MAX)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_file_uris_of_plain_absolute_paths_count() {
        let r = json!({"roots": [
            {"uri": "file:///srv/docs/", "name": "docs"},
            {"uri": "file:///srv/with%20space"},
            {"uri": "https://example.com/x"},
            {"uri": "file://otherhost/srv"},
            {"uri": "file:///srv/*"},
            {"uri": "file:///"},
            {"uri": 7}
        ]});
        assert_eq!(paths(&r), ["/srv/docs", "/srv/with space"]);
        assert!(paths(&json!({"tools": []})).is_empty());
        let many: Vec<Value> = (0..500).map(|i| json!({"uri": format!("file:///r/{i}")})).collect();
        assert_eq!(paths(&json!({ "roots": many })).len(), ROOTS_MAX);
    }
}
