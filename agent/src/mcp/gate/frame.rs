//! Newline framing of one direction of the gate's relay.
//!
//! The agent's `reassembly` frames what the kernel captured: it strips
//! `\r`, skips blank lines and drops what is too long, because it only
//! reads. The gate must forward every byte as it came, so it frames here:
//! lines are handed over with their terminator, and a line longer than the
//! hold limit is handed over in pieces (its head, then the rest as it
//! arrives) instead of being held whole.

/// What receives the pieces of a stream.
pub trait Sink {
    /// A whole line, its `\n` included (absent only for an unterminated last line).
    fn line(&mut self, line: &[u8]);
    /// The first `limit` bytes of a line longer than the limit; the rest
    /// follows through [`Sink::more`].
    fn long(&mut self, head: &[u8]);
    /// More of a long line; `end` when this piece holds its `\n` (or the stream ended).
    fn more(&mut self, bytes: &[u8], end: bool);
}

/// Unfinished line of one direction.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Inside a line longer than the limit (its head was handed over).
    in_long: bool,
}

/// Capacity kept between lines: a big line's buffer is given back.
const KEEP_CAPACITY: usize = 64 << 10;

impl Framer {
    /// Feeds bytes read from the stream; `limit` is the longest line held whole.
    pub fn push(&mut self, mut data: &[u8], limit: usize, sink: &mut impl Sink) {
        while !data.is_empty() {
            let nl = data.iter().position(|&b| b == b'\n');
            if self.in_long {
                match nl {
                    Some(i) => {
                        sink.more(&data[..=i], true);
                        self.in_long = false;
                        data = &data[i + 1..];
                    }
                    None => {
                        sink.more(data, false);
                        return;
                    }
                }
                continue;
            }
            let want = nl.map_or(data.len(), |i| i + 1);
            if self.buf.len() + want > limit {
                let take = limit.saturating_sub(self.buf.len()).min(data.len());
                self.buf.extend_from_slice(&data[..take]);
                sink.long(&self.buf);
                self.reset();
                self.in_long = true;
                data = &data[take..];
                continue;
            }
            self.buf.extend_from_slice(&data[..want]);
            data = &data[want..];
            if nl.is_some() {
                sink.line(&self.buf);
                self.reset();
            }
        }
    }

    /// The stream ended: an unterminated last line is still a line.
    pub fn finish(&mut self, sink: &mut impl Sink) {
        if self.in_long {
            sink.more(&[], true);
            self.in_long = false;
        } else if !self.buf.is_empty() {
            sink.line(&self.buf);
        }
        self.reset();
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.buf.len()
    }

    fn reset(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Rec {
        out: Vec<String>,
    }

    impl Sink for Rec {
        fn line(&mut self, line: &[u8]) {
            self.out.push(format!("L:{}", String::from_utf8_lossy(line)));
        }
        fn long(&mut self, head: &[u8]) {
            self.out.push(format!("H:{}", String::from_utf8_lossy(head)));
        }
        fn more(&mut self, bytes: &[u8], end: bool) {
            self.out
                .push(format!("M{}:{}", u8::from(end), String::from_utf8_lossy(bytes)));
        }
    }

    #[test]
    fn lines_keep_every_byte_across_reads() {
        let mut f = Framer::default();
        let mut r = Rec::default();
        f.push(b"ab", 100, &mut r);
        f.push(b"c\r\n\n{\"x\"", 100, &mut r);
        f.push(b":1}\ntail", 100, &mut r);
        f.finish(&mut r);
        assert_eq!(r.out, ["L:abc\r\n", "L:\n", "L:{\"x\":1}\n", "L:tail"]);
        assert_eq!(f.held(), 0);
    }

    #[test]
    fn long_lines_are_handed_over_in_pieces_never_held_whole() {
        let mut f = Framer::default();
        let mut r = Rec::default();
        f.push(b"0123", 5, &mut r);
        assert_eq!(f.held(), 4);
        f.push(b"4567", 5, &mut r);
        assert!(f.held() <= 5);
        f.push(b"89\nok\n", 5, &mut r);
        assert_eq!(r.out, ["H:01234", "M0:567", "M1:89\n", "L:ok\n"]);
        // A line of exactly the limit, newline included, is whole.
        let mut r = Rec::default();
        f.push(b"abcd\n", 5, &mut r);
        assert_eq!(r.out, ["L:abcd\n"]);
        // Cut by the end of the stream.
        let mut r = Rec::default();
        f.push(b"abcdefg", 5, &mut r);
        f.finish(&mut r);
        assert_eq!(r.out, ["H:abcde", "M0:fg", "M1:"]);
    }
}
