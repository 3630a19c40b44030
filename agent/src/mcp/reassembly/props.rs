//! Properties of the stdio path from chunks to JSON-RPC messages: however a
//! stream is split into chunks (and re-sent in overlapping ones) it decodes
//! to the same messages as unsplit, and garbage never panics nor holds more
//! than the documented cap per stream.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::tests::{chunk, header};
use super::*;
use crate::mcp::jsonrpc::{self, Id, Message, Outcome};
use crate::proptesting::{config, json, odd_text};

fn id() -> impl Strategy<Value = Value> {
    prop_oneof![any::<i64>().prop_map(Value::from), odd_text().prop_map(Value::from)]
}

/// A JSON-RPC message and the line that carries it.
fn message() -> impl Strategy<Value = (Message, Value)> {
    prop_oneof![
        (id(), odd_text(), json()).prop_map(|(id, method, params)| {
            let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            let id = Id::from(id.to_string().as_str());
            (Message::Request { id, method, params }, line)
        }),
        (odd_text(), json()).prop_map(|(method, params)| {
            let line = json!({"jsonrpc": "2.0", "method": method, "params": params});
            (Message::Notification { method, params }, line)
        }),
        (id(), json()).prop_map(|(id, result)| {
            let line = json!({"jsonrpc": "2.0", "id": id, "result": result});
            let id = Id::from(id.to_string().as_str());
            (
                Message::Response {
                    id,
                    outcome: Outcome::Result(result),
                },
                line,
            )
        }),
        (id(), any::<i64>(), odd_text()).prop_map(|(id, code, message)| {
            let line = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
            let id = Id::from(id.to_string().as_str());
            (
                Message::Response {
                    id,
                    outcome: Outcome::Error { code, message },
                },
                line,
            )
        }),
    ]
}

/// A stream of lines (a batch now and then), `\n` or `\r\n`, blank lines between.
fn stream() -> impl Strategy<Value = (Vec<Message>, Vec<u8>)> {
    let line = prop_oneof![
        3 => message().prop_map(|(m, l)| (vec![m], l)),
        1 => prop::collection::vec(message(), 1..4).prop_map(|ms| {
            let (m, l): (Vec<Message>, Vec<Value>) = ms.into_iter().unzip();
            (m, Value::Array(l))
        }),
    ];
    let end = prop_oneof![Just("\n"), Just("\r\n"), Just("\n\n"), Just(" \t\n")];
    prop::collection::vec((line, end), 0..8).prop_map(|lines| {
        let mut msgs = Vec::new();
        let mut bytes = Vec::new();
        for ((m, l), end) in lines {
            msgs.extend(m);
            // serde_json escapes newlines inside strings: one message, one line.
            bytes.extend(serde_json::to_vec(&l).expect("a Value serialises"));
            bytes.extend(end.as_bytes());
        }
        (msgs, bytes)
    })
}

/// Pushes `bytes` in chunks ending at `cuts`; each chunk after the first may
/// start up to `back[i]` bytes early (bytes re-sent).
fn push_split(r: &mut Reassembler, fd: u32, bytes: &[u8], cuts: &[usize], back: &[usize]) -> Vec<Frame> {
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    ends.push(bytes.len());
    ends.sort_unstable();
    let mut frames = Vec::new();
    let mut start = 0;
    for (i, end) in ends.into_iter().enumerate() {
        let from = start - back.get(i).map_or(0, |b| b % (start + 1));
        frames.extend(r.push(&chunk(fd, from as u64, &bytes[from..end])));
        start = end;
    }
    frames
}

fn decoded(frames: &[Frame]) -> Result<Vec<Message>, TestCaseError> {
    let mut out = Vec::new();
    for f in frames {
        let Frame::Whole(line) = f else {
            return Err(TestCaseError::fail(format!("a valid stream was cut: {f:?}")));
        };
        let p = jsonrpc::parse(line);
        prop_assert!(
            p.garbage.is_empty(),
            "{:?} in {}",
            p.garbage,
            jsonrpc::excerpt(line, 200)
        );
        out.extend(p.messages);
    }
    Ok(out)
}

/// A chunk of garbage: any process, direction, offset and bytes.
fn garbage_chunk() -> impl Strategy<Value = StdioChunk> {
    let data = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(prop_oneof![Just(b'\n'), Just(b'{'), Just(b'"'), any::<u8>()], 0..64),
    ];
    let offset = prop_oneof![0u64..256, any::<u64>(), (u64::MAX - 64)..=u64::MAX];
    (0u32..3, 0u32..3, 0u32..3, offset, data, any::<bool>()).prop_map(|(server, pid, fd, offset, data, truncated)| {
        StdioChunk {
            header: header(server, pid),
            fd,
            offset,
            len: data.len() as u64,
            data,
            truncated,
        }
    })
}

proptest! {
    #![proptest_config(config(1024))]

    /// Split anywhere, re-sent in part: the same messages as the stream unsplit,
    /// which are the messages it was written from.
    #[test]
    fn any_split_decodes_to_the_same_messages(
        (msgs, bytes) in stream(),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        back in prop::collection::vec(prop_oneof![Just(0usize), any::<usize>()], 0..12),
        fd in 0u32..2,
    ) {
        let whole = Reassembler::default().push(&chunk(fd, 0, &bytes));
        let mut r = Reassembler::default();
        let split = push_split(&mut r, fd, &bytes, &cuts, &back);
        prop_assert_eq!(&split, &whole);
        prop_assert_eq!(decoded(&split)?, msgs);
        prop_assert_eq!(r.buffered(), 0);
    }

    /// Garbage: no panic; each stream holds at most `MAX_MESSAGE` bytes; a
    /// whole frame is one line, never longer than the cap; every line is
    /// messages or described garbage.
    #[test]
    fn garbage_is_bounded_and_described(chunks in prop::collection::vec(garbage_chunk(), 0..24)) {
        let mut r = Reassembler::default();
        for c in &chunks {
            for f in r.push(c) {
                if let Frame::Whole(line) = f {
                    prop_assert!(line.len() <= MAX_MESSAGE && !line.contains(&b'\n'));
                    let p = jsonrpc::parse(&line);
                    prop_assert!(!p.messages.is_empty() || !p.garbage.is_empty());
                }
            }
            prop_assert!(r.buffered() <= MAX_MESSAGE * r.streams().max(1));
        }
        for pid in 0..3 {
            r.forget_pid(pid);
        }
        prop_assert_eq!((r.streams(), r.buffered()), (0, 0));
    }

    /// Any line: its messages and its garbage account for all it holds (one
    /// for an object or anything else, one per member of a batch).
    #[test]
    fn any_line_is_messages_or_garbage(v in json()) {
        let p = jsonrpc::parse(&serde_json::to_vec(&v).expect("a Value serialises"));
        let want = match &v {
            Value::Array(items) if !items.is_empty() => items.len(),
            _ => 1,
        };
        prop_assert_eq!(p.messages.len() + p.garbage.len(), want);
    }
}
