//! Stdio reassembly and JSON-RPC: a stream split at arbitrary points frames
//! the same lines as unsplit, every line is messages or described garbage,
//! and nothing held exceeds the per-stream cap.
#![no_main]

use agent_common::EventKind;
use libfuzzer_sys::fuzz_target;
use mcpwatch::{
    kernel::decode::{Header, StdioChunk},
    mcp::{
        jsonrpc,
        reassembly::{Frame, MAX_MESSAGE, Reassembler},
    },
};

fn chunk(offset: usize, data: &[u8]) -> StdioChunk {
    StdioChunk {
        header: Header {
            kind: EventKind::Stdio,
            server: 1,
            ktime_ns: 0,
            tid: 7,
            pid: 7,
            ppid: 1,
            uid: 0,
            gid: 0,
            unwatched: false,
            comm: "fuzz".into(),
        },
        fd: 1,
        offset: offset as u64,
        len: data.len() as u64,
        data: data.to_vec(),
        truncated: false,
    }
}

fuzz_target!(|input: (Vec<u16>, &[u8])| {
    let (cuts, stream) = input;
    let whole = Reassembler::default().push(&chunk(0, stream));
    let mut ends: Vec<usize> = cuts.iter().map(|&c| c as usize % (stream.len() + 1)).collect();
    ends.push(stream.len());
    ends.sort_unstable();
    let mut r = Reassembler::default();
    let mut split = Vec::new();
    let mut start = 0;
    for end in ends {
        split.extend(r.push(&chunk(start, &stream[start..end])));
        assert!(r.buffered() <= MAX_MESSAGE);
        start = end;
    }
    assert_eq!(split, whole);
    for f in &split {
        if let Frame::Whole(line) = f {
            assert!(!line.contains(&b'\n'));
            let p = jsonrpc::parse(line);
            assert!(!p.messages.is_empty() || !p.garbage.is_empty());
        }
    }
});
