//! Kernel-side drops other than a full ring are counted per probe and
//! reason (`PROBE_ERRORS`), never silent.

use agent_common::probe_errors::{Probe, Reason, index};
use mcpwatch_tests::*;

const NET_SOCKADDR_UNREADABLE: u32 = index(Probe::Net, Reason::SockaddrUnreadable);

/// Sum over CPUs of one slot of the pinned PROBE_ERRORS map.
fn probe_errors(pin_dir: &std::path::Path, index: u32) -> u64 {
    let data = aya::maps::MapData::from_pin(pin_dir.join("PROBE_ERRORS")).expect("open the pinned map");
    let map = aya::maps::Map::PerCpuArray(data);
    let arr: aya::maps::PerCpuArray<_, u64> = aya::maps::PerCpuArray::try_from(map).expect("a per-CPU array");
    arr.get(&index, 0).expect("read the slot").iter().sum()
}

#[test]
fn a_connect_with_an_unreadable_sockaddr_is_reported_and_counted() {
    let pin_dir = std::path::PathBuf::from(format!("/sys/fs/bpf/mcpwatch-it-errors-{}", std::process::id()));
    let agent = Agent::start("probe-errors", &["--pin", pin_dir.to_str().unwrap()]);
    let before = probe_errors(&pin_dir, NET_SOCKADDR_UNREADABLE);
    // A pointer into the unmapped first page: the kernel fails the call with
    // EFAULT, the unconnected socket holds no destination, and the probe
    // cannot read the caller's buffer either.
    agent.run_python(
        "efault",
        r#"
import ctypes, socket
libc = ctypes.CDLL(None, use_errno=True)
s = socket.socket()
for _ in range(3):
    assert libc.connect(s.fileno(), ctypes.c_void_p(8), 16) == -1
    assert ctypes.get_errno() == 14, ctypes.get_errno()
"#,
    );
    let ev = agent.server_events("efault");
    let attempts: Vec<_> = ev
        .iter()
        .filter(|e| e["kind"] == "net" && e["op"] == "connect")
        .collect();
    assert_eq!(attempts.len(), 3, "every attempt still reported: {}", dump(&ev));
    assert!(attempts.iter().all(|e| e["error"] == "EFAULT"), "{}", dump(&ev));
    let after = probe_errors(&pin_dir, NET_SOCKADDR_UNREADABLE);
    assert_eq!(after - before, 3, "each unreadable sockaddr counted once");
    // Reported like ring loss: a `loss` line, the metric and the status.
    let ev = agent.wait_events("the probe-error loss line", |ev| {
        ev.iter()
            .any(|e| e["kind"] == "loss" && e["probe"] == "net" && e["reason"] == "sockaddr_unreadable")
    });
    let line = ev.iter().find(|e| e["kind"] == "loss" && e["probe"] == "net").unwrap();
    assert!(line["lost"].as_u64().unwrap() >= 3, "{line}");
    let (code, body) = http_get(&agent.metrics_address(), "/metrics").expect("scrape");
    assert_eq!(code, 200);
    assert!(
        body.lines()
            .any(|l| l.starts_with("mcpwatch_probe_errors_total{probe=\"net\",reason=\"sockaddr_unreadable\"}")),
        "{body}"
    );
    assert!(agent.status()["probe_errors"]["net/sockaddr_unreadable"].as_u64() >= Some(3));
    assert!(agent.stop().success());
    let _ = std::fs::remove_dir(&pin_dir);
}
