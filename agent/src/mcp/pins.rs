//! Tool pinning: each tool's name, description and input schema, hashed the
//! first time a server lists them, and compared with every later listing.
//!
//! Pins live as JSON under the agent's state directory
//! (`<state-dir>/pins/<server>.json`, mode 0600). They stand for what was
//! approved: a change is alerted (once per new version) but never written
//! over the pin; accepting it means deleting the pin (or the tool's entry).
//! A manifest can ship the expected pins instead (`pins: {tool: "sha256:..."}`).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::alerts::rules::{self, RuleId};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mcpwatch";
/// Description text kept in a pin and in alerts at most.
pub const DESCRIPTION_MAX: usize = 16 << 10;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("reading pins {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// A pin file that is not a regular file, or too large.
    #[error("reading pins: {0}")]
    Untrusted(#[from] crate::untrusted::UntrustedError),
    #[error("pins {path} are not valid JSON (left untouched): {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("writing pins {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// A tool as `tools/list` describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
}

impl Tool {
    /// The tools of a `tools/list` result (entries without a name are skipped).
    pub fn list(result: &Value) -> Vec<Tool> {
        let Some(tools) = result.get("tools").and_then(Value::as_array) else {
            return Vec::new();
        };
        tools.iter().filter_map(Tool::from_value).collect()
    }

    /// One entry of a `tools/list` result (None without a name).
    pub fn from_value(t: &Value) -> Option<Tool> {
        Some(Tool {
            name: t.get("name")?.as_str()?.to_owned(),
            description: t.get("description").and_then(Value::as_str).unwrap_or("").to_owned(),
            input_schema: t.get("inputSchema").cloned().unwrap_or(Value::Null),
        })
    }

    pub fn pin(&self) -> ToolPin {
        ToolPin {
            hash: sha256(&canonical(&serde_json::json!([
                self.name,
                self.description,
                self.input_schema
            ]))),
            description_hash: sha256(&self.description),
            schema_hash: sha256(&canonical(&self.input_schema)),
            description: cap(&self.description, DESCRIPTION_MAX),
        }
    }
}

/// What is pinned of one tool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ToolPin {
    /// sha256 of `[name, description, inputSchema]` (canonical JSON).
    pub hash: String,
    pub description_hash: String,
    pub schema_hash: String,
    /// The description as pinned (for diffs), at most [`DESCRIPTION_MAX`] bytes.
    pub description: String,
}

/// A server's pin file.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct PinFile {
    pub server: String,
    pub tools: BTreeMap<String, ToolPin>,
}

/// Expected pins from a manifest: tool name -> `sha256:...` of the tool.
pub type ExpectedPins = BTreeMap<String, String>;

impl PinFile {
    /// The hashes a manifest's `pins` would ship to approve these tools.
    pub fn expected(&self) -> ExpectedPins {
        self.tools.iter().map(|(n, p)| (n.clone(), p.hash.clone())).collect()
    }
}

/// What a listing differs in from the pins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Changed {
        tool: String,
        old: Option<ToolPin>,
        new: ToolPin,
        /// `description`, `inputSchema` (what differs, when known).
        fields: Vec<&'static str>,
    },
    Added {
        tool: String,
        new: ToolPin,
    },
    Removed {
        tool: String,
        old: Option<ToolPin>,
    },
    /// A removal and an addition with the same description.
    Renamed {
        from: String,
        to: String,
        new: ToolPin,
    },
}

impl Change {
    pub fn rule(&self) -> RuleId {
        match self {
            Change::Changed { .. } => &rules::MCP_RUG_PULL_CHANGED,
            Change::Added { .. } => &rules::MCP_RUG_PULL_ADDED,
            Change::Removed { .. } => &rules::MCP_RUG_PULL_REMOVED,
            Change::Renamed { .. } => &rules::MCP_RUG_PULL_RENAMED,
        }
    }

    /// The tool the change is about (the new name of a rename).
    pub fn tool(&self) -> &str {
        match self {
            Change::Changed { tool, .. } | Change::Added { tool, .. } | Change::Removed { tool, .. } => tool,
            Change::Renamed { to, .. } => to,
        }
    }

    /// Identifies the change, to alert on it once.
    fn key(&self) -> String {
        match self {
            Change::Changed { tool, new, .. } => format!("changed {tool} {}", new.hash),
            Change::Added { tool, new } => format!("added {tool} {}", new.hash),
            Change::Removed { tool, .. } => format!("removed {tool}"),
            Change::Renamed { from, to, new } => format!("renamed {from} {to} {}", new.hash),
        }
    }
}

/// The baseline of one tool: a full pin, or only a hash (manifest).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Baseline {
    Pin(ToolPin),
    Hash(String),
}

impl Baseline {
    fn hash(&self) -> &str {
        match self {
            Baseline::Pin(p) => &p.hash,
            Baseline::Hash(h) => h,
        }
    }

    fn pin(&self) -> Option<ToolPin> {
        match self {
            Baseline::Pin(p) => Some(p.clone()),
            Baseline::Hash(_) => None,
        }
    }
}

/// Differences between a baseline and a complete listing, sorted by tool.
fn compare(baseline: &BTreeMap<String, Baseline>, current: &BTreeMap<String, ToolPin>) -> Vec<Change> {
    let mut out = Vec::new();
    let mut removed: Vec<(&String, &Baseline)> = Vec::new();
    for (name, base) in baseline {
        match current.get(name) {
            None => removed.push((name, base)),
            Some(new) if new.hash != base.hash() => {
                let fields = match base {
                    Baseline::Pin(old) => [
                        (old.description_hash != new.description_hash).then_some("description"),
                        (old.schema_hash != new.schema_hash).then_some("inputSchema"),
                    ]
                    .into_iter()
                    .flatten()
                    .collect(),
                    Baseline::Hash(_) => Vec::new(),
                };
                out.push(Change::Changed {
                    tool: name.clone(),
                    old: base.pin(),
                    new: new.clone(),
                    fields,
                });
            }
            Some(_) => {}
        }
    }
    for (name, new) in current.iter().filter(|(n, _)| !baseline.contains_key(*n)) {
        let renamed_from = removed.iter().position(|(_, b)| match b {
            Baseline::Pin(old) => old.description_hash == new.description_hash,
            Baseline::Hash(_) => false,
        });
        match renamed_from {
            Some(i) => {
                let (from, _) = removed.remove(i);
                out.push(Change::Renamed {
                    from: from.clone(),
                    to: name.clone(),
                    new: new.clone(),
                });
            }
            None => out.push(Change::Added {
                tool: name.clone(),
                new: new.clone(),
            }),
        }
    }
    for (name, base) in removed {
        out.push(Change::Removed {
            tool: name.clone(),
            old: base.pin(),
        });
    }
    out
}

/// What checking a listing found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// First sight of the server: its tools were pinned now.
    pub pinned: bool,
    /// Changes not alerted before.
    pub changes: Vec<Change>,
    /// `state` (the pin file) or `manifest`.
    pub baseline: &'static str,
}

/// Pins of every server: files under the state directory, manifest pins, and
/// the changes already alerted.
#[derive(Debug)]
pub struct PinStore {
    dir: PathBuf,
    expected: HashMap<String, ExpectedPins>,
    files: HashMap<String, PinFile>,
    alerted: HashSet<(String, String)>,
}

impl PinStore {
    /// Pins under `<state_dir>/pins/` (created on first write).
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("pins"),
            expected: HashMap::new(),
            files: HashMap::new(),
            alerted: HashSet::new(),
        }
    }

    /// Pins a manifest ships for `server`; they replace the pin file as its baseline.
    pub fn expect(&mut self, server: &str, pins: ExpectedPins) {
        self.set_expected(server, Some(pins));
    }

    /// Sets (or, with `None`, drops) the pins a manifest ships for `server`.
    /// Returns whether its baseline changed; if so, its changes are alerted
    /// afresh against the new one.
    pub fn set_expected(&mut self, server: &str, pins: Option<ExpectedPins>) -> bool {
        if self.expected.get(server) == pins.as_ref() {
            return false;
        }
        match pins {
            Some(p) => self.expected.insert(server.to_owned(), p),
            None => self.expected.remove(server),
        };
        self.alerted.retain(|(s, _)| s != server);
        true
    }

    /// Servers with manifest pins.
    pub fn expected_servers(&self) -> impl Iterator<Item = &str> {
        self.expected.keys().map(String::as_str)
    }

    /// Where `server`'s pins are kept (`/` and `:` of names percent-encoded).
    pub fn path(&self, server: &str) -> PathBuf {
        let name = server.replace('%', "%25").replace('/', "%2F").replace(':', "%3A");
        self.dir.join(format!("{name}.json"))
    }

    /// Compares a complete listing with the server's pins, pinning it on first sight.
    pub fn check(&mut self, server: &str, tools: &[Tool]) -> Result<Checked, PinError> {
        let current: BTreeMap<String, ToolPin> = tools.iter().map(|t| (t.name.clone(), t.pin())).collect();
        let (baseline, origin): (BTreeMap<String, Baseline>, _) = match self.expected.get(server) {
            Some(exp) => (
                exp.iter()
                    .map(|(n, h)| (n.clone(), Baseline::Hash(h.clone())))
                    .collect(),
                "manifest",
            ),
            None => match self.load(server)? {
                Some(file) => (
                    file.tools
                        .iter()
                        .map(|(n, p)| (n.clone(), Baseline::Pin(p.clone())))
                        .collect(),
                    "state",
                ),
                None => {
                    let file = PinFile {
                        server: server.to_owned(),
                        tools: current,
                    };
                    self.store(&file)?;
                    self.files.insert(server.to_owned(), file);
                    return Ok(Checked {
                        pinned: true,
                        changes: Vec::new(),
                        baseline: "state",
                    });
                }
            },
        };
        let changes = compare(&baseline, &current)
            .into_iter()
            .filter(|c| self.alerted.insert((server.to_owned(), c.key())))
            .collect();
        Ok(Checked {
            pinned: false,
            changes,
            baseline: origin,
        })
    }

    /// Adds tools to a server's pin file (it has one: a listing was checked).
    /// The gate's approvals decide what a gated server's host sees, so a
    /// tool first listed through the gate after its approval joins the
    /// baseline instead of being a rug pull.
    pub fn absorb(&mut self, server: &str, added: Vec<(String, ToolPin)>) -> Result<(), PinError> {
        let Some(mut file) = self.load(server)?.cloned() else {
            return Ok(());
        };
        file.tools.extend(added);
        self.store(&file)?;
        self.files.insert(server.to_owned(), file);
        Ok(())
    }

    /// The server's pin file, from memory or disk; None when it has none yet.
    fn load(&mut self, server: &str) -> Result<Option<&PinFile>, PinError> {
        if !self.files.contains_key(server) {
            let path = self.path(server);
            let text = match crate::untrusted::read_text(&path, crate::untrusted::PIN_MAX_BYTES) {
                Ok(t) => t,
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let file: PinFile = serde_json::from_str(&text).map_err(|source| PinError::Parse { path, source })?;
            self.files.insert(server.to_owned(), file);
        }
        Ok(self.files.get(server))
    }

    /// The pins a server's file holds (`mcpwatch pins show`); None when it has none.
    pub fn stored(&mut self, server: &str) -> Result<Option<PinFile>, PinError> {
        Ok(self.load(server)?.cloned())
    }

    /// Every pin file under the state directory, sorted by server.
    pub fn stored_all(&self) -> Result<Vec<PinFile>, PinError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(PinError::Read {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let text = crate::untrusted::read_text(&path, crate::untrusted::PIN_MAX_BYTES)?;
            out.push(serde_json::from_str::<PinFile>(&text).map_err(|source| PinError::Parse { path, source })?);
        }
        out.sort_by(|a, b| a.server.cmp(&b.server));
        Ok(out)
    }

    /// Writes a pin file atomically (temporary file, then rename), mode 0600.
    fn store(&self, file: &PinFile) -> Result<(), PinError> {
        let path = self.path(&file.server);
        crate::private_file::write_json(&self.dir, &path, file).map_err(|source| PinError::Write { path, source })
    }
}

/// Word diff of two descriptions, git `--word-diff` style: `[-old-]{+new+}`.
pub fn word_diff(old: &str, new: &str) -> String {
    use similar::{ChangeTag, TextDiff};
    let diff = TextDiff::from_words(old, new);
    let mut out = String::new();
    for op in diff.ops() {
        for change in diff.iter_changes(op) {
            let v = change.value();
            match change.tag() {
                ChangeTag::Equal => out.push_str(v),
                ChangeTag::Delete => {
                    out.push_str("[-");
                    out.push_str(v);
                    out.push_str("-]");
                }
                ChangeTag::Insert => {
                    out.push_str("{+");
                    out.push_str(v);
                    out.push_str("+}");
                }
            }
        }
    }
    out.replace("-][-", "").replace("+}{+", "")
}

/// `sha256:<hex>` of a text.
pub fn sha256(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// JSON with object keys sorted at every level (stable whatever the map type).
pub fn canonical(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let body: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&o[k])))
                .collect();
            format!("{{{}}}", body.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical).collect::<Vec<_>>().join(",")),
        v => v.to_string(),
    }
}

/// `s` cut to at most `max` bytes on a char boundary.
pub fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests;
