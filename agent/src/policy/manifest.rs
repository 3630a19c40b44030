//! Manifests: what one server declares it needs. JSON, one file per server, a
//! superset of ToolHive's permission profile (a ToolHive profile loads as-is).
//! The schema is `manifests/manifest.schema.json`; the reference is in the README.

use std::{
    collections::BTreeMap,
    fmt,
    marker::PhantomData,
    net::IpAddr,
    path::{Path, PathBuf},
};

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::{
    glob::{GlobError, PathGlob},
    net::{HostError, HostPattern, ListenSpec},
};
use crate::mcp::pins::ExpectedPins;

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
    /// Per-tool narrowing: while a call of the tool is in flight, each
    /// category given here replaces the server-wide one.
    #[serde(default, deserialize_with = "unique_map")]
    pub tools: BTreeMap<String, ToolSpec>,
    /// The approved tool pins (tool name -> `sha256:...`, as `mcpwatch pins
    /// show` prints them): the baseline of rug-pull detection instead of the
    /// first listing seen.
    #[serde(default, deserialize_with = "unique_map_some")]
    pub pins: Option<BTreeMap<String, String>>,
}

/// One tool's grants as written: an absent category falls back to the
/// server-wide one.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<ToolNetworkSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
}

/// The top-level `network` shape; `outbound` and `inbound` each replace the
/// server-wide one when given, and fall back to it when not.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ToolNetworkSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<OutboundSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<InboundSpec>,
    /// Accepted for the shape's sake, meaningless on a host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// A JSON object whose keys must be unique: serde_json keeps the last of
/// duplicate keys silently, and one tool's grant must not hide another's.
fn unique_map<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Unique<V>(PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Unique<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(k) = map.next_key::<String>()? {
                if out.contains_key(&k) {
                    return Err(serde::de::Error::custom(format!("`{k}` is given twice")));
                }
                let v = map.next_value()?;
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique(PhantomData))
}

fn unique_map_some<'de, D, V>(d: D) -> Result<Option<BTreeMap<String, V>>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    unique_map(d).map(Some)
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
    pub outbound: Outbound,
    /// Peers it may accept connections from (empty: any).
    pub inbound: Vec<HostPattern>,
    pub listen: Vec<ListenSpec>,
    pub exec: Vec<ExePattern>,
    /// Narrowed grants by tool name.
    pub tools: BTreeMap<String, ToolGrant>,
    /// Expected tool pins (normalised to lowercase hex).
    pub pins: Option<ExpectedPins>,
    /// What is valid but probably not meant (a tool grant wider than the
    /// server's...): logged at load, printed by `check-manifests`.
    pub warnings: Vec<String>,
    /// The declaration as written, for the `declared` field of alerts.
    pub raw: ManifestFile,
}

/// Outbound grants, compiled.
#[derive(Debug, Clone, Default)]
pub struct Outbound {
    /// `insecure_allow_all`.
    pub all: bool,
    pub hosts: Vec<HostPattern>,
    /// Ports allowed with every host that names none (empty: any port).
    pub ports: Vec<u16>,
    /// `tcp`, `udp` (empty: both).
    pub transports: Vec<String>,
}

/// One tool's narrowed grants, compiled; `None` falls back to the server-wide grant.
#[derive(Debug, Clone, Default)]
pub struct ToolGrant {
    /// Path patterns before `~` and `${arg}` expansion.
    pub read: Option<Vec<String>>,
    pub write: Option<Vec<String>>,
    pub outbound: Option<Outbound>,
    pub inbound: Option<Vec<HostPattern>>,
    pub exec: Option<Vec<ExePattern>>,
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
    Name(#[from] crate::pipeline::servers::NameError),
    #[error("a tool name must not be empty")]
    EmptyToolName,
    #[error("{0:?} is not a tool pin: `sha256:` and 64 hex digits, as `mcpwatch pins show` prints")]
    Pin(String),
}

/// An entry that failed: the field, the value, what is wrong.
type Failed = (String, String, EntryError);

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
        crate::pipeline::servers::validate_name(&name).map_err(|e| ("name".to_owned(), name.clone(), e.into()))?;
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
        check_paths(&raw.read, "read", &arg_names)?;
        check_paths(&raw.write, "write", &arg_names)?;
        let mut match_exe = Vec::new();
        for (i, e) in raw.matcher.exe.iter().enumerate() {
            match_exe.push(ExePattern::parse(e).map_err(|err| (format!("match.exe[{i}]"), e.clone(), err.into()))?);
        }
        let mut match_argv = Vec::new();
        for (i, e) in raw.matcher.argv.iter().enumerate() {
            match_argv.push(Regex::new(e).map_err(|err| (format!("match.argv[{i}]"), e.clone(), err.into()))?);
        }
        for (i, s) in raw.matcher.server.iter().enumerate() {
            crate::pipeline::servers::validate_name(s)
                .map_err(|e| (format!("match.server[{i}]"), s.clone(), e.into()))?;
        }
        let outbound = compile_outbound(&raw.network.outbound, "network.outbound")?;
        let inbound = compile_inbound(&raw.network.inbound, "network.inbound")?;
        let mut listen = Vec::new();
        for (i, l) in raw.listen.iter().enumerate() {
            listen.push(ListenSpec::parse(l).map_err(|e| (format!("listen[{i}]"), l.clone(), e.into()))?);
        }
        let exec = compile_exec(&raw.exec, "exec")?;
        let mut tools = BTreeMap::new();
        for (tool, spec) in &raw.tools {
            if tool.is_empty() {
                return Err(("tools".into(), String::new(), EntryError::EmptyToolName));
            }
            tools.insert(tool.clone(), compile_tool(tool, spec, &arg_names)?);
        }
        let pins = match &raw.pins {
            None => None,
            Some(p) => {
                let mut out = ExpectedPins::new();
                for (tool, hash) in p {
                    if tool.is_empty() {
                        return Err(("pins".into(), hash.clone(), EntryError::EmptyToolName));
                    }
                    let hash = pin_hash(hash)
                        .ok_or_else(|| (format!("pins.{tool}"), hash.clone(), EntryError::Pin(hash.clone())))?;
                    out.insert(tool.clone(), hash);
                }
                Some(out)
            }
        };
        let mut m = Self {
            name,
            file: file.map(Path::to_owned),
            match_servers: raw.matcher.server.clone(),
            match_exe,
            match_argv,
            args,
            read: raw.read.clone(),
            write: raw.write.clone(),
            outbound,
            inbound,
            listen,
            exec,
            tools,
            pins,
            warnings: Vec::new(),
            raw,
        };
        m.warnings = m.tool_warnings();
        Ok(m)
    }

    /// Tool grants that are valid but probably not what was meant.
    fn tool_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let readable: Vec<String> = self.read.iter().chain(&self.write).cloned().collect();
        for (tool, spec) in &self.raw.tools {
            let at = format!("tools.{tool}");
            if spec.read.is_none() && spec.write.is_none() && spec.network.is_none() && spec.exec.is_none() {
                out.push(format!("{at}: narrows nothing (give read, write, network or exec)"));
            }
            if let Some(pins) = &self.pins
                && !pins.contains_key(tool)
            {
                out.push(format!(
                    "{at}: `pins` has no tool {tool:?}: is the name spelled as the server lists it?"
                ));
            }
            let wider = |field: &str, i: usize, v: &str, within: &str| {
                format!(
                    "{at}.{field}[{i}]: {v:?} is not within the server-wide `{within}`: it widens the grant during {tool}'s calls"
                )
            };
            for (i, p) in spec.read.iter().flatten().enumerate() {
                if !path_within(p, &readable) {
                    out.push(wider("read", i, p, "read`/`write"));
                }
            }
            for (i, p) in spec.write.iter().flatten().enumerate() {
                if !path_within(p, &self.write) {
                    out.push(wider("write", i, p, "write"));
                }
            }
            if let Some(read) = &spec.read
                && spec.write.is_none()
                && self.write.iter().any(|w| !path_within(w, read))
            {
                out.push(format!(
                    "{at}: `read` is narrowed but `write` is not: the server-wide `write` still applies to its calls, \
                     and write implies read (give `\"write\": []` or a narrowed list)"
                ));
            }
            for (i, e) in spec.exec.iter().flatten().enumerate() {
                if !self.raw.exec.iter().any(|s| s == e) && !self.exec.iter().any(|s| s.matches(e)) {
                    out.push(wider("exec", i, e, "exec"));
                }
            }
            let grant = &self.tools[tool];
            if let Some(o) = &grant.outbound {
                out.extend(
                    outbound_widening(o, &self.outbound)
                        .into_iter()
                        .map(|w| format!("{at}.network.outbound{w}: it widens the grant during {tool}'s calls")),
                );
            }
            if let Some(inb) = &grant.inbound
                && !self.inbound.is_empty()
            {
                if inb.is_empty() {
                    out.push(format!(
                        "{at}.network.inbound.allow_host: empty (any peer) while the server-wide list is not: \
                         it widens the grant during {tool}'s calls"
                    ));
                }
                for (i, h) in inb.iter().enumerate() {
                    if !self.inbound.iter().any(|s| s.host.covers(&h.host)) {
                        out.push(format!(
                            "{at}.network.inbound.allow_host[{i}]: not within the server-wide `network.inbound`: \
                             it widens the grant during {tool}'s calls"
                        ));
                    }
                }
            }
        }
        out
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

fn check_paths(list: &[String], field: &str, args: &[&str]) -> Result<(), Failed> {
    for (i, p) in list.iter().enumerate() {
        check_path(p, args).map_err(|e| (format!("{field}[{i}]"), p.clone(), e))?;
    }
    Ok(())
}

fn compile_exec(list: &[String], field: &str) -> Result<Vec<ExePattern>, Failed> {
    list.iter()
        .enumerate()
        .map(|(i, e)| ExePattern::parse(e).map_err(|err| (format!("{field}[{i}]"), e.clone(), err.into())))
        .collect()
}

fn compile_outbound(spec: &OutboundSpec, field: &str) -> Result<Outbound, Failed> {
    let mut hosts = Vec::new();
    for (i, h) in spec.allow_host.iter().enumerate() {
        hosts.push(HostPattern::parse(h).map_err(|e| (format!("{field}.allow_host[{i}]"), h.clone(), e.into()))?);
    }
    for (i, t) in spec.allow_transport.iter().enumerate() {
        if !matches!(t.to_ascii_lowercase().as_str(), "tcp" | "udp") {
            return Err((
                format!("{field}.allow_transport[{i}]"),
                t.clone(),
                EntryError::Transport(t.clone()),
            ));
        }
    }
    Ok(Outbound {
        all: spec.insecure_allow_all,
        hosts,
        ports: spec.allow_port.clone(),
        transports: spec.allow_transport.iter().map(|t| t.to_ascii_lowercase()).collect(),
    })
}

fn compile_inbound(spec: &InboundSpec, field: &str) -> Result<Vec<HostPattern>, Failed> {
    spec.allow_host
        .iter()
        .enumerate()
        .map(|(i, h)| HostPattern::parse(h).map_err(|e| (format!("{field}.allow_host[{i}]"), h.clone(), e.into())))
        .collect()
}

/// One tool's grants; errors name the tool (`tools.read_file.read[0]`).
fn compile_tool(tool: &str, spec: &ToolSpec, args: &[&str]) -> Result<ToolGrant, Failed> {
    let at = format!("tools.{tool}");
    if let Some(r) = &spec.read {
        check_paths(r, &format!("{at}.read"), args)?;
    }
    if let Some(w) = &spec.write {
        check_paths(w, &format!("{at}.write"), args)?;
    }
    let net = spec.network.as_ref();
    Ok(ToolGrant {
        read: spec.read.clone(),
        write: spec.write.clone(),
        outbound: net
            .and_then(|n| n.outbound.as_ref())
            .map(|o| compile_outbound(o, &format!("{at}.network.outbound")))
            .transpose()?,
        inbound: net
            .and_then(|n| n.inbound.as_ref())
            .map(|i| compile_inbound(i, &format!("{at}.network.inbound")))
            .transpose()?,
        exec: spec
            .exec
            .as_ref()
            .map(|e| compile_exec(e, &format!("{at}.exec")))
            .transpose()?,
    })
}

/// A pin as `mcpwatch pins show` prints it, hex in lowercase.
fn pin_hash(h: &str) -> Option<String> {
    let hex = h.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// Whether path pattern `p` lies within one of `within`, both as written:
/// `~` and `${NAME}` stand for themselves, so `${roots}/docs/**` is within
/// `${roots}`. Wildcards of `p` are matched as text, which errs towards
/// "not within" (a warning, never a rejection).
fn path_within(p: &str, within: &[String]) -> bool {
    let probe = |s: &str| expand(s, "/@home@", &|n| vec![format!("/@arg@{n}")]);
    let globs: Vec<PathGlob> = within
        .iter()
        .flat_map(|w| probe(w))
        .filter_map(|w| PathGlob::new(&w).ok())
        .collect();
    within.iter().any(|w| w == p) || probe(p).iter().all(|p| globs.iter().any(|g| g.matches(p)))
}

/// How a tool's outbound grant goes beyond the server's: `(field suffix: what)`.
fn outbound_widening(tool: &Outbound, server: &Outbound) -> Vec<String> {
    if server.all {
        return Vec::new();
    }
    if tool.all {
        return vec![".insecure_allow_all: true while the server-wide grant is not".into()];
    }
    let mut out = Vec::new();
    if !server.transports.is_empty()
        && (tool.transports.is_empty() || tool.transports.iter().any(|t| !server.transports.contains(t)))
    {
        out.push(".allow_transport: allows transports the server-wide grant does not".into());
    }
    let ports_within = |tp: &[u16], sp: &[u16]| sp.is_empty() || (!tp.is_empty() && tp.iter().all(|p| sp.contains(p)));
    for (i, h) in tool.hosts.iter().enumerate() {
        let tp: Vec<u16> = h.port.map(|p| vec![p]).unwrap_or_else(|| tool.ports.clone());
        let covered = server.hosts.iter().any(|s| {
            let sp: Vec<u16> = s.port.map(|p| vec![p]).unwrap_or_else(|| server.ports.clone());
            s.host.covers(&h.host) && ports_within(&tp, &sp)
        });
        if !covered {
            out.push(format!(".allow_host[{i}]: not within the server-wide hosts and ports"));
        }
    }
    out
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
        assert_eq!(m.outbound.hosts.len(), 3);
        assert_eq!(m.outbound.ports, [443, 80]);
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
    fn tools_narrow_categories_and_omitted_ones_fall_back() {
        let m = parse(
            r#"{"args": {"roots": {"from": "server-filesystem"}},
                "read": ["${roots}"], "write": ["${roots}"], "exec": ["git"],
                "network": {"outbound": {"allow_host": [".github.com"], "allow_port": [443]}},
                "tools": {
                  "read_file": {"write": []},
                  "push": {"network": {"outbound": {"allow_host": ["api.github.com"], "allow_port": [443]}},
                           "exec": ["git"]},
                  "notes": {"read": ["${roots}/notes/**"], "write": ["${roots}/notes"]}
                }}"#,
        )
        .unwrap();
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        let rf = &m.tools["read_file"];
        assert_eq!(rf.write.as_deref(), Some(&[][..]));
        assert!(rf.read.is_none() && rf.outbound.is_none() && rf.exec.is_none());
        let push = &m.tools["push"];
        assert_eq!(push.outbound.as_ref().unwrap().hosts.len(), 1);
        assert!(push.inbound.is_none(), "inbound falls back on its own");
        assert_eq!(push.exec.as_ref().unwrap().len(), 1);
        assert_eq!(
            m.tools["notes"].read.as_deref(),
            Some(&["${roots}/notes/**".to_owned()][..])
        );
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

    #[test]
    fn tool_grants_wider_than_the_servers_load_with_warnings() {
        let m = parse(
            r#"{"read": ["/data"], "write": ["/data/out"], "exec": ["git"],
                "network": {"outbound": {"allow_host": [".github.com", "10.0.0.0/8"], "allow_port": [443]},
                            "inbound": {"allow_host": ["127.0.0.1"]}},
                "tools": {
                  "ok": {"read": ["/data/in/**"], "write": ["/data/out/*.txt"], "exec": ["/usr/bin/git"],
                         "network": {"outbound": {"allow_host": ["api.github.com", "10.1.0.0/16:443"],
                                                  "allow_port": [443]}}},
                  "wide": {"read": ["/etc"], "write": ["/data/in"], "exec": ["curl"],
                           "network": {"outbound": {"allow_host": ["example.com", "api.github.com:80"]},
                                       "inbound": {"allow_host": []}}},
                  "all": {"network": {"outbound": {"insecure_allow_all": true}}},
                  "leaky": {"read": ["/data/in"]},
                  "empty": {}
                }}"#,
        )
        .unwrap();
        let w = m.warnings.join("\n");
        assert!(!w.contains("tools.ok"), "{w}");
        for want in [
            "tools.wide.read[0]: \"/etc\" is not within the server-wide `read`/`write`",
            "tools.wide.write[0]: \"/data/in\" is not within the server-wide `write`",
            "tools.wide.exec[0]: \"curl\" is not within the server-wide `exec`",
            "tools.wide.network.outbound.allow_host[0]: not within",
            "tools.wide.network.outbound.allow_host[1]: not within",
            "tools.wide.network.inbound.allow_host: empty (any peer)",
            "tools.all.network.outbound.insecure_allow_all",
            "tools.leaky: `read` is narrowed but `write` is not",
            "tools.empty: narrows nothing",
        ] {
            assert!(w.contains(want), "missing {want:?} in:\n{w}");
        }
        assert_eq!(m.warnings.len(), 9, "{w}");
        // Arguments and ~ compare as written.
        let m = parse(
            r#"{"args": {"roots": {"from": "x"}}, "read": ["${roots}", "~/notes"],
                "tools": {"t": {"read": ["${roots}/a/**", "~/notes/*.md"], "write": []}}}"#,
        )
        .unwrap();
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    #[test]
    fn pins_are_validated_and_normalised() {
        let hex = "AB".repeat(32);
        let m = parse(&format!(
            r#"{{"pins": {{"add": "sha256:{hex}"}}, "tools": {{"add": {{"exec": []}}}}}}"#
        ))
        .unwrap();
        assert_eq!(m.pins.unwrap()["add"], format!("sha256:{}", hex.to_lowercase()));
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert!(parse("{}").unwrap().pins.is_none());
        assert_eq!(parse(r#"{"pins": {}}"#).unwrap().pins, Some(ExpectedPins::new()));
        for bad in [
            "sha256:abc",
            "md5:0123",
            &"0".repeat(64),
            &format!("sha256:{}", "g".repeat(64)),
        ] {
            let e = parse(&format!("{{\n\"pins\": {{\"add\": \"{bad}\"}}}}")).unwrap_err();
            assert_eq!((e.field.as_str(), e.line), ("pins.add", 2), "{e}");
            assert!(e.what.contains("is not a tool pin"), "{e}");
        }
        let e = parse(r#"{"pins": {"add": 1}}"#).unwrap_err();
        assert_eq!(e.field, "pins.add", "{e}");
        let e = parse(r#"{"pins": {"": "x"}}"#).unwrap_err();
        assert!(e.what.contains("tool name"), "{e}");
        let m = parse(&format!(
            r#"{{"pins": {{"add": "sha256:{hex}"}}, "tools": {{"ad": {{"exec": []}}}}}}"#
        ))
        .unwrap();
        assert!(m.warnings[0].contains("`pins` has no tool \"ad\""), "{:?}", m.warnings);
    }

    #[test]
    fn process_matching() {
        let m = parse(r#"{"match": {"exe": ["node"], "argv": ["server-memory"]}}"#).unwrap();
        assert!(m.matches_process("/usr/bin/node", &argv(&["node", "/x/server-memory/dist/index.js"])));
        assert!(!m.matches_process("/usr/bin/python3", &argv(&["python3", "server-memory"])));
        assert!(!parse("{}").unwrap().matches_process("/usr/bin/node", &argv(&["node"])));
    }
}
