//! Which pipes and sockets are a watched server's stdio, for the kernel's
//! stdio capture (`agent-ebpf/src/probes/stdio.rs`).
//!
//! The capture follows a channel (a pipe or socket, by inode number in the
//! `STDIO_FILES` map), not a descriptor number, so servers that move their
//! wire off fds 0 and 1 (the Python SDK does) are still heard. The kernel
//! registers a root's fds 0 and 1 at its exec; this module registers the
//! roots that userspace decides on: servers found running at start-up or by
//! pid, and processes a discovery rule matched at exec (their channels were
//! kept in `STDIO_AT_EXEC` by the kernel before they could move them).

use std::path::Path;

use agent_common::config::{STDIO_IN, STDIO_OUT, StdioInodes};
use aya::maps::{HashMap, MapData};

/// The capture's view of server channels.
pub struct StdioChannels {
    files: HashMap<MapData, u64, u32>,
    at_exec: HashMap<MapData, u32, StdioInodes>,
}

/// Where the channels of a root came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Taken by the kernel at its exec (a discovery rule matched).
    Exec,
    /// Read from `/proc/PID/fd` now (found running, or about to exec).
    Proc,
    /// Neither fd 0 nor fd 1 is a pipe or socket: nothing to capture.
    None,
}

impl Source {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Exec => "channels taken at exec",
            Self::Proc => "channels read from /proc",
            Self::None => "no pipe or socket on fds 0 and 1, nothing to capture",
        }
    }
}

impl StdioChannels {
    pub fn new(files: HashMap<MapData, u64, u32>, at_exec: HashMap<MapData, u32, StdioInodes>) -> Self {
        Self { files, at_exec }
    }

    /// `pid` became the root of a server: its stdin and stdout channels are
    /// the server's wire.
    pub fn register_root(&mut self, pid: u32) -> Source {
        let (inos, source) = match self.at_exec.get(&pid, 0) {
            Ok(inos) => {
                let _ = self.at_exec.remove(&pid);
                (inos, Source::Exec)
            }
            Err(_) => (proc_channels(pid), Source::Proc),
        };
        if inos.stdin == 0 && inos.stdout == 0 {
            return Source::None;
        }
        self.add(inos.stdin, STDIO_IN);
        self.add(inos.stdout, STDIO_OUT);
        source
    }

    /// A process held for the discovery rules was released.
    pub fn forget_pending(&mut self, pid: u32) {
        let _ = self.at_exec.remove(&pid);
    }

    fn add(&mut self, ino: u64, dir: u32) {
        if ino == 0 {
            return;
        }
        let old = self.files.get(&ino, 0).unwrap_or(0);
        if old & dir != dir
            && let Err(e) = self.files.insert(ino, old | dir, 0)
        {
            log::warn!("cannot register stdio channel {ino}: {e}");
        }
    }
}

/// The channels fds 0 and 1 of `pid` are now.
fn proc_channels(pid: u32) -> StdioInodes {
    let fd = |n: u32| {
        std::fs::read_link(format!("/proc/{pid}/fd/{n}"))
            .ok()
            .and_then(|l| channel_inode(&l))
            .unwrap_or(0)
    };
    StdioInodes {
        stdin: fd(0),
        stdout: fd(1),
    }
}

/// The inode of a `/proc/PID/fd` link to a pipe or socket (`pipe:[123]`,
/// `socket:[456]`); None for anything else.
pub fn channel_inode(link: &Path) -> Option<u64> {
    let s = link.to_str()?;
    let rest = s.strip_prefix("pipe:[").or_else(|| s.strip_prefix("socket:["))?;
    rest.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_and_sockets_name_their_inode() {
        assert_eq!(channel_inode(Path::new("pipe:[123]")), Some(123));
        assert_eq!(channel_inode(Path::new("socket:[98765]")), Some(98765));
        assert_eq!(channel_inode(Path::new("/dev/null")), None);
        assert_eq!(channel_inode(Path::new("anon_inode:[eventfd]")), None);
        assert_eq!(channel_inode(Path::new("pipe:[12")), None);
        assert_eq!(channel_inode(Path::new("/tmp/pipe:[1]")), None);
    }

    #[test]
    fn a_process_of_ours_has_readable_channels() {
        // The test runner's own fds: whatever they are, reading them works.
        let inos = proc_channels(std::process::id());
        let fd0 = std::fs::read_link("/proc/self/fd/0").ok();
        assert_eq!(inos.stdin != 0, fd0.as_deref().and_then(channel_inode).is_some());
    }
}
