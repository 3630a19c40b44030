//! What is wrong with a manifest, and where: `FILE:LINE:COL: field: what`.

use std::path::{Path, PathBuf};

use crate::policy::{glob::GlobError, net::HostError};

/// What is wrong with a manifest file, and where.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}:{column}: {field}: {what}", file.display())]
pub struct ManifestError {
    pub file: PathBuf,
    /// 1-based; 0 when unknown.
    pub line: usize,
    pub column: usize,
    /// JSON path of the offending field (`network.outbound.allow_port[1]`), `.` for the document.
    pub field: String,
    pub what: String,
}

/// What a manifest entry can get wrong (before it is placed in a file).
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error(transparent)]
    Glob(#[from] GlobError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("bad regular expression: {0}")]
    Regex(#[from] regex::Error),
    #[error("`${{{0}}}` refers to no entry of `args`")]
    UnknownArg(String),
    #[error("transport {0:?} is neither tcp nor udp")]
    Transport(String),
    #[error("{0}")]
    Name(#[from] crate::pipeline::servers::NameError),
    #[error("{0}")]
    GateRule(String),
    #[error("a tool name must not be empty")]
    EmptyToolName,
    #[error("pattern of {len} bytes (at most {cap})")]
    PatternTooLong { len: usize, cap: usize },
    #[error("too many patterns: {count} (at most {cap} per manifest; `{field}` alone has {in_field})")]
    TooManyPatterns {
        count: usize,
        cap: usize,
        field: String,
        in_field: usize,
    },
    #[error("{0:?} is not a tool pin: `sha256:` and 64 hex digits, as `mcpwatch pins show` prints")]
    Pin(String),
    #[error("{0}")]
    SecretRule(String),
}

/// An entry that failed: the field, the value, what is wrong.
pub(super) type Failed = (String, String, EntryError);

impl ManifestError {
    /// A syntax or type error, where serde_json found it.
    pub(super) fn syntax(file: &Path, e: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let field = e.path().to_string();
        let inner = e.into_inner();
        ManifestError {
            file: file.to_owned(),
            line: inner.line(),
            column: inner.column(),
            field,
            what: strip_position(&inner.to_string()),
        }
    }

    /// Objects and arrays nested deeper than the cap, at byte `offset` of `text`.
    pub(super) fn nested(file: &Path, text: &str, offset: usize) -> Self {
        let (line, column) = position(text, offset);
        ManifestError {
            file: file.to_owned(),
            line,
            column,
            field: ".".into(),
            what: format!(
                "objects and arrays nested more than {} deep: refused",
                super::limits::MAX_NESTING
            ),
        }
    }

    /// An entry that failed to compile, placed where its value is written in `text`.
    pub(super) fn entry(file: &Path, text: &str, (field, value, err): Failed) -> Self {
        let (line, column) = locate(text, &value);
        ManifestError {
            file: file.to_owned(),
            line,
            column,
            field,
            what: err.to_string(),
        }
    }
}

/// serde_json appends " at line L column C"; the error carries them apart.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Line and column (1-based) of the first occurrence of a string value.
fn locate(text: &str, value: &str) -> (usize, usize) {
    let quoted = serde_json::to_string(value).unwrap_or_default();
    let at = text.find(&quoted).or_else(|| text.find(value));
    match at {
        Some(i) => position(text, i),
        None => (0, 0),
    }
}

/// Line and column (1-based) of byte `i` of `text`.
fn position(text: &str, i: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..i.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = i - before.iter().rposition(|&b| b == b'\n').map(|n| n + 1).unwrap_or(0) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::*;
    use crate::policy::manifest::Mode;

    #[test]
    fn syntax_errors_give_file_line_column() {
        let e = parse("{\n  \"read\": [\"/a\",]\n}").unwrap_err();
        assert_eq!(e.file, Path::new("/etc/mcpwatch/manifests/demo.json"));
        assert_eq!(e.line, 2);
        assert!(e.to_string().starts_with("/etc/mcpwatch/manifests/demo.json:2:"), "{e}");
    }

    #[test]
    fn type_errors_name_the_field() {
        let e = parse("{\n \"network\": {\"outbound\": {\"allow_port\": [443, \"https\"]}}\n}").unwrap_err();
        assert_eq!(e.field, "network.outbound.allow_port[1]");
        assert_eq!(e.line, 2);
        assert!(e.what.contains("invalid type"), "{e}");
    }

    #[test]
    fn semantic_errors_name_field_and_line() {
        let e = parse("{\n\"read\": [\"/ok\",\n  \"relative/path\"]\n}").unwrap_err();
        assert_eq!((e.field.as_str(), e.line, e.column), ("read[1]", 3, 3));
        assert!(e.what.contains("not absolute"), "{e}");
        let e = parse("{\"read\": [\"${repo}/**\"]}").unwrap_err();
        assert!(e.what.contains("refers to no entry of `args`"), "{e}");
        assert_eq!(parse("{\"mode\": \"enforce\"}").unwrap().mode, Some(Mode::Enforce));
        let e = parse("{\"mode\": \"block\"}").unwrap_err();
        assert_eq!(e.field, "mode");
        let e = parse("{\"network\": {\"outbound\": {\"allow_host\": [\"bad host!\"]}}}").unwrap_err();
        assert_eq!(e.field, "network.outbound.allow_host[0]");
        let e = parse("{\"listen\": [\"127.0.0.1\"]}").unwrap_err();
        assert_eq!(e.field, "listen[0]");
        let e = parse("{\"match\": {\"argv\": [\"(\"]}}").unwrap_err();
        assert_eq!(e.field, "match.argv[0]");
    }

    #[test]
    fn tool_errors_name_the_tool() {
        let e = parse("{\"tools\": {\"read_file\": {\n  \"read\": [\"relative/x\"]}}}").unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("tools.read_file.read[0]", 2), "{e}");
        assert!(e.what.contains("not absolute"), "{e}");
        let e = parse(r#"{"tools": {"fetch": {"network": {"outbound": {"allow_host": ["bad host!"]}}}}}"#).unwrap_err();
        assert_eq!(e.field, "tools.fetch.network.outbound.allow_host[0]", "{e}");
        let e = parse(r#"{"tools": {"fetch": {"network": {"outbound": {"allow_transport": ["sctp"]}}}}}"#).unwrap_err();
        assert_eq!(e.field, "tools.fetch.network.outbound.allow_transport[0]", "{e}");
        let e = parse(r#"{"tools": {"x": {"exec": [""]}}}"#).unwrap_err();
        assert_eq!(e.field, "tools.x.exec[0]", "{e}");
        let e = parse(r#"{"tools": {"x": {"read": ["${nope}/a"]}}}"#).unwrap_err();
        assert!(e.what.contains("refers to no entry of `args`"), "{e}");
        let e = parse(r#"{"tools": {"x": {"reads": []}}}"#).unwrap_err();
        assert_eq!(e.field, "tools.x.reads", "{e}");
        assert!(e.what.contains("unknown field `reads`"), "{e}");
        let e = parse(r#"{"tools": {"x": {"network": {"outbound": {"allow_hosts": []}}}}}"#).unwrap_err();
        assert_eq!(e.field, "tools.x.network.outbound.allow_hosts", "{e}");
        let e = parse(r#"{"tools": {"x": {"write": []}, "x": {"exec": []}}}"#).unwrap_err();
        assert!(e.what.contains("`x` is given twice"), "{e}");
        let e = parse(r#"{"tools": {"": {"write": []}}}"#).unwrap_err();
        assert!(e.what.contains("tool name"), "{e}");
        let e = parse(r#"{"tools": ["x"]}"#).unwrap_err();
        assert_eq!(e.field, "tools", "{e}");
    }
}
