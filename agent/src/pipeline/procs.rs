//! The process table: pid -> what we know of it (exe, argv, uid, parent, server).
//!
//! Seeded from /proc at start-up, kept current by watched processes' events,
//! and completed from /proc on demand for ancestors the kernel never reported.

use foldhash::HashMap;

use serde_json::value::RawValue;

use crate::{
    kernel::decode::FdKind,
    mcp::CallTag,
    output::{
        events::{Json, ProcText},
        record_json,
    },
    policy::activity::StdioKind,
};

/// How many ancestors an event carries at most.
pub const MAX_ANCESTRY: usize = 16;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub exe: String,
    pub argv: Vec<String>,
    /// Server id when watched.
    pub server: Option<u32>,
    /// The tool call in flight when it was forked (or its parent's): a child
    /// that outlives its call still belongs to it, for its whole life.
    pub call: Option<ForkedCall>,
    /// The package manager run it belongs to (its own, or its parent's).
    pub operation: Option<crate::alerts::fold::Operation>,
    /// exe and argv as JSON, rendered when the entry enters the table.
    pub rendered: Rendered,
}

/// The call a process was forked during, and the tools in flight then (when
/// several calls were: the policy judges against all of their grants).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkedCall {
    pub tag: CallTag,
    pub tools_in_flight: Vec<String>,
}

/// A process's exe and argv as JSON text: every event line of the process
/// carries them, and escaping them again for each line was most of the cost
/// of writing events. Not part of a process's identity (equality ignores it).
#[derive(Clone, Debug, Default)]
pub struct Rendered {
    json: Option<(Box<RawValue>, Box<RawValue>)>,
    /// The process's fields of a line as one piece of text, rendered at its
    /// first line: a process's lines repeat them, and written field by
    /// field they were a dozen pieces of every line.
    line_fields: std::cell::OnceCell<LineFields>,
}

/// `pid` to `argv` (`text[..head]`) with the `pid`, `ppid` and `uid` of
/// `key`, then the `gid` and `comm` of the line it was rendered for, when
/// that line had them without a `tid`.
#[derive(Clone, Debug)]
struct LineFields {
    key: (u32, u32, u32),
    text: Box<str>,
    head: usize,
    ids: Option<(u32, compact_str::CompactString)>,
}

impl PartialEq for Rendered {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Rendered {}

impl Proc {
    fn render(&mut self) {
        let exe = serde_json::value::to_raw_value(&self.exe);
        let argv = serde_json::value::to_raw_value(&self.argv);
        self.rendered = Rendered {
            json: exe.ok().zip(argv.ok()),
            line_fields: Default::default(),
        };
    }

    /// `exe` for an event line.
    pub fn exe_json(&self) -> Json<'_, str> {
        match &self.rendered.json {
            Some((exe, _)) => Json::Rendered(exe),
            None => Json::Value(&self.exe),
        }
    }

    /// `argv` for an event line.
    pub fn argv_json(&self) -> Json<'_, [String]> {
        match &self.rendered.json {
            Some((_, argv)) => Json::Rendered(argv),
            None => Json::Value(&self.argv),
        }
    }

    /// The text of a line's `pid`, `ppid`, `uid`, `exe` and `argv` fields
    /// (see [`record_json::proc_fields`]), rendered at the process's first
    /// line with that line's `pid`, `ppid` and `uid`, and given for the
    /// lines that have the same (the kernel's word is the line's: after a
    /// setuid or a reparenting they differ and the fields are written one by
    /// one). `ids`: the event's `gid` and `comm`, when it has no `tid`: in
    /// the text too when they are those of the first line (a
    /// `prctl(PR_SET_NAME)` or a `setgid` makes them differ).
    pub fn line_fields(&self, pid: u32, ppid: u32, uid: u32, ids: Option<(u32, &str)>) -> Option<ProcText<'_>> {
        // Only an entry whose exe and argv were rendered (in the table).
        self.rendered.json.as_ref()?;
        let f = self.rendered.line_fields.get_or_init(|| {
            let (text, head) = record_json::proc_fields(pid, ppid, uid, self.exe_json(), self.argv_json(), ids);
            LineFields {
                key: (pid, ppid, uid),
                text: text.into(),
                head,
                ids: ids.map(|(gid, comm)| (gid, comm.into())),
            }
        });
        if f.key != (pid, ppid, uid) {
            return None;
        }
        let same_ids = ids.is_some() && f.ids.as_ref().map(|(gid, comm)| (*gid, comm.as_str())) == ids;
        Some(ProcText {
            text: if same_ids { &f.text } else { &f.text[..f.head] },
            ids: same_ids,
        })
    }
}

#[derive(Default)]
pub struct ProcTable {
    procs: HashMap<u32, Proc>,
}

/// Reads one process from /proc; None when it is gone or unreadable.
pub fn read_proc(pid: u32) -> Option<Proc> {
    let p = procfs::process::Process::new(pid as i32).ok()?;
    let stat = p.stat().ok()?;
    let uid = p.uid().unwrap_or(u32::MAX);
    let exe = p.exe().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
    let argv = p.cmdline().unwrap_or_default();
    Some(Proc {
        pid,
        ppid: stat.ppid as u32,
        uid,
        exe,
        argv,
        server: None,
        call: None,
        operation: None,
        rendered: Rendered::default(),
    })
}

impl ProcTable {
    /// Every process currently in /proc.
    pub fn seed_from_proc() -> Self {
        let mut t = Self::default();
        if let Ok(all) = procfs::process::all_processes() {
            for p in all.flatten() {
                if let Some(proc) = read_proc(p.pid as u32) {
                    t.insert(proc);
                }
            }
        }
        t
    }

    pub fn get(&self, pid: u32) -> Option<&Proc> {
        self.procs.get(&pid)
    }

    pub fn get_mut(&mut self, pid: u32) -> Option<&mut Proc> {
        self.procs.get_mut(&pid)
    }

    pub fn insert(&mut self, mut p: Proc) {
        p.render();
        self.procs.insert(p.pid, p);
    }

    pub fn remove(&mut self, pid: u32) -> Option<Proc> {
        self.procs.remove(&pid)
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// The entry for `pid`, read from /proc when the table lacks it.
    pub fn get_or_load(&mut self, pid: u32) -> Option<&mut Proc> {
        match self.procs.entry(pid) {
            std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut p = read_proc(pid)?;
                p.render();
                Some(e.insert(p))
            }
        }
    }

    /// Parent chain of `pid`, nearest first, at most [`MAX_ANCESTRY`] entries.
    pub fn ancestry(&mut self, pid: u32) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        let mut cur = self.get_or_load(pid).map(|p| p.ppid);
        while let Some(ppid) = cur {
            if ppid == 0 || out.len() >= MAX_ANCESTRY || out.iter().any(|(p, _)| *p == ppid) {
                break;
            }
            match self.get_or_load(ppid) {
                Some(p) => {
                    out.push((ppid, p.exe.clone()));
                    cur = Some(p.ppid);
                }
                None => {
                    out.push((ppid, String::new()));
                    break;
                }
            }
        }
        out
    }

    /// `root` and every process below it in /proc, parents before children.
    pub fn descendants_from_proc(root: u32) -> Vec<u32> {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::default();
        if let Ok(all) = procfs::process::all_processes() {
            for p in all.flatten() {
                if let Ok(stat) = p.stat() {
                    children.entry(stat.ppid as u32).or_default().push(p.pid as u32);
                }
            }
        }
        let mut out = vec![root];
        let mut seen = std::collections::HashSet::from([root]);
        let mut i = 0;
        while i < out.len() {
            for &c in children.get(&out[i]).map(Vec::as_slice).unwrap_or_default() {
                if seen.insert(c) {
                    out.push(c);
                }
            }
            i += 1;
        }
        out
    }

    /// Drops unwatched entries whose process is gone (watched ones leave with
    /// their exit event). Returns how many were dropped.
    pub fn prune_dead(&mut self) -> usize {
        let before = self.procs.len();
        self.procs
            .retain(|pid, p| p.server.is_some() || std::path::Path::new(&format!("/proc/{pid}")).exists());
        before - self.procs.len()
    }
}

/// The process's working directory.
pub fn cwd(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/cwd"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// What one of fds 0/1/2 was at exec: the kernel's kind (a TCP or UDP
/// socket told by the probe from the socket itself), the file's path and,
/// for a socket the probe could not classify, its family from /proc. Such a
/// socket that cannot be looked up any more (the process is gone) counts as
/// local.
pub fn stdio_kind(pid: u32, fd: u32, kind: FdKind) -> Option<StdioKind> {
    let link = || {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .ok()
            .map(|l| l.to_string_lossy().into_owned())
    };
    Some(match kind {
        FdKind::None => return None,
        FdKind::Pipe => StdioKind::Pipe,
        FdKind::Tty => link()
            .and_then(|l| pty_master_on_network(pid, &l))
            .map_or(StdioKind::Tty, StdioKind::NetworkPty),
        FdKind::Other => StdioKind::Other,
        FdKind::File => StdioKind::File(link().unwrap_or_default()),
        FdKind::InetSocket => StdioKind::Socket,
        FdKind::Socket => {
            let inet = link().is_some_and(|l| {
                l.strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .is_some_and(|inode| is_inet_socket(pid, inode))
            });
            if inet {
                StdioKind::Socket
            } else {
                StdioKind::LocalSocket
            }
        }
    })
}

/// How far up the ancestry the holder of a pty's master is looked for
/// (`pty.spawn`, `script`, `forkpty`: the parent).
const PTY_HOLDER_DEPTH: usize = 3;

/// For a pty slave (`/dev/pts/N`): the ancestor holding its master
/// (`/dev/ptmx` whose fdinfo says `tty-index: N`), when that process has a
/// network socket on fds 0-2 or any connected (not listening) TCP/UDP socket:
/// a shell on that pty is driven from the network.
fn pty_master_on_network(pid: u32, slave: &str) -> Option<u32> {
    let index = slave.strip_prefix("/dev/pts/")?;
    let mut p = pid;
    for _ in 0..PTY_HOLDER_DEPTH {
        p = ppid_of(p)?;
        if p <= 1 {
            return None;
        }
        let fds: Vec<(u32, String)> = std::fs::read_dir(format!("/proc/{p}/fd"))
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                let fd = e.file_name().to_str()?.parse().ok()?;
                Some((fd, std::fs::read_link(e.path()).ok()?.to_string_lossy().into_owned()))
            })
            .collect();
        let holds_master = fds.iter().any(|(fd, l)| {
            (l == "/dev/ptmx" || l == "/dev/pts/ptmx")
                && std::fs::read_to_string(format!("/proc/{p}/fdinfo/{fd}")).is_ok_and(|i| {
                    i.lines()
                        .any(|l| l.strip_prefix("tty-index:").is_some_and(|v| v.trim() == index))
                })
        });
        if !holds_master {
            continue;
        }
        let networked = fds.iter().any(|(fd, l)| {
            let Some(inode) = l.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) else {
                return false;
            };
            match inet_socket_state(p, inode) {
                Some(state) => *fd <= 2 || state != TCP_LISTEN,
                None => false,
            }
        });
        return networked.then_some(p);
    }
    None
}

/// `/proc/net/tcp`'s state of a listening socket.
const TCP_LISTEN: &str = "0A";

fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces and parentheses).
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// The state (hex, as `/proc/net/*` shows it) of a TCP or UDP socket, when it is one.
fn inet_socket_state(pid: u32, inode: &str) -> Option<String> {
    ["tcp", "tcp6", "udp", "udp6"].iter().find_map(|t| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok()?;
        text.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(9) == Some(&inode))
                .then(|| f.get(3).map(|s| s.to_string()))
                .flatten()
        })
    })
}

/// Whether a socket is a TCP or UDP one. Unix socketpairs are ordinary stdio:
/// libuv (so every Node-based MCP host) gives children socketpairs, not pipes.
fn is_inet_socket(pid: u32, inode: &str) -> bool {
    ["tcp", "tcp6", "udp", "udp6"].iter().any(|t| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{t}"))
            .is_ok_and(|text| text.lines().skip(1).any(|l| l.split_whitespace().nth(9) == Some(inode)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_sockets_are_told_from_socketpairs() {
        use std::os::{fd::AsRawFd, unix::net::UnixStream};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let me = std::process::id();
        assert_eq!(
            stdio_kind(me, c.as_raw_fd() as u32, FdKind::Socket),
            Some(StdioKind::Socket)
        );
        assert_eq!(
            stdio_kind(me, a.as_raw_fd() as u32, FdKind::Socket),
            Some(StdioKind::LocalSocket)
        );
        assert_eq!(
            stdio_kind(me, 999, FdKind::Socket),
            Some(StdioKind::LocalSocket),
            "gone: local"
        );
        assert_eq!(stdio_kind(me, 0, FdKind::None), None);
    }

    #[test]
    fn a_pty_whose_master_holder_is_connected_to_the_network_is_told() {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // A real pty: this process holds the master, a child runs on the slave.
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty writes two fds into the locals; the null pointers ask for no name or settings.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0);
        // SAFETY: both fds were just opened by openpty and are owned here.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let name = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd())).unwrap();
        let name = name.to_string_lossy().into_owned();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .stdin(std::process::Stdio::from(slave.try_clone().unwrap()))
            .spawn()
            .unwrap();
        // (Whether it held one before is not asserted: tests run in parallel in this process.)
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let with_peer = pty_master_on_network(child.id(), &name);
        child.kill().unwrap();
        child.wait().unwrap();
        drop((master, peer, listener));
        assert_eq!(with_peer, Some(std::process::id()), "the master's holder is connected");
        assert_eq!(pty_master_on_network(std::process::id(), "/dev/tty1"), None);
    }

    #[test]
    fn ancestry_of_this_test_reaches_init() {
        let mut t = ProcTable::seed_from_proc();
        let me = std::process::id();
        assert_eq!(t.get(me).map(|p| p.pid), Some(me));
        let chain = t.ancestry(me);
        assert!(!chain.is_empty());
        assert_eq!(chain[0].0, t.get(me).unwrap().ppid);
    }

    #[test]
    fn descendants_include_a_spawned_child() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let d = ProcTable::descendants_from_proc(std::process::id());
        assert!(d.contains(&child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
