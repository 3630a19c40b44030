//! Newline framing of captured stdio streams.
//!
//! MCP's stdio transport sends one JSON-RPC message per line. The kernel hands
//! over bytes in chunks with stream offsets; this module puts them back into
//! lines per (server, pid, direction), bounded in memory. A gap in offsets
//! (bytes the capture lost) or a line longer than the bound marks the message
//! it falls in as cut: it is reported, never parsed, and framing resumes at the
//! next newline.

use std::collections::HashMap;

use super::chunk::{Direction, StdioChunk};

/// The longest message kept whole (a `tools/list` response can be 100s of KB).
pub const MAX_MESSAGE: usize = 8 << 20;

/// Why a message could not be kept whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutReason {
    /// The capture lost bytes inside it (a gap in offsets).
    Gap,
    /// Longer than [`MAX_MESSAGE`].
    TooLong,
    /// The stream was first seen mid-way (offset > 0), so its first line has no head.
    MidStream,
    /// The process exited with a line unfinished (no newline).
    Unterminated,
}

impl CutReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gap => "gap",
            Self::TooLong => "too_long",
            Self::MidStream => "mid_stream",
            Self::Unterminated => "unterminated",
        }
    }
}

/// One line of a stream: a whole message, or what is left of a cut one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Whole(Vec<u8>),
    Cut {
        reason: CutReason,
        /// Bytes of the line that were seen (and dropped).
        seen: u64,
        /// Bytes the capture lost inside it (gaps).
        lost: u64,
    },
}

/// One direction of one process's stdio.
#[derive(Debug, Default)]
struct Stream {
    buf: Vec<u8>,
    next_offset: Option<u64>,
    /// The line being assembled is already known to be cut.
    cut: Option<CutReason>,
    /// Bytes of the current line dropped because it was too long.
    dropped: u64,
    /// Bytes lost in gaps inside the current line.
    lost: u64,
}

impl Stream {
    fn push(&mut self, offset: u64, data: &[u8], out: &mut Vec<Frame>) {
        let mut data = data;
        // Saturating: offsets come from a record, which a decoder must not trust.
        let end = offset.saturating_add(data.len() as u64);
        match self.next_offset {
            None if offset > 0 => self.mark(CutReason::MidStream),
            Some(expected) if offset > expected => {
                self.lost += offset - expected;
                self.mark(CutReason::Gap);
            }
            Some(expected) if offset < expected => {
                // Overlap: keep only the bytes not seen yet.
                let skip = (expected - offset).min(data.len() as u64) as usize;
                data = &data[skip..];
            }
            _ => {}
        }
        self.next_offset = Some(self.next_offset.map_or(end, |n| n.max(end)));

        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.append(&rest[..nl]);
            self.finish_line(out);
            rest = &rest[nl + 1..];
        }
        self.append(rest);
    }

    fn mark(&mut self, reason: CutReason) {
        self.cut.get_or_insert(reason);
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.cut.is_some() || self.buf.len() + bytes.len() > MAX_MESSAGE {
            if self.cut.is_none() {
                self.mark(CutReason::TooLong);
            }
            self.dropped += (self.buf.len() + bytes.len()) as u64;
            self.buf = Vec::new();
            return;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn finish_line(&mut self, out: &mut Vec<Frame>) {
        let buf = std::mem::take(&mut self.buf);
        match self.cut.take() {
            Some(reason) => out.push(Frame::Cut {
                reason,
                seen: self.dropped,
                lost: self.lost,
            }),
            None => {
                let line = buf.strip_suffix(b"\r").unwrap_or(&buf);
                if !line.iter().all(u8::is_ascii_whitespace) {
                    out.push(Frame::Whole(line.to_vec()));
                }
            }
        }
        self.dropped = 0;
        self.lost = 0;
    }

    fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Every watched process's streams.
#[derive(Debug, Default)]
pub struct Reassembler {
    streams: HashMap<(u32, u32, Direction), Stream>,
}

impl Reassembler {
    /// Adds one chunk; returns the lines it completed, in order.
    pub fn push(&mut self, chunk: &StdioChunk) -> Vec<Frame> {
        let mut out = Vec::new();
        let Some(dir) = Direction::from_fd(chunk.fd) else {
            return out;
        };
        let key = (chunk.header.server, chunk.header.pid, dir);
        self.streams
            .entry(key)
            .or_default()
            .push(chunk.offset, &chunk.data, &mut out);
        out
    }

    /// Forgets a process's streams (it exited); returns the unfinished lines
    /// dropped: (server, direction, bytes).
    pub fn forget_pid(&mut self, pid: u32) -> Vec<(u32, Direction, usize)> {
        let mut dropped = Vec::new();
        self.streams.retain(|&(server, p, dir), s| {
            if p != pid {
                return true;
            }
            let bytes = s.buffered() + s.dropped as usize;
            if bytes > 0 || s.cut.is_some() {
                dropped.push((server, dir, bytes));
            }
            false
        });
        dropped
    }

    /// Bytes held in unfinished lines.
    pub fn buffered(&self) -> usize {
        self.streams.values().map(Stream::buffered).sum()
    }

    pub fn streams(&self) -> usize {
        self.streams.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernel::decode::Header;
    use agent_common::EventKind;

    pub fn header(server: u32, pid: u32) -> Header {
        Header::for_test(EventKind::Exec, server, pid)
    }

    pub fn chunk(fd: u32, offset: u64, data: &[u8]) -> StdioChunk {
        StdioChunk {
            header: header(1, 100),
            fd,
            offset,
            len: data.len() as u64,
            data: data.to_vec(),
            truncated: false,
        }
    }

    /// Splits a stream into chunks of `size` bytes with consecutive offsets.
    pub fn chunks(fd: u32, bytes: &[u8], size: usize) -> Vec<StdioChunk> {
        bytes
            .chunks(size)
            .enumerate()
            .map(|(i, c)| chunk(fd, (i * size) as u64, c))
            .collect()
    }

    fn whole(frames: &[Frame]) -> Vec<&[u8]> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Whole(b) => Some(b.as_slice()),
                Frame::Cut { .. } => None,
            })
            .collect()
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let mut r = Reassembler::default();
        let stream = b"{\"a\":1}\r\n{\"b\":2}\n\n{\"c\"";
        let mut frames = Vec::new();
        for c in chunks(1, stream, 3) {
            frames.extend(r.push(&c));
        }
        assert_eq!(whole(&frames), [&b"{\"a\":1}"[..], b"{\"b\":2}"]);
        assert_eq!(r.buffered(), 4);
        assert_eq!(r.forget_pid(100), [(1, Direction::Out, 4)]);
        assert_eq!(r.streams(), 0);
    }

    #[test]
    fn a_gap_cuts_the_message_it_falls_in_and_framing_resumes() {
        let mut r = Reassembler::default();
        let mut frames = r.push(&chunk(1, 0, b"{\"ok\":1}\n{\"lost\":"));
        // Bytes 17..30 never arrive.
        frames.extend(r.push(&chunk(1, 30, b"tail\"}\n{\"ok\":2}\n")));
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0], Frame::Whole(b"{\"ok\":1}".to_vec()));
        assert!(
            matches!(
                frames[1],
                Frame::Cut {
                    reason: CutReason::Gap,
                    lost: 13,
                    ..
                }
            ),
            "{frames:?}"
        );
        assert_eq!(frames[2], Frame::Whole(b"{\"ok\":2}".to_vec()));
    }

    #[test]
    fn a_truncated_syscall_shows_as_a_gap_at_the_next_chunk() {
        let mut r = Reassembler::default();
        let mut c = chunk(1, 0, b"{\"big\":\"xxxx");
        c.len = 5000;
        c.truncated = true;
        assert!(r.push(&c).is_empty());
        let frames = r.push(&chunk(1, 5000, b"{\"next\":1}\n"));
        assert!(matches!(
            frames[0],
            Frame::Cut {
                reason: CutReason::Gap,
                ..
            }
        ));
        // The line after the cut one is whole again.
        let frames = r.push(&chunk(1, 5011, b"{\"n\":2}\n"));
        assert_eq!(frames, [Frame::Whole(b"{\"n\":2}".to_vec())]);
    }

    #[test]
    fn overlong_lines_are_cut_and_not_kept() {
        let mut r = Reassembler::default();
        let big = vec![b'x'; MAX_MESSAGE + 10];
        let mut frames = Vec::new();
        let mut off = 0;
        for part in big.chunks(1 << 20) {
            frames.extend(r.push(&chunk(1, off, part)));
            off += part.len() as u64;
        }
        assert!(r.buffered() <= MAX_MESSAGE);
        frames.extend(r.push(&chunk(1, off, b"\n{}\n")));
        assert!(matches!(frames[0], Frame::Cut { reason: CutReason::TooLong, seen, .. } if seen == big.len() as u64));
        assert_eq!(frames[1], Frame::Whole(b"{}".to_vec()));
    }

    #[test]
    fn streams_are_kept_apart_by_pid_and_direction() {
        let mut r = Reassembler::default();
        assert!(r.push(&chunk(0, 0, b"{\"in\"")).is_empty());
        assert!(r.push(&chunk(1, 0, b"{\"out\"")).is_empty());
        let mut other = chunk(1, 0, b"{\"x\":1}\n");
        other.header.pid = 200;
        assert_eq!(r.push(&other).len(), 1);
        assert_eq!(r.push(&chunk(0, 5, b":1}\n")), [Frame::Whole(b"{\"in\":1}".to_vec())]);
        assert_eq!(r.push(&chunk(1, 6, b":2}\n")), [Frame::Whole(b"{\"out\":2}".to_vec())]);
        // Other fds are not MCP's.
        assert!(r.push(&chunk(2, 0, b"log\n")).is_empty());
    }

    /// Found by `props::garbage_is_bounded_and_described`: a chunk ending
    /// past `u64::MAX` overflowed (a panic in debug builds, a wrapped offset
    /// in release that made later bytes look re-sent).
    #[test]
    fn an_offset_at_the_end_of_u64_does_not_overflow() {
        let mut r = Reassembler::default();
        let frames = r.push(&chunk(0, u64::MAX - 39, &[b'\n'; 40]));
        assert!(
            matches!(
                frames[0],
                Frame::Cut {
                    reason: CutReason::MidStream,
                    ..
                }
            ),
            "{frames:?}"
        );
        assert_eq!(frames.len(), 1, "blank lines after the cut one are not frames");
        assert_eq!(r.push(&chunk(0, u64::MAX, b"{}\n")), [Frame::Whole(b"{}".to_vec())]);
    }

    #[test]
    fn first_seen_mid_stream_cuts_the_first_line_only() {
        let mut r = Reassembler::default();
        let frames = r.push(&chunk(1, 77, b"al\":1}\n{\"b\":1}\n"));
        assert!(matches!(
            frames[0],
            Frame::Cut {
                reason: CutReason::MidStream,
                ..
            }
        ));
        assert_eq!(frames[1], Frame::Whole(b"{\"b\":1}".to_vec()));
    }
}

#[cfg(test)]
mod props;
