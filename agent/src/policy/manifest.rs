//! Manifests: what one server declares it needs. JSON, one file per server, a
//! superset of ToolHive's permission profile (a ToolHive profile loads as-is).
//! The schema is `manifests/manifest.schema.json`; the reference is in the README.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::{
    glob::{GlobError, PathGlob},
    net::{HostError, HostPattern, ListenSpec},
};

/// The file as written.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    #[serde(default, rename = "$schema")]
    pub schema: Option<String>,
    /// Server name (default: the file name without `.json`).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default, rename = "match")]
    pub matcher: MatchSpec,
    /// Values taken from the server's own command line, usable as `${NAME}` in paths.
    #[serde(default)]
    pub args: BTreeMap<String, ArgSpec>,
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default)]
    pub network: NetworkSpec,
    /// Addresses the server may listen on (`127.0.0.1:8080`, `[::1]:*`).
    #[serde(default)]
    pub listen: Vec<String>,
    /// Programs the server may run (a name, or an absolute path glob).
    #[serde(default)]
    pub exec: Vec<String>,
    /// ToolHive's container flag: accepted, meaningless on a host.
    #[serde(default)]
    pub privileged: bool,
}

#[derive(Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Audit,
    /// Reserved for a later version: rejected today.
    Enforce,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Names given to the wrapper (`mcpwatch exec --server NAME`) or in a host configuration.
    #[serde(default)]
    pub server: Vec<String>,
    /// Executable path globs (`**/node`) or names.
    #[serde(default)]
    pub exe: Vec<String>,
    /// Regular expressions searched in the arguments joined by spaces.
    #[serde(default)]
    pub argv: Vec<String>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ArgSpec {
    /// Regex naming the server's own command-line element (e.g. `server-filesystem`):
    /// only command lines with such an element bind values.
    pub from: String,
    /// The value of this flag (`--repository X`, `--repository=X`); without it,
    /// every non-flag argument after the `from` element.
    #[serde(default)]
    pub flag: Option<String>,
}

#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    #[serde(default)]
    pub outbound: OutboundSpec,
    #[serde(default)]
    pub inbound: InboundSpec,
    /// ToolHive's container network mode: accepted, meaningless on a host.
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct OutboundSpec {
    #[serde(default)]
    pub insecure_allow_all: bool,
    /// `example.com`, `.example.com` (the domain and below), `10.0.0.0/8`,
    /// `localhost`, or any of them with `:PORT`.
    #[serde(default)]
    pub allow_host: Vec<String>,
    /// Ports allowed with every `allow_host` entry that has none (empty: any port).
    #[serde(default)]
    pub allow_port: Vec<u16>,
    /// ToolHive: `tcp`, `udp` (empty: both).
    #[serde(default)]
    pub allow_transport: Vec<String>,
}

#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct InboundSpec {
    /// Peers the server may accept connections from.
    #[serde(default)]
    pub allow_host: Vec<String>,
}

/// A manifest ready for evaluation.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub name: String,
    /// The file it came from (`None`: the built-in default).
    pub file: Option<PathBuf>,
    pub match_servers: Vec<String>,
    pub match_exe: Vec<ExePattern>,
    pub match_argv: Vec<Regex>,
    pub args: Vec<(String, ArgBinding)>,
    /// Path patterns before `~` and `${arg}` expansion.
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub outbound_all: bool,
    pub outbound: Vec<HostPattern>,
    pub outbound_ports: Vec<u16>,
    pub transports: Vec<String>,
    pub inbound: Vec<HostPattern>,
    pub listen: Vec<ListenSpec>,
    pub exec: Vec<ExePattern>,
    /// The declaration as written, for the `declared` field of alerts.
    pub raw: ManifestFile,
}

#[derive(Debug, Clone)]
pub struct ArgBinding {
    pub from: Regex,
    pub flag: Option<String>,
}

/// A program: a path glob when it has a `/`, else a name (glob) compared with
/// the basename.
#[derive(Debug, Clone)]
pub enum ExePattern {
    Path(PathGlob),
    Name(String),
}

impl ExePattern {
    pub fn parse(s: &str) -> Result<Self, GlobError> {
        if s.contains('/') {
            PathGlob::new(s).map(ExePattern::Path)
        } else if s.is_empty() {
            Err(GlobError::Empty)
        } else {
            Ok(ExePattern::Name(s.to_owned()))
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            ExePattern::Path(g) => g.matches(path),
            ExePattern::Name(n) => super::glob::name_matches(n, basename(path)),
        }
    }
}

pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

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
    #[error("mode `enforce` is reserved for a later version of mcpwatch; use `audit`")]
    EnforceReserved,
    #[error("transport {0:?} is neither tcp nor udp")]
    Transport(String),
    #[error("{0}")]
    Name(#[from] crate::servers::NameError),
}

impl Manifest {
    /// Parses and checks one manifest file's text.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ManifestError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let raw: ManifestFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            ManifestError {
                file: file.to_owned(),
                line: inner.line(),
                column: inner.column(),
                field: path,
                what: strip_position(&inner.to_string()),
            }
        })?;
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::compile(raw, Some(file), &stem).map_err(|(field, value, err)| {
            let (line, column) = locate(text, &value);
            ManifestError {
                file: file.to_owned(),
                line,
                column,
                field,
                what: err.to_string(),
            }
        })
    }

    /// The manifest of a server nobody declared: the runtime baseline only.
    pub fn least_privilege(name: &str) -> Self {
        Self::compile(ManifestFile::default(), None, name).expect("the empty manifest compiles")
    }

    /// Checks every entry; an error names the field, the value, and what is wrong.
    fn compile(raw: ManifestFile, file: Option<&Path>, stem: &str) -> Result<Self, (String, String, EntryError)> {
        let name = raw.name.clone().unwrap_or_else(|| stem.to_owned());
        crate::servers::validate_name(&name).map_err(|e| ("name".to_owned(), name.clone(), e.into()))?;
        if raw.mode == Mode::Enforce {
            return Err(("mode".into(), "enforce".into(), EntryError::EnforceReserved));
        }
        let mut args = Vec::new();
        for (k, a) in &raw.args {
            let from = Regex::new(&a.from).map_err(|e| (format!("args.{k}.from"), a.from.clone(), e.into()))?;
            args.push((
                k.clone(),
                ArgBinding {
                    from,
                    flag: a.flag.clone(),
                },
            ));
        }
        let arg_names: Vec<&str> = args.iter().map(|(k, _)| k.as_str()).collect();
        for (field, list) in [("read", &raw.read), ("write", &raw.write)] {
            for (i, p) in list.iter().enumerate() {
                check_path(p, &arg_names).map_err(|e| (format!("{field}[{i}]"), p.clone(), e))?;
            }
        }
        let mut match_exe = Vec::new();
        for (i, e) in raw.matcher.exe.iter().enumerate() {
            match_exe.push(ExePattern::parse(e).map_err(|err| (format!("match.exe[{i}]"), e.clone(), err.into()))?);
        }
        let mut match_argv = Vec::new();
        for (i, e) in raw.matcher.argv.iter().enumerate() {
            match_argv.push(Regex::new(e).map_err(|err| (format!("match.argv[{i}]"), e.clone(), err.into()))?);
        }
        for (i, s) in raw.matcher.server.iter().enumerate() {
            crate::servers::validate_name(s).map_err(|e| (format!("match.server[{i}]"), s.clone(), e.into()))?;
        }
        let out = &raw.network.outbound;
        let mut outbound = Vec::new();
        for (i, h) in out.allow_host.iter().enumerate() {
            outbound.push(
                HostPattern::parse(h)
                    .map_err(|e| (format!("network.outbound.allow_host[{i}]"), h.clone(), e.into()))?,
            );
        }
        for (i, t) in out.allow_transport.iter().enumerate() {
            if !matches!(t.to_ascii_lowercase().as_str(), "tcp" | "udp") {
                return Err((
                    format!("network.outbound.allow_transport[{i}]"),
                    t.clone(),
                    EntryError::Transport(t.clone()),
                ));
            }
        }
        let mut inbound = Vec::new();
        for (i, h) in raw.network.inbound.allow_host.iter().enumerate() {
            inbound.push(
                HostPattern::parse(h).map_err(|e| (format!("network.inbound.allow_host[{i}]"), h.clone(), e.into()))?,
            );
        }
        let mut listen = Vec::new();
        for (i, l) in raw.listen.iter().enumerate() {
            listen.push(ListenSpec::parse(l).map_err(|e| (format!("listen[{i}]"), l.clone(), e.into()))?);
        }
        let mut exec = Vec::new();
        for (i, e) in raw.exec.iter().enumerate() {
            exec.push(ExePattern::parse(e).map_err(|err| (format!("exec[{i}]"), e.clone(), err.into()))?);
        }
        Ok(Self {
            name,
            file: file.map(Path::to_owned),
            match_servers: raw.matcher.server.clone(),
            match_exe,
            match_argv,
            args,
            read: raw.read.clone(),
            write: raw.write.clone(),
            outbound_all: out.insecure_allow_all,
            outbound,
            outbound_ports: out.allow_port.clone(),
            transports: out.allow_transport.iter().map(|t| t.to_ascii_lowercase()).collect(),
            inbound,
            listen,
            exec,
            raw,
        })
    }

    /// The file name for alerts, or `(built-in least privilege)`.
    pub fn file_label(&self) -> String {
        self.file
            .as_ref()
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "(built-in least privilege)".into())
    }

    /// Whether this manifest recognises a process by its exe and argv (`match.exe`
    /// and `match.argv`; both must hold when both are given).
    pub fn matches_process(&self, exe: &str, argv: &[String]) -> bool {
        if self.match_exe.is_empty() && self.match_argv.is_empty() {
            return false;
        }
        let exe_ok = self.match_exe.is_empty() || self.match_exe.iter().any(|p| p.matches(exe));
        let joined = argv.join(" ");
        let argv_ok = self.match_argv.is_empty() || self.match_argv.iter().any(|r| r.is_match(&joined));
        exe_ok && argv_ok
    }

    /// Whether this manifest is the one for server `name`.
    pub fn is_for_server(&self, name: &str) -> bool {
        self.name == name || self.match_servers.iter().any(|s| s == name)
    }

    /// Values of the `args` entries found in one command line.
    pub fn bind_args(&self, argv: &[String], cwd: Option<&Path>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, b) in &self.args {
            let Some(anchor) = argv.iter().position(|a| b.from.is_match(a)) else {
                continue;
            };
            let rest = &argv[anchor + 1..];
            match &b.flag {
                Some(flag) => {
                    let mut it = rest.iter();
                    while let Some(a) = it.next() {
                        if a == flag {
                            if let Some(v) = it.next() {
                                out.push((name.clone(), absolute(v, cwd)));
                            }
                        } else if let Some(v) = a.strip_prefix(flag.as_str()).and_then(|v| v.strip_prefix('=')) {
                            out.push((name.clone(), absolute(v, cwd)));
                        }
                    }
                }
                None => {
                    for a in rest.iter().filter(|a| !a.starts_with('-')) {
                        out.push((name.clone(), absolute(a, cwd)));
                    }
                }
            }
        }
        out
    }
}

/// A command-line path made absolute against the process's cwd, and resolved
/// (the kernel reports resolved paths).
fn absolute(v: &str, cwd: Option<&Path>) -> String {
    let p = match cwd {
        Some(c) if !v.starts_with('/') && !v.starts_with('~') => c.join(v),
        _ => PathBuf::from(v),
    };
    std::fs::canonicalize(&p)
        .unwrap_or(p)
        .to_string_lossy()
        .trim_end_matches('/')
        .to_owned()
}

/// Checks a path pattern: `~`, `${arg}` references, glob syntax.
fn check_path(p: &str, args: &[&str]) -> Result<(), EntryError> {
    let host = host_side(p);
    for r in arg_refs(host) {
        if !args.contains(&r.as_str()) {
            return Err(EntryError::UnknownArg(r));
        }
    }
    let probe = expand(host, "/home/x", &|_| vec!["/arg".to_owned()]);
    for p in probe {
        PathGlob::new(&p)?;
    }
    Ok(())
}

/// ToolHive mount declarations may be `host:container`; the host side is what
/// a process on the host touches.
pub fn host_side(p: &str) -> &str {
    match p.split_once(':') {
        Some((h, c)) if c.starts_with('/') && !h.is_empty() => h,
        _ => p,
    }
}

/// Names referenced as `${NAME}`.
fn arg_refs(p: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = p;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) => {
                out.push(after[..j].to_owned());
                rest = &after[j + 1..];
            }
            None => break,
        }
    }
    out
}

/// Expands `~` (to `home`) and each `${NAME}` (to every value bound to it; a
/// pattern whose argument has no value yet expands to nothing).
pub fn expand(p: &str, home: &str, values: &dyn Fn(&str) -> Vec<String>) -> Vec<String> {
    let p = host_side(p);
    let p = if p == "~" {
        home.to_owned()
    } else if let Some(rest) = p.strip_prefix("~/") {
        format!("{}/{rest}", home.trim_end_matches('/'))
    } else {
        p.to_owned()
    };
    let mut out = vec![p];
    for r in arg_refs(&out[0].clone()) {
        let vals = values(&r);
        let key = format!("${{{r}}}");
        out = out
            .into_iter()
            .flat_map(|s| vals.iter().map(|v| s.replace(&key, v)).collect::<Vec<_>>())
            .collect();
    }
    out
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
        Some(i) => {
            let before = &text[..i];
            let line = before.matches('\n').count() + 1;
            let column = i - before.rfind('\n').map(|n| n + 1).unwrap_or(0) + 1;
            (line, column)
        }
        None => (0, 0),
    }
}

/// Whether an address is loopback (IPv4-mapped included).
pub fn is_loopback(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_loopback(),
        IpAddr::V6(v) => v.is_loopback() || v.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_argv as argv;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(Path::new("/etc/mcpwatch/manifests/demo.json"), text)
    }

    #[test]
    fn toolhive_profile_loads_as_is() {
        // ToolHive's own profile format (pkg/permissions), unchanged.
        let m = parse(
            r#"{
  "name": "github",
  "read": ["/var/run/docker.sock", "/home/u/data:/data"],
  "write": [],
  "network": {
    "outbound": {
      "insecure_allow_all": false,
      "allow_transport": ["tcp"],
      "allow_host": ["localhost", ".github.com", "api.example.org"],
      "allow_port": [443, 80]
    },
    "inbound": { "allow_host": ["127.0.0.1"] }
  },
  "privileged": false
}"#,
        )
        .unwrap();
        assert_eq!(m.name, "github");
        assert_eq!(m.outbound.len(), 3);
        assert_eq!(m.outbound_ports, [443, 80]);
        assert_eq!(expand(&m.read[1], "/h", &|_| vec![]), ["/home/u/data"]);
    }

    #[test]
    fn name_defaults_to_the_file_stem() {
        assert_eq!(parse("{}").unwrap().name, "demo");
    }

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
    fn unknown_fields_are_rejected() {
        let e = parse("{\"reads\": []}").unwrap_err();
        assert!(e.what.contains("unknown field `reads`"), "{e}");
        let e = parse("{\"network\": {\"outbound\": {\"allow_hosts\": []}}}").unwrap_err();
        assert_eq!(e.field, "network.outbound.allow_hosts");
    }

    #[test]
    fn semantic_errors_name_field_and_line() {
        let e = parse("{\n\"read\": [\"/ok\",\n  \"relative/path\"]\n}").unwrap_err();
        assert_eq!((e.field.as_str(), e.line, e.column), ("read[1]", 3, 3));
        assert!(e.what.contains("not absolute"), "{e}");
        let e = parse("{\"read\": [\"${repo}/**\"]}").unwrap_err();
        assert!(e.what.contains("refers to no entry of `args`"), "{e}");
        let e = parse("{\"mode\": \"enforce\"}").unwrap_err();
        assert!(e.what.contains("reserved"), "{e}");
        let e = parse("{\"network\": {\"outbound\": {\"allow_host\": [\"bad host!\"]}}}").unwrap_err();
        assert_eq!(e.field, "network.outbound.allow_host[0]");
        let e = parse("{\"listen\": [\"127.0.0.1\"]}").unwrap_err();
        assert_eq!(e.field, "listen[0]");
        let e = parse("{\"match\": {\"argv\": [\"(\"]}}").unwrap_err();
        assert_eq!(e.field, "match.argv[0]");
    }

    #[test]
    fn args_bind_from_the_servers_own_command_line() {
        let m = parse(
            r#"{"args": {"roots": {"from": "server-filesystem"},
                         "repo": {"from": "mcp[-_]server[-_]git", "flag": "--repository"}},
                "read": ["${roots}", "${repo}/**"]}"#,
        )
        .unwrap();
        let b = m.bind_args(
            &argv(&[
                "npx",
                "-y",
                "@modelcontextprotocol/server-filesystem",
                "/nonexistent/a",
                "/nonexistent/b",
            ]),
            None,
        );
        assert_eq!(
            b,
            [
                ("roots".into(), "/nonexistent/a".into()),
                ("roots".into(), "/nonexistent/b".into())
            ]
        );
        let b = m.bind_args(
            &argv(&["python", "-m", "mcp_server_git", "--repository=/nonexistent/r"]),
            None,
        );
        assert_eq!(b, [("repo".into(), "/nonexistent/r".into())]);
        let b = m.bind_args(&argv(&["git", "--repository", "/"]), None);
        assert!(b.is_empty(), "a command line without the anchor binds nothing");
        let vals = |n: &str| {
            if n == "roots" {
                vec!["/a".to_owned(), "/b".to_owned()]
            } else {
                vec![]
            }
        };
        assert_eq!(expand(&m.read[0], "/h", &vals), ["/a", "/b"]);
        assert!(expand(&m.read[1], "/h", &vals).is_empty());
        assert_eq!(expand("~/x", "/home/u", &vals), ["/home/u/x"]);
    }

    #[test]
    fn process_matching() {
        let m = parse(r#"{"match": {"exe": ["node"], "argv": ["server-memory"]}}"#).unwrap();
        assert!(m.matches_process("/usr/bin/node", &argv(&["node", "/x/server-memory/dist/index.js"])));
        assert!(!m.matches_process("/usr/bin/python3", &argv(&["python3", "server-memory"])));
        assert!(!parse("{}").unwrap().matches_process("/usr/bin/node", &argv(&["node"])));
    }
}
