//! The agent's stable identity for SIEM documents (ECS `agent.id`): made
//! once, kept in `<state_dir>/agent-id`, so a fleet's alerts can be told
//! apart and deduplicated across restarts and upgrades of each agent.

use std::{io, path::Path, sync::OnceLock};

const FILE: &str = "agent-id";

static ID: OnceLock<String> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum AgentIdError {
    #[error("reading or writing the agent id in {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// This agent's id, once [`load_or_create`] ran (`None` in tools and tests
/// that never start an agent).
pub fn get() -> Option<&'static str> {
    ID.get().map(String::as_str)
}

/// Reads the id kept in `state_dir`, or makes and keeps a new one. A random
/// UUID from the kernel (`/proc/sys/kernel/random/uuid`): nothing to add
/// to the dependencies for one value made once per host.
pub fn load_or_create(state_dir: &Path) -> Result<&'static str, AgentIdError> {
    let path = state_dir.join(FILE);
    let err = |source| AgentIdError::Io {
        path: path.display().to_string(),
        source,
    };
    let create = || -> Result<String, AgentIdError> {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .map_err(err)?
            .trim()
            .to_owned();
        std::fs::create_dir_all(state_dir).map_err(err)?;
        // Written whole then renamed: a crash never leaves half an id.
        let tmp = state_dir.join(format!("{FILE}.tmp"));
        std::fs::write(&tmp, format!("{id}\n")).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        Ok(id)
    };
    let id = match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_owned(),
        Ok(_) => create()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => create()?,
        Err(e) => return Err(err(e)),
    };
    Ok(ID.get_or_init(|| id).as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("mcpwatch-agent-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = load_or_create(&dir).unwrap().to_owned();
        assert_eq!(first.len(), 36, "{first}");
        let kept = std::fs::read_to_string(dir.join(FILE)).unwrap();
        assert_eq!(kept.trim(), first);
        assert_eq!(get(), Some(first.as_str()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
