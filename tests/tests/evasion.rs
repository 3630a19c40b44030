//! Evasion: a server that rewrites what it passed to a syscall while the call
//! runs must not be reported as having done something else. The kernel copies
//! a connect's sockaddr at entry; a probe reading the caller's memory at exit
//! sees whatever a racing thread left there since.

use std::{
    collections::HashMap,
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use mcpwatch_tests::*;
use serde_json::Value;

/// A loopback listener that accepts (and drops) every connection; returns
/// its port and the count of connections it accepted.
fn listener() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    let port = l.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let n = accepted.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            drop(conn);
            n.fetch_add(1, Ordering::Relaxed);
        }
    });
    (port, accepted)
}

/// Connects this many times.
const ATTEMPTS: usize = 400;

#[test]
fn connect_reports_the_port_the_kernel_connected_to_while_a_thread_flips_the_sockaddr() {
    let (a, _) = listener();
    let (b, _) = listener();
    let agent = Agent::start("evasion-connect", &[]);
    // The main thread connects through libc with one sockaddr buffer; a
    // second thread keeps flipping its port between A and B. The kernel
    // connects to whichever port the buffer held at entry; getpeername()
    // says which.
    let out = agent.run_python(
        "flipper",
        &format!(
            r#"
import ctypes, os, socket, struct, sys, threading
sys.setswitchinterval(1e-6)
libc = ctypes.CDLL(None, use_errno=True)
A, B = {a}, {b}
buf = ctypes.create_string_buffer(struct.pack("=H2s4s8x", socket.AF_INET, struct.pack("!H", A), socket.inet_aton("127.0.0.1")), 16)
port_at = ctypes.addressof(buf) + 2
pa, pb = struct.pack("!H", A), struct.pack("!H", B)
stop = False
def flip():
    while not stop:
        ctypes.memmove(port_at, pa, 2)
        ctypes.memmove(port_at, pb, 2)
t = threading.Thread(target=flip)
t.start()
real = []
for _ in range({ATTEMPTS}):
    s = socket.socket()
    if libc.connect(s.fileno(), buf, 16) == 0:
        real.append(s.getpeername()[1])
    else:
        real.append(0)
    s.close()
stop = True
t.join()
print(os.getpid())
print(" ".join(map(str, real)))
"#
        ),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let pid: u64 = lines.next().and_then(|l| l.trim().parse().ok()).expect("pid line");
    let real: Vec<u16> = lines
        .next()
        .expect("ports line")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(real.len(), ATTEMPTS);
    let per_port = |p: u16| real.iter().filter(|&&r| r == p).count();
    // The race must have happened for the test to mean anything: both ports
    // were really connected to, many times.
    assert!(
        per_port(a) >= 20 && per_port(b) >= 20,
        "the flipping thread did not race: {} to A, {} to B",
        per_port(a),
        per_port(b)
    );

    let ev = agent.server_events("flipper");
    let connects: Vec<&Value> = ev
        .iter()
        .filter(|e| e["kind"] == "net" && e["op"] == "connect" && e["pid"] == pid)
        .collect();
    // One event per attempt, in the order made (one thread, one after another).
    assert_eq!(connects.len(), ATTEMPTS, "{}", dump(&ev));
    let mut mismatches = HashMap::new();
    for (i, (e, &port)) in connects.iter().zip(&real).enumerate() {
        if port == 0 {
            // The buffer was caught half-written: a failed connect, reported
            // from the caller's memory (nothing in the kernel says where).
            assert!(e["error"].is_string(), "attempt {i}: {e}");
            continue;
        }
        assert_eq!(e["result"], 0, "attempt {i}: {e}");
        assert_eq!(e["addr"], "127.0.0.1", "attempt {i}: {e}");
        if e["port"] != port {
            *mismatches.entry((port, e["port"].as_u64())).or_insert(0) += 1;
        }
    }
    assert!(
        mismatches.is_empty(),
        "connects reported to another port than the kernel connected to, (real, reported) -> count: {mismatches:?}"
    );
    assert!(agent.stop().success());
}
