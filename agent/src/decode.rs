//! Ring-buffer records to typed events.

use agent_common::{
    EventHeader, EventKind, ExitEvent, ForkEvent,
    event::{
        EVENT_UNWATCHED, EXEC_ARGV_TRUNCATED, EXEC_FILENAME_MAX, EXEC_FILENAME_TRUNCATED, EXEC_INTERP_TRUNCATED,
        ExecEvent,
    },
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is too short for a {what} ({need} bytes)")]
    TooShort {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
}

/// The fields every event has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: EventKind,
    /// 0: not watched (discovery).
    pub server: u32,
    pub ktime_ns: u64,
    pub tid: u32,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub unwatched: bool,
    pub comm: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exec {
    pub header: Header,
    pub old_tid: u32,
    pub filename: String,
    pub filename_truncated: bool,
    /// The interpreter the kernel ran instead (scripts), when any.
    pub interp: Option<String>,
    pub interp_truncated: bool,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fork {
    pub header: Header,
    pub child_pid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub header: Header,
    /// Exit status when the process exited normally.
    pub exit_code: Option<i32>,
    /// Terminating signal when it was killed.
    pub signal: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Exec(Exec),
    Fork(Fork),
    Exit(Exit),
    /// Bytes a watched server read on stdin or wrote on stdout (MCP).
    Stdio(crate::mcp::chunk::StdioChunk),
}

impl Event {
    pub fn header(&self) -> &Header {
        match self {
            Event::Exec(e) => &e.header,
            Event::Fork(e) => &e.header,
            Event::Exit(e) => &e.header,
            Event::Stdio(e) => &e.header,
        }
    }
}

/// Reads a `T` from the start of `bytes` (records carry no alignment promise).
fn read<T: Copy>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::TooShort {
            what,
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: length checked; T is a plain repr(C) integer struct.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Text up to the first NUL, lossily decoded.
fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn header(h: &EventHeader, kind: EventKind) -> Header {
    Header {
        kind,
        server: h.server,
        ktime_ns: h.ktime_ns,
        tid: h.pid,
        pid: h.tgid,
        ppid: h.ppid,
        uid: h.uid,
        gid: h.gid,
        unwatched: h.flags & EVENT_UNWATCHED != 0,
        comm: text(&h.comm),
    }
}

/// Splits a NUL-separated argument area (the last argument may lack its NUL
/// when truncated).
pub fn split_argv(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let h: EventHeader = read(bytes, "event header")?;
    let kind = EventKind::from_u32(h.kind).ok_or(DecodeError::UnknownKind(h.kind))?;
    Ok(match kind {
        EventKind::Exec => {
            let e: ExecEvent = read(bytes, "exec event")?;
            let data = &bytes[size_of::<ExecEvent>()..];
            let need = 2 * EXEC_FILENAME_MAX + e.argv_len as usize;
            if data.len() < need
                || e.filename_len as usize > EXEC_FILENAME_MAX
                || e.interp_len as usize > EXEC_FILENAME_MAX
            {
                return Err(DecodeError::TooShort {
                    what: "exec payload",
                    len: bytes.len(),
                    need: size_of::<ExecEvent>() + need,
                });
            }
            let filename = text(&data[..e.filename_len as usize]);
            let interp =
                (e.interp_len > 0).then(|| text(&data[EXEC_FILENAME_MAX..EXEC_FILENAME_MAX + e.interp_len as usize]));
            let argv_area = &data[2 * EXEC_FILENAME_MAX..need];
            Event::Exec(Exec {
                header: header(&e.header, kind),
                old_tid: e.old_pid,
                filename,
                filename_truncated: e.flags & EXEC_FILENAME_TRUNCATED != 0,
                interp,
                interp_truncated: e.flags & EXEC_INTERP_TRUNCATED != 0,
                argv: split_argv(argv_area),
                argv_truncated: e.flags & EXEC_ARGV_TRUNCATED != 0,
            })
        }
        EventKind::Fork => {
            let e: ForkEvent = read(bytes, "fork event")?;
            Event::Fork(Fork {
                header: header(&e.header, kind),
                child_pid: e.child_tgid,
            })
        }
        EventKind::Exit => {
            let e: ExitEvent = read(bytes, "exit event")?;
            let (exit_code, signal) = split_exit_code(e.exit_code);
            Event::Exit(Exit {
                header: header(&e.header, kind),
                exit_code,
                signal,
            })
        }
    })
}

/// `task->exit_code` is a wait status: `code << 8`, or the signal number.
pub fn split_exit_code(raw: u32) -> (Option<i32>, Option<i32>) {
    let sig = (raw & 0x7f) as i32;
    if sig == 0 {
        (Some(((raw >> 8) & 0xff) as i32), None)
    } else {
        (None, Some(sig))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::event::EXEC_ARGV_MAX;

    fn raw_header(kind: EventKind) -> EventHeader {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"node");
        EventHeader {
            kind: kind as u32,
            server: 7,
            ktime_ns: 42,
            pid: 101,
            tgid: 100,
            ppid: 1,
            uid: 1000,
            gid: 1000,
            flags: 0,
            comm,
        }
    }

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: T is a plain repr(C) struct.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn exec_record(filename: &[u8], interp: &[u8], argv: &[u8], flags: u32) -> Vec<u8> {
        let ev = ExecEvent {
            header: raw_header(EventKind::Exec),
            old_pid: 101,
            flags,
            filename_len: filename.len() as u32,
            interp_len: interp.len() as u32,
            argv_len: argv.len() as u32,
            argv_full_len: argv.len() as u32,
        };
        let mut b = bytes_of(&ev);
        let mut data = vec![0u8; 2 * EXEC_FILENAME_MAX];
        data[..filename.len()].copy_from_slice(filename);
        data[EXEC_FILENAME_MAX..EXEC_FILENAME_MAX + interp.len()].copy_from_slice(interp);
        b.extend(data);
        b.extend(argv);
        b
    }

    #[test]
    fn exec_decodes_every_field() {
        let rec = exec_record(b"/tmp/x.sh", b"/bin/sh", b"/bin/sh\0/tmp/x.sh\0--flag\0", 0);
        let Event::Exec(e) = decode(&rec).unwrap() else {
            panic!("not exec")
        };
        assert_eq!(e.header.kind, EventKind::Exec);
        assert_eq!(
            (e.header.pid, e.header.tid, e.header.ppid, e.header.server),
            (100, 101, 1, 7)
        );
        assert_eq!(e.header.comm, "node");
        assert_eq!(e.filename, "/tmp/x.sh");
        assert_eq!(e.interp.as_deref(), Some("/bin/sh"));
        assert_eq!(e.argv, ["/bin/sh", "/tmp/x.sh", "--flag"]);
        assert!(!e.argv_truncated);
    }

    #[test]
    fn truncated_argv_keeps_the_partial_argument_and_flag() {
        let argv = vec![b'a'; EXEC_ARGV_MAX];
        let rec = exec_record(b"/bin/echo", b"", &argv, EXEC_ARGV_TRUNCATED);
        let Event::Exec(e) = decode(&rec).unwrap() else {
            panic!("not exec")
        };
        assert!(e.argv_truncated);
        assert_eq!(e.interp, None);
        assert_eq!(e.argv.len(), 1);
        assert_eq!(e.argv[0].len(), EXEC_ARGV_MAX);
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        let rec = exec_record(b"/bin/echo", b"", b"echo\0", 0);
        assert!(matches!(
            decode(&rec[..rec.len() - 3]),
            Err(DecodeError::TooShort { .. })
        ));
        assert!(matches!(decode(&[0u8; 8]), Err(DecodeError::TooShort { .. })));
        let mut h = raw_header(EventKind::Fork);
        h.kind = 999;
        assert_eq!(decode(&bytes_of(&h)), Err(DecodeError::UnknownKind(999)));
    }

    #[test]
    fn fork_and_exit_decode() {
        let f = ForkEvent {
            header: raw_header(EventKind::Fork),
            child_tgid: 555,
            _pad: 0,
        };
        assert_eq!(
            decode(&bytes_of(&f)).unwrap(),
            Event::Fork(Fork {
                header: header(&f.header, EventKind::Fork),
                child_pid: 555
            })
        );
        let x = ExitEvent {
            header: raw_header(EventKind::Exit),
            exit_code: 3 << 8,
            _pad: 0,
        };
        let Event::Exit(e) = decode(&bytes_of(&x)).unwrap() else {
            panic!()
        };
        assert_eq!((e.exit_code, e.signal), (Some(3), None));
        assert_eq!(split_exit_code(9), (None, Some(9)));
    }
}
