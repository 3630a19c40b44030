//! The event ring's reader (agent/src/kernel/ring.rs) publishes its position
//! once per batch of records, not after each: a burst many batches long and a
//! ring that wraps hundreds of times are each read whole, once, in order, and
//! what the kernel could not queue is counted, never skipped silently.

use mcpwatch_tests::*;
use serde_json::Value;

/// The `N` of each `/nonexistent-ring/N` open on `server`'s file lines, in
/// line order.
fn opened(events: &[Value], server: &str) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e["kind"] == "file" && e["server"] == server)
        .filter_map(|e| e["path"].as_str()?.strip_prefix("/nonexistent-ring/")?.parse().ok())
        .collect()
}

/// Opens of `/nonexistent-ring/0..n`, sleeping 2 ms after every `pace`.
fn opens(n: u32, pace: u32) -> String {
    format!(
        r#"
import os, time
for i in range({n}):
    try: os.open("/nonexistent-ring/%d" % i, os.O_RDONLY)
    except OSError: pass
    if i % {pace} == {pace} - 1: time.sleep(0.002)
"#
    )
}

#[test]
fn a_burst_many_batches_long_is_read_once_and_in_order() {
    let agent = Agent::start("ring-burst", &[]);
    agent.run_python("burst", &opens(5000, 1_000_000));
    let ev = agent.wait_events("the burst's 5000 lines", |ev| opened(ev, "burst").len() >= 5000);
    assert_eq!(opened(&ev, "burst"), (0..5000).collect::<Vec<_>>());
    assert_eq!(agent.status()["lost"], 0, "the default ring holds the burst");
    // Read up to the producer, the position is published: the space is the
    // kernel's again and the next event is read as any other.
    agent.run_python("after", &opens(1, 1));
    agent.wait_events("the line of an open after the burst", |ev| opened(ev, "after") == [0]);
    assert!(agent.stop().success());
}

#[test]
fn a_small_ring_wrapping_hundreds_of_times_yields_each_record_once_in_order() {
    // 4 KiB: about 15 file records, so 600 paced opens wrap it ~40 times and
    // the reader's unpublished batch is most of the ring.
    let agent = Agent::start("ring-wrap", &["--ring-bytes", "4096"]);
    agent.run_python("wrap", &opens(600, 4));
    let lost = |ev: &[Value]| -> u64 {
        ev.iter()
            .filter(|e| e["kind"] == "loss" && e["server"] == "wrap" && e["event_kind"] == "file")
            .filter_map(|e| e["lost"].as_u64())
            .sum()
    };
    let ev = agent.wait_events("every open read or counted lost", |ev| {
        opened(ev, "wrap").len() as u64 + lost(ev) >= 600
    });
    let read = opened(&ev, "wrap");
    assert_eq!(
        read.len() as u64 + lost(&ev),
        600,
        "read {} lost {}",
        read.len(),
        lost(&ev)
    );
    assert!(read.windows(2).all(|w| w[0] < w[1]), "out of order or twice: {read:?}");
    assert!(
        read.len() >= 100,
        "only {} of 600 read: the reader fell behind",
        read.len()
    );
    assert!(agent.stop().success());
}
