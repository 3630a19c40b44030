//! What the kernel's stdio capture delivers: bytes a watched server read from
//! its stdin or wrote to its stdout, in bounded chunks with stream offsets.
//!
//! The chunk type is `decode::StdioChunk` (`decode::Event::Stdio`). Chunks of
//! one (pid, fd) arrive in order; a gap in offsets means bytes were lost.
//!
//! Note for the capture: the official Python SDK (mcp 2.x) no longer speaks on
//! fds 0 and 1. `mcp.server.stdio.stdio_server()` duplicates them onto private
//! descriptors (`F_DUPFD_CLOEXEC`, >= 3), points fd 0 at /dev/null and fd 1 at
//! stderr, and serves the wire from the duplicates. A capture keyed on fd
//! numbers sees nothing of such a server; keying on the pipe (the `struct file`
//! fds 0/1 held when the process was watched) does.

/// File descriptor of the bytes a server reads (requests from the host).
pub const FD_STDIN: u32 = 0;
/// File descriptor of the bytes a server writes (responses, notifications).
pub const FD_STDOUT: u32 = 1;

pub use crate::decode::StdioChunk;

/// Which way the bytes went, from the server's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Host -> server (the server read them from fd 0).
    In,
    /// Server -> host (written to fd 1).
    Out,
}

impl Direction {
    pub fn from_fd(fd: u32) -> Option<Self> {
        match fd {
            FD_STDIN => Some(Self::In),
            FD_STDOUT => Some(Self::Out),
            _ => None,
        }
    }

    pub fn fd(self) -> u32 {
        match self {
            Self::In => FD_STDIN,
            Self::Out => FD_STDOUT,
        }
    }
}
