//! A sink's on-disk queue: every alert for the sink is appended here first and
//! removed once the sink accepted it, so a sink that is down or slow costs
//! disk, not alerts, and an agent restart replays what was left, in order.
//!
//! Layout of a spool directory: `queue.<generation>` (one JSON alert per line) and
//! `cursor` (`<generation> <offset of the first undelivered line>`, replaced
//! atomically). Delivered lines are dropped by truncation when the queue
//! empties, or by copying the rest into `queue.<generation+1>` when the dead prefix
//! grows; the cursor's rename is the commit point of both.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use crate::config::SpoolConfig;

/// Dead prefix worth compacting away (also: more than half of the file).
const COMPACT_MIN: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {}: {what}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("spool {}: full ({alerts} alerts, {bytes} bytes)", dir.display())]
    Full { dir: PathBuf, alerts: u64, bytes: u64 },
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    limits: SpoolConfig,
    generation: u64,
    file: File,
    /// Offset of the first undelivered line.
    head: u64,
    /// Length of the head line, with its newline, once read.
    head_len: Option<u64>,
    /// File length.
    end: u64,
    /// Undelivered lines.
    count: u64,
}

impl Spool {
    /// Opens (or creates, mode 0700) the spool in `dir` and finds what is left
    /// from a previous run.
    pub fn open(dir: &Path, limits: SpoolConfig) -> Result<Self, SpoolError> {
        let err = |what: &'static str| {
            let dir = dir.to_owned();
            move |source| SpoolError::Io { dir, what, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err("creating the directory"))?;
        let (generation, head) = match std::fs::read_to_string(dir.join("cursor")) {
            Ok(s) => parse_cursor(&s).ok_or_else(|| {
                err("reading the cursor")(io::Error::new(io::ErrorKind::InvalidData, format!("bad cursor {s:?}")))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, 0),
            Err(e) => return Err(err("reading the cursor")(e)),
        };
        // Leftovers of an interrupted compaction.
        for entry in std::fs::read_dir(dir).map_err(err("listing the directory"))?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("queue.") && name != format!("queue.{generation}") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(dir.join(format!("queue.{generation}")))
            .map_err(err("opening the queue"))?;
        let mut spool = Spool {
            dir: dir.to_owned(),
            limits,
            generation,
            file,
            head,
            head_len: None,
            end: 0,
            count: 0,
        };
        spool.recover().map_err(err("recovering the queue"))?;
        Ok(spool)
    }

    /// Drops a partly written last line (a crash mid-append), clamps the
    /// cursor, and counts the lines left.
    fn recover(&mut self) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        self.head = self.head.min(len);
        let mut complete = self.head;
        let mut count = 0;
        let mut buf = vec![0u8; 64 << 10];
        let mut off = self.head;
        while off < len {
            let n = self.file.read_at(&mut buf, off)?;
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                if *b == b'\n' {
                    count += 1;
                    complete = off + i as u64 + 1;
                }
            }
            off += n as u64;
        }
        if complete < len {
            log::warn!(
                "spool {}: dropping {} bytes of a partly written alert",
                self.dir.display(),
                len - complete
            );
            self.file.set_len(complete)?;
        }
        self.end = complete;
        self.count = count;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Three quarters full (count or bytes): event lines stop here, the
    /// rest is kept for alerts.
    pub fn nearly_full(&self) -> bool {
        self.count * 4 >= self.limits.max_alerts * 3 || self.bytes() * 4 >= self.limits.max_bytes * 3
    }

    /// Bytes of undelivered lines.
    pub fn bytes(&self) -> u64 {
        self.end - self.head
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one line (no newline inside). Full: nothing written.
    pub fn push(&mut self, line: &[u8]) -> Result<(), SpoolError> {
        debug_assert!(!line.contains(&b'\n'));
        let size = line.len() as u64 + 1;
        if self.count + 1 > self.limits.max_alerts || self.bytes() + size > self.limits.max_bytes {
            return Err(SpoolError::Full {
                dir: self.dir.clone(),
                alerts: self.count,
                bytes: self.bytes(),
            });
        }
        let mut rec = Vec::with_capacity(line.len() + 1);
        rec.extend_from_slice(line);
        rec.push(b'\n');
        if let Err(source) = self.file.write_all(&rec) {
            // Never leave half a line behind (full disk).
            let _ = self.file.set_len(self.end);
            return Err(SpoolError::Io {
                dir: self.dir.clone(),
                what: "appending",
                source,
            });
        }
        self.end += size;
        self.count += 1;
        Ok(())
    }

    /// The oldest undelivered line, without its newline.
    pub fn peek(&mut self) -> Result<Option<Vec<u8>>, SpoolError> {
        if self.count == 0 {
            return Ok(None);
        }
        let mut line = Vec::new();
        let mut buf = [0u8; 8192];
        let mut off = self.head;
        loop {
            let n = self.file.read_at(&mut buf, off).map_err(|source| SpoolError::Io {
                dir: self.dir.clone(),
                what: "reading",
                source,
            })?;
            if n == 0 {
                return Err(SpoolError::Io {
                    dir: self.dir.clone(),
                    what: "reading",
                    source: io::Error::new(io::ErrorKind::UnexpectedEof, "queue shorter than counted"),
                });
            }
            if let Some(i) = buf[..n].iter().position(|b| *b == b'\n') {
                line.extend_from_slice(&buf[..i]);
                self.head_len = Some(line.len() as u64 + 1);
                return Ok(Some(line));
            }
            line.extend_from_slice(&buf[..n]);
            off += n as u64;
        }
    }

    /// Removes the line `peek` returned (it was delivered).
    pub fn pop(&mut self) -> Result<(), SpoolError> {
        let len = match self.head_len.take() {
            Some(l) => l,
            None => {
                self.peek()?;
                self.head_len.take().unwrap_or(0)
            }
        };
        self.advance(1, len)
    }

    /// Up to `max` of the oldest undelivered lines, in order, without their
    /// newlines, no more than `max_bytes` together (but at least one).
    pub fn peek_many(&mut self, max: usize, max_bytes: usize) -> Result<Vec<Vec<u8>>, SpoolError> {
        let mut lines = Vec::new();
        let mut line = Vec::new();
        let mut total = 0usize;
        let mut buf = vec![0u8; 64 << 10];
        let mut off = self.head;
        let want = (self.count as usize).min(max);
        while lines.len() < want && off < self.end {
            let n = self.file.read_at(&mut buf, off).map_err(|source| SpoolError::Io {
                dir: self.dir.clone(),
                what: "reading",
                source,
            })?;
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                if b != b'\n' {
                    line.push(b);
                    continue;
                }
                if !lines.is_empty() && total + line.len() + 1 > max_bytes {
                    return Ok(lines);
                }
                total += line.len() + 1;
                lines.push(std::mem::take(&mut line));
                if lines.len() == want {
                    return Ok(lines);
                }
            }
            off += n as u64;
        }
        if lines.len() < want {
            return Err(SpoolError::Io {
                dir: self.dir.clone(),
                what: "reading",
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "queue shorter than counted"),
            });
        }
        Ok(lines)
    }

    /// Removes the first `lines` of what `peek_many` returned (delivered, or
    /// moved to the dead-letter file).
    pub fn pop_many(&mut self, lines: &[Vec<u8>]) -> Result<(), SpoolError> {
        if lines.is_empty() {
            return Ok(());
        }
        self.head_len = None;
        let bytes = lines.iter().map(|l| l.len() as u64 + 1).sum();
        self.advance(lines.len() as u64, bytes)
    }

    fn advance(&mut self, lines: u64, bytes: u64) -> Result<(), SpoolError> {
        self.head += bytes;
        self.count -= lines;
        let res = if self.count == 0 {
            // Truncate first: a crash before the cursor is written leaves a
            // cursor past the end, which `recover` clamps to "empty".
            self.file.set_len(0).and_then(|()| {
                self.head = 0;
                self.end = 0;
                self.write_cursor(self.generation, 0)
            })
        } else if self.head >= COMPACT_MIN && self.head * 2 > self.end {
            self.compact()
        } else {
            self.write_cursor(self.generation, self.head)
        };
        res.map_err(|source| SpoolError::Io {
            dir: self.dir.clone(),
            what: "advancing the cursor",
            source,
        })
    }

    fn compact(&mut self) -> io::Result<()> {
        let next = self.generation + 1;
        let path = self.dir.join(format!("queue.{next}"));
        let mut out = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&path)?;
        let mut buf = vec![0u8; 64 << 10];
        let mut off = self.head;
        while off < self.end {
            let want = buf.len().min((self.end - off) as usize);
            let n = self.file.read_at(&mut buf[..want], off)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "queue shrank"));
            }
            out.write_all(&buf[..n])?;
            off += n as u64;
        }
        out.sync_data()?;
        self.write_cursor(next, 0)?;
        let old = self.dir.join(format!("queue.{}", self.generation));
        self.file = OpenOptions::new().read(true).append(true).open(&path)?;
        let _ = std::fs::remove_file(old);
        self.generation = next;
        self.end -= self.head;
        self.head = 0;
        Ok(())
    }

    fn write_cursor(&self, generation: u64, head: u64) -> io::Result<()> {
        let tmp = self.dir.join("cursor.tmp");
        std::fs::write(&tmp, format!("{generation} {head}\n"))?;
        std::fs::rename(&tmp, self.dir.join("cursor"))
    }
}

fn parse_cursor(s: &str) -> Option<(u64, u64)> {
    let mut it = s.split_whitespace();
    let generation = it.next()?.parse().ok()?;
    let head = it.next()?.parse().ok()?;
    Some((generation, head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mcpwatch-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn limits(max_alerts: u64, max_bytes: u64) -> SpoolConfig {
        SpoolConfig { max_alerts, max_bytes }
    }

    fn drain(s: &mut Spool) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(l) = s.peek().unwrap() {
            out.push(String::from_utf8(l).unwrap());
            s.pop().unwrap();
        }
        out
    }

    #[test]
    fn peek_many_is_bounded_and_pop_many_removes_a_prefix() {
        let d = dir("many");
        let mut s = Spool::open(&d, limits(100, 1 << 20)).unwrap();
        for i in 0..10 {
            s.push(format!("alert-{i}").as_bytes()).unwrap();
        }
        let all = s.peek_many(4, 1 << 20).unwrap();
        assert_eq!(
            all,
            (0..4).map(|i| format!("alert-{i}").into_bytes()).collect::<Vec<_>>()
        );
        // Two lines of 8 bytes (with newlines) fit 17 bytes; one is always given.
        assert_eq!(s.peek_many(10, 17).unwrap().len(), 2);
        assert_eq!(s.peek_many(10, 1).unwrap().len(), 1);
        s.pop_many(&all[..3]).unwrap();
        assert_eq!(s.len(), 7);
        assert_eq!(s.peek().unwrap().unwrap(), b"alert-3");
        drop(s);
        let mut s = Spool::open(&d, limits(100, 1 << 20)).unwrap();
        let rest = s.peek_many(100, 1 << 20).unwrap();
        assert_eq!(rest.len(), 7);
        s.pop_many(&rest).unwrap();
        assert!(s.is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn replays_in_order_across_reopen() {
        let d = dir("order");
        let mut s = Spool::open(&d, limits(100, 1 << 20)).unwrap();
        for i in 0..10 {
            s.push(format!("a{i}").as_bytes()).unwrap();
        }
        assert_eq!(s.peek().unwrap().unwrap(), b"a0");
        s.pop().unwrap();
        s.pop().unwrap();
        drop(s);
        let mut s = Spool::open(&d, limits(100, 1 << 20)).unwrap();
        assert_eq!(s.len(), 8);
        let got = drain(&mut s);
        assert_eq!(got, (2..10).map(|i| format!("a{i}")).collect::<Vec<_>>());
        assert!(s.is_empty());
        assert_eq!(std::fs::metadata(d.join("queue.0")).unwrap().len(), 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bounded_by_count_and_bytes() {
        let d = dir("bounds");
        let mut s = Spool::open(&d, limits(3, 1 << 20)).unwrap();
        for i in 0..3 {
            s.push(format!("x{i}").as_bytes()).unwrap();
        }
        assert!(matches!(s.push(b"x3"), Err(SpoolError::Full { alerts: 3, .. })));
        s.peek().unwrap();
        s.pop().unwrap();
        s.push(b"x3").unwrap();
        assert_eq!(drain(&mut s), ["x1", "x2", "x3"]);
        let d2 = dir("bytes");
        let mut s = Spool::open(&d2, limits(100, 10)).unwrap();
        s.push(b"12345").unwrap();
        assert!(s.push(b"12345").is_err(), "6 + 6 bytes > 10");
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_dir_all(&d2);
    }

    #[test]
    fn drops_a_torn_last_line_and_compacts() {
        let d = dir("torn");
        let mut s = Spool::open(&d, limits(1 << 20, 1 << 30)).unwrap();
        s.push(b"whole").unwrap();
        drop(s);
        let mut f = OpenOptions::new().append(true).open(d.join("queue.0")).unwrap();
        f.write_all(b"{\"half").unwrap();
        let mut s = Spool::open(&d, limits(1 << 20, 1 << 30)).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(drain(&mut s), ["whole"]);

        // Enough delivered lines to compact into the next generation.
        let line = vec![b'z'; 1000];
        for _ in 0..1500 {
            s.push(&line).unwrap();
        }
        s.push(b"last").unwrap();
        for _ in 0..1500 {
            s.peek().unwrap();
            s.pop().unwrap();
        }
        assert!(s.generation >= 1, "compacted");
        drop(s);
        let mut s = Spool::open(&d, limits(1 << 20, 1 << 30)).unwrap();
        assert_eq!(drain(&mut s), ["last"]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
