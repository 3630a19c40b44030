//! The events file: bounded by size with rotation (`events.jsonl` ->
//! `events.jsonl.1` ... `.N`, the oldest removed), reopened on request
//! (logrotate's SIGHUP convention), and always made of whole lines: a writer
//! that starts after a crash mid-line drops the torn line first, and a write
//! that fails part-way (full disk) is cut back, its lines counted as dropped.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read as _, Seek as _, SeekFrom, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use crate::config::EventsConfig;

/// Lines are buffered up to this many bytes between flushes.
const BUFFER: usize = 64 << 10;

#[derive(Debug)]
pub struct EventsFile {
    path: PathBuf,
    limits: EventsConfig,
    file: File,
    /// Bytes in the file (all whole lines).
    size: u64,
    buf: Vec<u8>,
    /// Lines in `buf`.
    lines: u64,
    /// Lines that could not be written.
    dropped: u64,
}

impl EventsFile {
    /// Opens `path` for appending (mode 0600: events name files and
    /// arguments), dropping a torn last line left by a writer that died.
    pub fn open(path: &Path, limits: EventsConfig) -> io::Result<Self> {
        let (file, size) = open_whole_lines(path)?;
        Ok(Self {
            path: path.to_owned(),
            limits,
            file,
            size,
            buf: Vec::with_capacity(BUFFER),
            lines: 0,
            dropped: 0,
        })
    }

    /// Queues one line (with its newline), rotating first when it would
    /// take the file past `max_bytes`.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let max = self.limits.max_bytes;
        if max > 0 && self.size + (self.buf.len() + line.len()) as u64 > max && self.size + self.buf.len() as u64 > 0 {
            self.flush()?;
            self.rotate()?;
        }
        self.buf.extend_from_slice(line);
        self.lines += 1;
        if self.buf.len() >= BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes what is buffered. On failure the file is cut back to its last
    /// whole line and the buffered lines are dropped (and counted): a full
    /// disk must not grow the agent's memory.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let res = self.file.write_all(&self.buf);
        match res {
            Ok(()) => {
                self.size += self.buf.len() as u64;
            }
            Err(_) => {
                let _ = self.file.set_len(self.size);
                self.dropped += self.lines;
            }
        }
        self.buf.clear();
        self.lines = 0;
        res
    }

    /// Opens the path again (after logrotate moved the file away).
    pub fn reopen(&mut self) -> io::Result<()> {
        self.flush()?;
        let (file, size) = open_whole_lines(&self.path)?;
        self.file = file;
        self.size = size;
        Ok(())
    }

    /// Lines that could not be written, since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// `path` -> `path.1` -> ... -> `path.keep` (removed beyond), then a new file.
    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.limits.keep;
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        if keep == 0 {
            std::fs::remove_file(&self.path).or_else(ignore_missing)?;
        } else {
            std::fs::remove_file(numbered(keep)).or_else(ignore_missing)?;
            for n in (1..keep).rev() {
                std::fs::rename(numbered(n), numbered(n + 1)).or_else(ignore_missing)?;
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.reopen()
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// Opens for appending; a last line without its newline (the writer died
/// mid-line) is cut off so every line of the file parses.
fn open_whole_lines(path: &Path) -> io::Result<(File, u64)> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok((file, 0));
    }
    // Back from the end to the last newline, a block at a time.
    let mut end = len;
    let mut block = [0u8; 4096];
    loop {
        let start = end.saturating_sub(block.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block[..n])?;
        if let Some(i) = block[..n].iter().rposition(|b| *b == b'\n') {
            let whole = start + i as u64 + 1;
            if whole < len {
                log::warn!(
                    "{}: dropped a torn last line of {} bytes (a writer died mid-line)",
                    path.display(),
                    len - whole
                );
                file.set_len(whole)?;
            }
            return Ok((file, whole));
        }
        if start == 0 {
            log::warn!("{}: dropped a torn line of {len} bytes (no whole line)", path.display());
            file.set_len(0)?;
            return Ok((file, 0));
        }
        end = start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mcpwatch-events-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_torn_last_line_is_dropped_at_open() {
        let d = dir("torn");
        let p = d.join("events.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
        let mut f = EventsFile::open(&p, EventsConfig::default()).unwrap();
        f.write_line(b"{\"d\":4}\n").unwrap();
        f.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n{\"d\":4}\n"
        );
        std::fs::write(&p, "no newline at all").unwrap();
        let f = EventsFile::open(&p, EventsConfig::default()).unwrap();
        assert_eq!((f.size, std::fs::read(&p).unwrap().len()), (0, 0));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let d = dir("rotate");
        let p = d.join("events.jsonl");
        let limits = EventsConfig {
            max_bytes: 100,
            keep: 2,
        };
        let mut f = EventsFile::open(&p, limits).unwrap();
        let line = [b'x'; 39].iter().copied().chain([b'\n']).collect::<Vec<u8>>();
        for _ in 0..9 {
            f.write_line(&line).unwrap();
        }
        f.flush().unwrap();
        let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", p.display()));
        assert_eq!((len(&p), len(&numbered(1)), len(&numbered(2))), (40, 80, 80));
        assert!(!numbered(3).exists(), "only 2 kept");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn reopen_follows_a_moved_file() {
        let d = dir("reopen");
        let p = d.join("events.jsonl");
        let mut f = EventsFile::open(&p, EventsConfig::default()).unwrap();
        f.write_line(b"1\n").unwrap();
        f.flush().unwrap();
        std::fs::rename(&p, d.join("moved")).unwrap();
        f.reopen().unwrap();
        f.write_line(b"2\n").unwrap();
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "2\n");
        assert_eq!(std::fs::read_to_string(d.join("moved")).unwrap(), "1\n");
        let _ = std::fs::remove_dir_all(&d);
    }
}
