//! JSON lines sink: one document (ECS or OCSF) per line, to stdout or to a file rotated
//! by size (`path` -> `path.1` -> ... -> `path.<keep>`, see
//! `output::rotation`; a device or FIFO is written to, never rotated).

use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use super::record::SinkRecord;
use crate::{
    config::{FileSinkConfig, Schema},
    output::rotation,
};

pub enum FileSink {
    Stdout,
    File {
        path: PathBuf,
        rotate_bytes: u64,
        keep: u32,
        file: Option<File>,
        size: u64,
        /// The open file is a regular file (the only kind rotated).
        regular: bool,
    },
}

fn open(path: &Path) -> io::Result<(File, u64, bool)> {
    let f = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    let meta = f.metadata()?;
    Ok((f, meta.len(), meta.file_type().is_file()))
}

impl FileSink {
    pub fn new(cfg: &FileSinkConfig) -> Self {
        if cfg.path == Path::new("-") {
            return FileSink::Stdout;
        }
        FileSink::File {
            path: cfg.path.clone(),
            rotate_bytes: cfg.rotate_bytes,
            keep: cfg.keep,
            file: None,
            size: 0,
            regular: false,
        }
    }

    pub fn deliver(&mut self, rec: &SinkRecord, schema: Schema) -> io::Result<()> {
        let mut line = serde_json::to_vec(&rec.document(schema))?;
        line.push(b'\n');
        match self {
            FileSink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&line)?;
                out.flush()
            }
            FileSink::File {
                path,
                rotate_bytes,
                keep,
                file,
                size,
                regular,
            } => {
                if file.is_none() {
                    (*file, *size, *regular) = open(path).map(|(f, s, r)| (Some(f), s, r))?;
                }
                if *regular && *rotate_bytes > 0 && *size > 0 && *size + line.len() as u64 > *rotate_bytes {
                    if let Some(f) = file.take() {
                        rotation::rotate(path, *keep, &f)?;
                    }
                    (*file, *size, *regular) = open(path).map(|(f, s, r)| (Some(f), s, r))?;
                }
                let f = file.as_mut().ok_or_else(|| io::Error::other("file not open"))?;
                if let Err(e) = f.write_all(&line) {
                    // Reopen next time (the file may have been removed or the disk filled).
                    *file = None;
                    return Err(e);
                }
                *size += line.len() as u64;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_keeps_n_files() {
        let d = std::env::temp_dir().join(format!("mcpwatch-filesink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("alerts.jsonl");
        let mut sink = FileSink::new(&FileSinkConfig {
            path: path.clone(),
            rotate_bytes: 1500,
            keep: 2,
            schema: Schema::Ecs,
        });
        let mut ids = Vec::new();
        for i in 0..12 {
            let a = crate::alerts::test_alert(format!("1-{i}"), "2026-11-21T17:00:00Z".into(), 1, 1);
            sink.deliver(&SinkRecord::from(a.clone()), Schema::Ecs).unwrap();
            ids.push(a.id);
        }
        let read = |p: &Path| -> Vec<String> {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["event"]["id"].as_str().unwrap().to_owned()
                })
                .collect()
        };
        let (p1, p2) = (d.join("alerts.jsonl.1"), d.join("alerts.jsonl.2"));
        assert!(!d.join("alerts.jsonl.3").exists());
        let mut all = read(&p2);
        all.extend(read(&p1));
        all.extend(read(&path));
        assert!(std::fs::metadata(&path).unwrap().len() <= 1500);
        // The newest files hold the newest alerts, in order, with no gap.
        assert_eq!(all[..], ids[ids.len() - all.len()..]);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// `path = "/dev/null"` (here a link to it, so a failure cannot take the
    /// host's null device away): written, never rotated.
    #[test]
    fn a_device_is_never_rotated() {
        let d = std::env::temp_dir().join(format!("mcpwatch-filesink-dev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("alerts.jsonl");
        std::os::unix::fs::symlink("/dev/null", &path).unwrap();
        let mut sink = FileSink::new(&FileSinkConfig {
            path: path.clone(),
            rotate_bytes: 1500,
            keep: 2,
            schema: Schema::Ecs,
        });
        for i in 0..12 {
            let a = crate::alerts::test_alert(format!("1-{i}"), "2026-11-21T17:00:00Z".into(), 1, 1);
            sink.deliver(&SinkRecord::from(a.clone()), Schema::Ecs).unwrap();
        }
        assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
        assert!(!d.join("alerts.jsonl.1").exists(), "a device was rotated");
        let _ = std::fs::remove_dir_all(&d);
    }
}
