//! The events file: bounded by size with rotation (`events.jsonl` ->
//! `events.jsonl.1` ... `.N`, the oldest removed), reopened on request
//! (logrotate's SIGHUP convention), and always made of whole lines: a writer
//! that starts after a crash mid-line drops the torn line first, and a write
//! that fails part-way (full disk) is cut back, its lines counted as dropped.
//! Only a regular file is ever scanned, cut or rotated: `--events-out
//! /dev/null`, a FIFO or a terminal is written to and nothing else.

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
    /// The open file is a regular file (not a device, FIFO or socket): the
    /// only kind that is bounded and rotated.
    regular: bool,
}

impl EventsFile {
    /// Opens `path` for appending (mode 0600: events name files and
    /// arguments), dropping a torn last line left by a writer that died.
    pub fn open(path: &Path, limits: EventsConfig) -> io::Result<Self> {
        let (file, size, regular) = open_whole_lines(path)?;
        Ok(Self {
            path: path.to_owned(),
            limits,
            file,
            size,
            buf: Vec::with_capacity(BUFFER),
            lines: 0,
            dropped: 0,
            regular,
        })
    }

    /// Queues one line (with its newline), rotating first when it would
    /// take the file past `max_bytes`.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let start = self.buf.len();
        self.buf.extend_from_slice(line);
        self.queued(start)
    }

    /// Queues the line `render` appends to the buffer (its newline added
    /// here): every event may be a line of ~400 bytes, and one rendered
    /// elsewhere then copied here cost a copy per event. A line that fails
    /// to render leaves nothing behind.
    pub fn write_line_with(&mut self, render: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>) -> io::Result<()> {
        let start = self.buf.len();
        if let Err(e) = render(&mut self.buf) {
            self.buf.truncate(start);
            return Err(e.into());
        }
        self.buf.push(b'\n');
        self.queued(start)
    }

    /// The line at `buf[start..]` joins the buffer; when it would take the
    /// file past `max_bytes`, it is set aside while what precedes it is
    /// written and the file rotated (a failure there drops it: returned).
    fn queued(&mut self, start: usize) -> io::Result<()> {
        let max = self.limits.max_bytes;
        if self.regular && max > 0 && self.size + self.buf.len() as u64 > max && self.size + start as u64 > 0 {
            let line = self.buf.split_off(start);
            self.flush()?;
            self.rotate()?;
            self.buf.extend_from_slice(&line);
        }
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
                if self.regular {
                    let _ = self.file.set_len(self.size);
                }
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
        let (file, size, regular) = open_whole_lines(&self.path)?;
        self.file = file;
        self.size = size;
        self.regular = regular;
        Ok(())
    }

    /// Lines that could not be written, since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Rotates (see `output::rotation`), then opens the path again.
    fn rotate(&mut self) -> io::Result<()> {
        super::rotation::rotate(&self.path, self.limits.keep, &self.file)?;
        self.reopen()
    }
}

/// Opens for appending; a last line without its newline (the writer died
/// mid-line) is cut off so every line of the file parses. Returns the file,
/// its size in whole lines and whether it is a regular file; anything else
/// (a device, a FIFO, a socket) is opened write-only and left as it is.
fn open_whole_lines(path: &Path) -> io::Result<(File, u64, bool)> {
    let regular = match std::fs::metadata(path) {
        Ok(m) => m.file_type().is_file(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(e),
    };
    if !regular {
        // O_NONBLOCK: opening a FIFO nobody reads must not hang the agent.
        let file = OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        return Ok((file, 0, false));
    }
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        // Replaced between the check and the open: write, never cut.
        return Ok((file, 0, false));
    }
    let len = meta.len();
    if len == 0 {
        return Ok((file, 0, true));
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
            return Ok((file, whole, true));
        }
        if start == 0 {
            log::warn!("{}: dropped a torn line of {len} bytes (no whole line)", path.display());
            file.set_len(0)?;
            return Ok((file, 0, true));
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
            ..Default::default()
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

    /// `--events-out /dev/null` (here through a link to it, so a failure
    /// cannot take the host's /dev/null away) is written, never rotated.
    #[test]
    fn a_device_is_never_rotated_or_cut() {
        let d = dir("device");
        let p = d.join("events.jsonl");
        std::os::unix::fs::symlink("/dev/null", &p).unwrap();
        let limits = EventsConfig {
            max_bytes: 100,
            keep: 2,
            ..Default::default()
        };
        let mut f = EventsFile::open(&p, limits).unwrap();
        for _ in 0..20 {
            f.write_line(&[b'x'; 40]).unwrap();
        }
        f.flush().unwrap();
        assert!(
            std::fs::symlink_metadata(&p).unwrap().file_type().is_symlink(),
            "the link was moved away"
        );
        assert!(!d.join("events.jsonl.1").exists(), "a device was rotated");
        assert_eq!(f.dropped(), 0);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A FIFO: every line reaches the reader, whatever `max_bytes` says.
    #[test]
    fn a_fifo_gets_every_line_and_stays_a_fifo() {
        use std::os::unix::fs::FileTypeExt as _;
        let d = dir("fifo");
        let p = d.join("events.fifo");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let reader = {
            let p = p.clone();
            std::thread::spawn(move || std::fs::read(&p).unwrap())
        };
        // The reader opens first; a FIFO nobody reads is a clear error instead.
        let mut f = loop {
            match EventsFile::open(
                &p,
                EventsConfig {
                    max_bytes: 100,
                    keep: 2,
                    ..Default::default()
                },
            ) {
                Ok(f) => break f,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        };
        for i in 0..10 {
            f.write_line(format!("{i:039}\n").as_bytes()).unwrap();
        }
        f.flush().unwrap();
        drop(f);
        assert_eq!(reader.join().unwrap().len(), 400);
        assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_fifo());
        assert!(!d.join("events.fifo.1").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    /// The path replaced by another file between two writes: reopened, and
    /// the file now there is not renamed away.
    #[test]
    fn a_replaced_path_is_reopened_not_rotated() {
        let d = dir("replaced");
        let p = d.join("events.jsonl");
        let mut f = EventsFile::open(
            &p,
            EventsConfig {
                max_bytes: 100,
                keep: 2,
                ..Default::default()
            },
        )
        .unwrap();
        f.write_line(&[b'a'; 60]).unwrap();
        f.flush().unwrap();
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/dev/null", &p).unwrap();
        f.write_line(&[b'b'; 60]).unwrap();
        f.flush().unwrap();
        assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
        assert!(!d.join("events.jsonl.1").exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
