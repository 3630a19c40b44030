//! State the agent keeps for itself (pins, gate approvals): JSON written
//! whole to a temporary file of mode 0600 in a directory of mode 0700, synced,
//! then renamed over the old one, so a crash leaves the old file or the new
//! one and no other user reads what a server exposed.

use std::{
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::Path,
};

/// Writes `value` as pretty JSON to `path` (inside `dir`, made if missing).
pub fn write_json<T: serde::Serialize>(dir: &Path, path: &Path, value: &T) -> io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    let text = serde_json::to_string_pretty(value)?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all())?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn written_whole_private_and_replaced() {
        let dir = std::env::temp_dir().join(format!("mcpwatch-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("s.json");
        super::write_json(&dir, &path, &serde_json::json!({"a": 1})).unwrap();
        super::write_json(&dir, &path, &serde_json::json!({"a": 2})).unwrap();
        let back: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back["a"], 2);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        use std::path::Path;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
