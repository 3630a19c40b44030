//! Local approvals of gated tools, per host, server and tool, and the tools
//! the gate withheld (what `mcpwatch approve` shows).
//!
//! One file per server under `<state-dir>/gate/` (mode 0600, directory
//! 0700). An approval names the host it was made on: a state directory
//! copied to another host approves nothing there.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::WithheldTool;
use crate::untrusted::{self, UntrustedError};

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("reading approvals: {0}")]
    Read(#[from] UntrustedError),
    #[error("approvals {path} are not valid JSON (left untouched): {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("writing approvals {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("server {server} has no withheld tool {tool:?} to approve (withheld: {pending})")]
    NotPending {
        server: String,
        tool: String,
        pending: String,
    },
}

/// One approval: the definition approved, on which host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    pub host: String,
    /// `sha256:` of the tool's definition (`mcp::pins::Tool::pin`).
    pub hash: String,
    pub description: String,
}

/// A server's approvals and withheld tools.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct GateFile {
    pub server: String,
    #[serde(default)]
    pub approved: BTreeMap<String, Approval>,
    /// The last definition withheld of each tool not approved.
    #[serde(default)]
    pub pending: BTreeMap<String, WithheldTool>,
}

pub struct Approvals {
    dir: PathBuf,
    host: String,
}

/// This host's name, as approvals record it.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Approvals {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("gate"),
            host: host_name(),
        }
    }

    pub fn path(&self, server: &str) -> PathBuf {
        let name = server.replace('%', "%25").replace('/', "%2F").replace(':', "%3A");
        self.dir.join(format!("{name}.json"))
    }

    /// The server's file (empty when there is none).
    pub fn load(&self, server: &str) -> Result<GateFile, ApprovalError> {
        let path = self.path(server);
        match untrusted::read_text(&path, untrusted::PIN_MAX_BYTES) {
            Ok(text) => serde_json::from_str(&text).map_err(|source| ApprovalError::Parse { path, source }),
            Err(e) if e.is_not_found() => Ok(GateFile {
                server: server.to_owned(),
                ..Default::default()
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Tool -> approved hash, for this host.
    pub fn approved_here(&self, server: &str) -> Result<BTreeMap<String, String>, ApprovalError> {
        Ok(self
            .load(server)?
            .approved
            .into_iter()
            .filter(|(_, a)| a.host == self.host)
            .map(|(t, a)| (t, a.hash))
            .collect())
    }

    /// Remembers what the gate withheld (a tool approved since is not pending).
    pub fn record_pending(&self, server: &str, tools: &[WithheldTool]) -> Result<(), ApprovalError> {
        let mut file = self.load(server)?;
        let before = file.clone();
        for t in tools {
            let approved = file
                .approved
                .get(&t.name)
                .is_some_and(|a| a.host == self.host && a.hash == t.hash);
            if !approved {
                file.pending.insert(t.name.clone(), t.clone());
            }
        }
        if file == before {
            return Ok(());
        }
        self.store(&file)
    }

    /// Approves withheld tools (the definitions they were withheld with).
    pub fn approve(&self, server: &str, tools: &[String]) -> Result<Vec<Approval>, ApprovalError> {
        let mut file = self.load(server)?;
        let mut out = Vec::new();
        for name in tools {
            let Some(p) = file.pending.remove(name) else {
                return Err(ApprovalError::NotPending {
                    server: server.to_owned(),
                    tool: name.clone(),
                    pending: file.pending.keys().cloned().collect::<Vec<_>>().join(", "),
                });
            };
            let a = Approval {
                host: self.host.clone(),
                hash: p.hash,
                description: p
                    .definition
                    .get("description")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            };
            file.approved.insert(name.clone(), a.clone());
            out.push(a);
        }
        self.store(&file)?;
        Ok(out)
    }

    /// Writes atomically (temporary file, then rename), mode 0600.
    fn store(&self, file: &GateFile) -> Result<(), ApprovalError> {
        let path = self.path(&file.server);
        crate::private_file::write_json(&self.dir, &path, file).map_err(|source| ApprovalError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::mcp::gate::Unapproved;

    #[test]
    fn withheld_tools_become_approved_for_this_host_only() {
        let dir = std::env::temp_dir().join(format!("mcpwatch-approvals-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = Approvals::new(&dir);
        let rm = WithheldTool {
            name: "rm".into(),
            hash: "sha256:ab".into(),
            why: Unapproved::NotApproved,
            definition: json!({"name": "rm", "description": "Removes files."}),
        };
        a.record_pending("fs/x", std::slice::from_ref(&rm)).unwrap();
        assert!(a.approved_here("fs/x").unwrap().is_empty());
        let e = a.approve("fs/x", &["nope".into()]).unwrap_err();
        assert!(e.to_string().contains("withheld: rm"), "{e}");
        a.approve("fs/x", &["rm".into()]).unwrap();
        assert_eq!(a.approved_here("fs/x").unwrap()["rm"], "sha256:ab");
        assert!(a.load("fs/x").unwrap().pending.is_empty());
        // Another host's approval approves nothing here.
        let other = Approvals {
            dir: dir.join("gate"),
            host: "elsewhere".into(),
        };
        assert!(other.approved_here("fs/x").unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
