//! Fixtures several test files share: a stub DNS resolver, counting what a
//! sink delivered.

use std::path::Path;

/// A DNS stub on 127.0.0.53:53 answering every A query with 127.0.0.77.
pub fn dns_stub() -> std::thread::JoinHandle<()> {
    let sock = std::net::UdpSocket::bind("127.0.0.53:53").expect("bind the stub resolver on port 53 (root)");
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            return;
        };
        let q = &buf[..n];
        let mut r = q.to_vec();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 1; // one answer
        r.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 77]);
        let _ = sock.send_to(&r, from);
    })
}

/// How many distinct `PREFIX<number>` names the file at `path` mentions (the
/// numbered files a burst opened, as its alerts name them).
pub fn distinct_numbered(path: &Path, prefix: &str) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    for (at, _) in text.match_indices(prefix) {
        let digits: String = text[at + prefix.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if !digits.is_empty() {
            seen.insert(digits);
        }
    }
    seen.len()
}
