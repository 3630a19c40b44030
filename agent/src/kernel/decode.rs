//! Ring-buffer records to typed events.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_common::{
    EventHeader, EventKind, ExitEvent, ForkEvent, SysEvent,
    abi::{AF_INET, AF_INET6, AF_UNIX},
    event::{
        EVENT_KILLED, EVENT_UNWATCHED, EXEC_ARGV_TRUNCATED, EXEC_CWD_TRUNCATED, EXEC_EXE_TRUNCATED, EXEC_FILENAME_MAX,
        EXEC_FILENAME_TRUNCATED, EXEC_INTERP_TRUNCATED, ExecEvent, FD_CHAR, FD_FILE, FD_INET_SOCKET, FD_NONE, FD_PIPE,
        FD_SOCKET, SOCKADDR_ABSTRACT, SYS_COMPAT, SYS_DATA_IN, SYS_DATA_TRUNCATED, SYS_PATH_RELATIVE,
        SYS_PATH_RESOLVED, SYS_PATH_TRUNCATED, SYS_PATH2_TRUNCATED, SYS_USER_MEMORY,
    },
    syscalls::{self, Syscall},
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
    #[error("{what} of {len} bytes is longer than its slot ({max} bytes)")]
    TooLong { what: &'static str, len: usize, max: usize },
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
    /// The kill layer sent the process SIGKILL at this event: it died
    /// before the syscall (or the exec) returned to user space.
    pub killed: bool,
    /// Held inline (at most 15 bytes from the kernel; lossily repaired
    /// text up to three times that): every event has one.
    pub comm: compact_str::CompactString,
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
    /// Resolved path of the file the kernel executed (the interpreter for a script).
    pub exe: Option<String>,
    pub exe_truncated: bool,
    /// Hard links of that file: 0 for a memfd or a deleted file (fileless).
    pub exe_nlink: Option<u32>,
    pub cwd: Option<String>,
    pub cwd_truncated: bool,
    /// What fds 0, 1 and 2 were at exec.
    pub stdio: [FdKind; 3],
}

/// What a file descriptor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdKind {
    None,
    File,
    Pipe,
    /// A Unix socket (or one whose family the probe could not read).
    Socket,
    /// A TCP or UDP socket, as the kernel told it.
    InetSocket,
    Tty,
    Other,
}

impl FdKind {
    fn from_raw(v: u8) -> Self {
        match v {
            FD_NONE => Self::None,
            FD_FILE => Self::File,
            FD_PIPE => Self::Pipe,
            FD_SOCKET => Self::Socket,
            FD_INET_SOCKET => Self::InetSocket,
            FD_CHAR => Self::Tty,
            _ => Self::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::File => "file",
            Self::Pipe => "pipe",
            Self::Socket | Self::InetSocket => "socket",
            Self::Tty => "tty",
            Self::Other => "other",
        }
    }
}

/// A socket address from the kernel, IPv4-mapped IPv6 normalised to IPv4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    Ip { ip: IpAddr, port: u16, mapped: bool },
    Unix { path: String, abstract_name: bool },
}

impl Addr {
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Addr::Ip { ip, .. } => Some(*ip),
            Addr::Unix { .. } => None,
        }
    }

    pub fn port(&self) -> Option<u16> {
        match self {
            Addr::Ip { port, .. } => Some(*port),
            Addr::Unix { .. } => None,
        }
    }
}

#[cfg(test)]
impl Header {
    /// A header for unit tests: `kind` by watched process `pid` of `server`.
    pub fn for_test(kind: EventKind, server: u32, pid: u32) -> Header {
        Header {
            kind,
            server,
            ktime_ns: 1_000,
            tid: pid,
            pid,
            ppid: 1,
            uid: 0,
            gid: 0,
            unwatched: false,
            killed: false,
            comm: "test".into(),
        }
    }
}

/// One syscall of a watched process (file, net, dns, risky).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sys {
    pub header: Header,
    pub nr: u32,
    /// Syscall name (from the ia32 table for a compat call).
    pub name: &'static str,
    /// An ia32 syscall (`int 0x80`) of a 64-bit process: `nr` and `args`
    /// are the ia32 ones, reported at entry (`ret` 0).
    pub compat: bool,
    /// The process the call reached into, resolved in the kernel
    /// (pidfd_getfd: the pidfd's process).
    pub target_pid: Option<u32>,
    /// The syscall's entry in the shared table (operation, family, argument
    /// positions); `None` only for a number the table does not follow.
    pub syscall: Option<&'static Syscall>,
    /// Return value: fd, bytes, 0 or -errno.
    pub ret: i64,
    pub args: [u64; 6],
    /// The first path: resolved from the opened file when `resolved`, else as given.
    pub path: Option<String>,
    pub resolved: bool,
    pub path_truncated: bool,
    /// The second path (as given: the requested path of an open, a rename or
    /// link destination, a symlink's target text, a mount source).
    pub path2: Option<String>,
    pub path2_truncated: bool,
    /// The directory a relative first path is relative to, resolved in the kernel.
    pub base: Option<String>,
    pub addr: Option<Addr>,
    /// SOCK_STREAM (1), SOCK_DGRAM (2)...
    pub sock_type: u16,
    /// Local port the connection came in on (accept).
    pub local_port: Option<u16>,
    /// The first path or the address was read from the caller's memory at
    /// syscall exit, not from a kernel object: a racing thread may have
    /// rewritten it during the call.
    pub from_user_memory: bool,
    /// File mode bits of the file, when known.
    pub mode: u32,
    /// The opened file's (device, inode), when the kernel read them.
    pub file_id: Option<crate::enforce::identity::FileId>,
    /// DNS message (kind dns).
    pub data: Vec<u8>,
    /// The data was received.
    pub incoming: bool,
}

/// Bytes a watched server read from its stdin or wrote to its stdout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StdioChunk {
    pub header: Header,
    /// 0: stdin (read by the server), 1: stdout (written by it), whichever
    /// descriptor carried them.
    pub fd: u32,
    /// Offset of `data` in that process's stream for that direction.
    pub offset: u64,
    /// Bytes the syscall transferred (>= data.len()).
    pub len: u64,
    pub data: Vec<u8>,
    /// Bytes of this syscall were not captured: a gap follows `data`.
    pub truncated: bool,
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
    /// File, net, dns and risky syscalls (`header.kind` tells which).
    Sys(Sys),
    Stdio(StdioChunk),
}

impl Event {
    pub fn header(&self) -> &Header {
        match self {
            Event::Exec(e) => &e.header,
            Event::Fork(e) => &e.header,
            Event::Exit(e) => &e.header,
            Event::Sys(e) => &e.header,
            Event::Stdio(e) => &e.header,
        }
    }

    pub fn header_mut(&mut self) -> &mut Header {
        match self {
            Event::Exec(e) => &mut e.header,
            Event::Fork(e) => &mut e.header,
            Event::Exit(e) => &mut e.header,
            Event::Sys(e) => &mut e.header,
            Event::Stdio(e) => &mut e.header,
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
    text_exact(&bytes[..end])
}

/// A comm up to its NUL, lossily decoded, without an allocation when short.
fn comm(bytes: &[u8]) -> compact_str::CompactString {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    // Valid UTF-8 checked first: compact_str's own lossy decoding goes a
    // character at a time (it cost more than the allocation it saves).
    match std::str::from_utf8(&bytes[..end]) {
        Ok(s) => compact_str::CompactString::new(s),
        Err(_) => String::from_utf8_lossy(&bytes[..end]).into(),
    }
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
        killed: h.flags & EVENT_KILLED != 0,
        comm: comm(&h.comm),
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
/// The process of a syscall record (file, network, DNS, risky, stdio) the
/// kernel flagged as from a pending process, read from the header alone;
/// `None` for anything else. Lets the reader drop the records of processes
/// no rule made a server without decoding them.
pub fn pending_syscall_pid(bytes: &[u8]) -> Option<u32> {
    let h: EventHeader = read(bytes, "event header").ok()?;
    let kind = EventKind::from_u32(h.kind)?;
    let syscall = !matches!(kind, EventKind::Exec | EventKind::Fork | EventKind::Exit);
    (syscall && h.flags & EVENT_UNWATCHED != 0).then_some(h.tgid)
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let h: EventHeader = read(bytes, "event header")?;
    let kind = EventKind::from_u32(h.kind).ok_or(DecodeError::UnknownKind(h.kind))?;
    Ok(match kind {
        EventKind::Exec => {
            let e: ExecEvent = read(bytes, "exec event")?;
            let data = &bytes[size_of::<ExecEvent>()..];
            let (exe_len, cwd_len) = (e.exe_len as usize, e.cwd_len as usize);
            let need = 2 * EXEC_FILENAME_MAX + exe_len + cwd_len + e.argv_len as usize;
            for (what, len) in [("exec filename", e.filename_len), ("exec interpreter", e.interp_len)] {
                if len as usize > EXEC_FILENAME_MAX {
                    return Err(DecodeError::TooLong {
                        what,
                        len: len as usize,
                        max: EXEC_FILENAME_MAX,
                    });
                }
            }
            if data.len() < need {
                return Err(DecodeError::TooShort {
                    what: "exec payload",
                    len: bytes.len(),
                    need: size_of::<ExecEvent>() + need,
                });
            }
            let filename = text(&data[..e.filename_len as usize]);
            let interp =
                (e.interp_len > 0).then(|| text(&data[EXEC_FILENAME_MAX..EXEC_FILENAME_MAX + e.interp_len as usize]));
            let rest = &data[2 * EXEC_FILENAME_MAX..need];
            let (exe, rest) = rest.split_at(exe_len);
            let (cwd, argv_area) = rest.split_at(cwd_len);
            Event::Exec(Exec {
                header: header(&e.header, kind),
                old_tid: e.old_pid,
                filename,
                filename_truncated: e.flags & EXEC_FILENAME_TRUNCATED != 0,
                interp,
                interp_truncated: e.flags & EXEC_INTERP_TRUNCATED != 0,
                argv: split_argv(argv_area),
                argv_truncated: e.flags & EXEC_ARGV_TRUNCATED != 0,
                exe: (exe_len > 0).then(|| text(exe)),
                exe_truncated: e.flags & EXEC_EXE_TRUNCATED != 0,
                exe_nlink: (e.exe_nlink != u32::MAX).then_some(e.exe_nlink),
                cwd: (cwd_len > 0).then(|| text(cwd)),
                cwd_truncated: e.flags & EXEC_CWD_TRUNCATED != 0,
                stdio: [
                    FdKind::from_raw(e.stdio[0]),
                    FdKind::from_raw(e.stdio[1]),
                    FdKind::from_raw(e.stdio[2]),
                ],
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
        EventKind::File | EventKind::Net | EventKind::Dns | EventKind::Risky | EventKind::Stdio => {
            decode_sys(bytes, kind)?
        }
    })
}

fn decode_sys(bytes: &[u8], kind: EventKind) -> Result<Event, DecodeError> {
    let e: SysEvent = read(bytes, "syscall event")?;
    let var = &bytes[size_of::<SysEvent>()..];
    let (l1, l2, ld) = (e.len1 as usize, e.len2 as usize, e.data_len as usize);
    if var.len() < l1 + l2 + ld {
        return Err(DecodeError::TooShort {
            what: "syscall payload",
            len: bytes.len(),
            need: size_of::<SysEvent>() + l1 + l2 + ld,
        });
    }
    let (p1, rest) = var.split_at(l1);
    let (p2, rest) = rest.split_at(l2);
    let data = &rest[..ld];
    let h = header(&e.header, kind);
    if kind == EventKind::Stdio {
        return Ok(Event::Stdio(StdioChunk {
            header: h,
            // The direction, whichever descriptor the server moved it to.
            fd: if e.flags & SYS_DATA_IN != 0 { 0 } else { 1 },
            offset: e.stream_offset,
            len: e.ret.max(0) as u64,
            data: data.to_vec(),
            truncated: e.flags & SYS_DATA_TRUNCATED != 0,
        }));
    }
    let a = e.addr;
    let addr = match a.family {
        AF_INET => Some(Addr::Ip {
            ip: IpAddr::V4(Ipv4Addr::new(a.addr[0], a.addr[1], a.addr[2], a.addr[3])),
            port: a.port,
            mapped: false,
        }),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(a.addr);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => Addr::Ip {
                    ip: IpAddr::V4(v4),
                    port: a.port,
                    mapped: true,
                },
                None => Addr::Ip {
                    ip: IpAddr::V6(v6),
                    port: a.port,
                    mapped: false,
                },
            })
        }
        AF_UNIX => Some(Addr::Unix {
            path: text_exact(p1),
            abstract_name: a.flags & SOCKADDR_ABSTRACT != 0,
        }),
        _ => None,
    };
    let unix = a.family == AF_UNIX;
    let is_base = e.flags & SYS_PATH_RELATIVE != 0;
    // An ia32 number means nothing in the x86_64 table.
    let compat = e.flags & SYS_COMPAT != 0;
    let syscall = if compat { None } else { syscalls::lookup(e.nr) };
    let name = if compat {
        syscalls::ia32::name(e.nr).unwrap_or("unknown")
    } else if kind == EventKind::Risky && e.nr == agent_common::tamper::SIGNAL_NR {
        "signal"
    } else {
        syscall.map_or("unknown", |s| s.name)
    };
    Ok(Event::Sys(Sys {
        header: h,
        nr: e.nr,
        name,
        syscall,
        compat,
        target_pid: (e.target_pid != 0).then_some(e.target_pid),
        file_id: (e.file_ino != 0).then_some(crate::enforce::identity::FileId {
            dev: e.file_dev,
            ino: e.file_ino,
        }),
        ret: e.ret,
        args: e.args,
        path: (l1 > 0 && !unix).then(|| text(p1)),
        resolved: e.flags & SYS_PATH_RESOLVED != 0,
        path_truncated: e.flags & SYS_PATH_TRUNCATED != 0,
        path2: (l2 > 0).then(|| text(p2)),
        path2_truncated: e.flags & SYS_PATH2_TRUNCATED != 0,
        base: (is_base && ld > 0).then(|| text(data)),
        addr,
        sock_type: a.sock_type,
        local_port: (kind == EventKind::Net && syscall.is_some_and(|s| s.op == syscalls::Op::Accept))
            .then_some(e.local_port),
        from_user_memory: e.flags & SYS_USER_MEMORY != 0,
        mode: e.mode,
        data: if is_base { Vec::new() } else { data.to_vec() },
        incoming: e.flags & SYS_DATA_IN != 0,
    }))
}

/// Text of exactly these bytes (an abstract socket name may hold NULs).
fn text_exact(bytes: &[u8]) -> String {
    // Valid UTF-8 (nearly every path) is checked faster than it is repaired.
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
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
mod props;
#[cfg(test)]
mod tests;
