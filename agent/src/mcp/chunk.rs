//! What the kernel's stdio capture delivers: bytes a watched server read from
//! its stdin or wrote to its stdout, in bounded chunks with stream offsets.
//!
//! The chunk type is `decode::StdioChunk` (`decode::Event::Stdio`). Chunks of
//! one (pid, fd) arrive in order; a gap in offsets means bytes were lost.
//!
//! `fd` is the direction (0: read by the server, 1: written by it), not the
//! descriptor that carried the bytes: the kernel follows the server's stdin
//! and stdout channels onto whatever descriptors it moves them to (the
//! Python SDK 2.x serves on private duplicates >= 3), see
//! `agent-ebpf/src/probes/stdio.rs`.

/// File descriptor of the bytes a server reads (requests from the host).
pub const FD_STDIN: u32 = 0;
/// File descriptor of the bytes a server writes (responses, notifications).
pub const FD_STDOUT: u32 = 1;

pub use crate::kernel::decode::StdioChunk;

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
