//! Loss is never silent: what the kernel drops is counted and reported by
//! server and event kind.

use mcpwatch_tests::*;

#[test]
fn ring_buffer_loss_is_counted_by_server_and_kind() {
    // A 4 KiB ring cannot hold a burst of file events: the kernel counts what
    // it drops and the agent reports it.
    let agent = Agent::start("loss", &["--ring-bytes", "4096"]);
    agent.run_python(
        "burst",
        r#"
import os
for i in range(20000):
    try: os.open("/nonexistent/%d" % i, os.O_RDONLY)
    except OSError: pass
"#,
    );
    // Reported per kind: the burst's file events (its exit may be lost too,
    // and reported on a line of its own).
    let is_file_loss =
        |e: &serde_json::Value| e["kind"] == "loss" && e["server"] == "burst" && e["event_kind"] == "file";
    let ev = agent.wait_events("the file loss report", |ev| ev.iter().any(is_file_loss));
    let loss = find(&ev, "loss", is_file_loss);
    assert!(loss["lost"].as_u64().unwrap() > 0);
    assert!(agent.status()["lost"].as_u64().unwrap() > 0);
    assert!(agent.stop().success());
}
