//! Loss must reach the SIEM: what the agent could not see arrives in the
//! sinks as a folded `agent.event_loss` alert, not only in its log and
//! metrics; and one sink's trouble is not another's.

use std::time::Duration;

use mcpwatch_tests::{fixtures::*, *};
use serde_json::Value;

/// The alerts of rule `rule` in a file sink's output (ECS lines).
fn sink_alerts(path: &std::path::Path, rule: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["rule"]["id"] == rule)
        .collect()
}

#[test]
fn ring_loss_reaches_the_sinks_as_one_event_loss_alert_with_the_counts() {
    let agent = Agent::start_with_config(
        "evasion-loss",
        "state_dir = \"{dir}/state\"\n\
         [metrics]\naddress = \"127.0.0.1:0\"\n\
         [[sinks]]\nname = \"local\"\nfile = { path = \"{dir}/alerts.jsonl\" }\n",
        &["--ring-bytes", "4096", "--no-user-host-configs"],
    );
    agent.run_python(
        "burst",
        r#"
import os
for i in range(20000):
    try: os.open("/nonexistent/%d" % i, os.O_RDONLY)
    except OSError: pass
"#,
    );
    let path = agent.dir.join("alerts.jsonl");
    let alerts = wait_for(
        "an agent.event_loss alert in the file sink",
        Duration::from_secs(20),
        || {
            let a = sink_alerts(&path, "agent.event_loss");
            (!a.is_empty()).then_some(a)
        },
        || agent.log(),
    );
    let a = &alerts[0];
    assert_eq!(a["log"]["level"], "high", "{a}");
    let ring = a["mcpwatch"]["evidence"]["ring"]
        .as_array()
        .expect("ring counts")
        .clone();
    let file = ring
        .iter()
        .find(|r| r["server"] == "burst" && r["event_kind"] == "file")
        .unwrap_or_else(|| panic!("no count for burst/file: {a}"));
    assert!(file["lost"].as_u64().unwrap() > 0);
    assert!(a["mcpwatch"]["count"].as_u64().unwrap() >= file["lost"].as_u64().unwrap());
    // Folded: loss counted on later ticks waits for the next interval.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sink_alerts(&path, "agent.event_loss").len(), 1, "not folded");
    assert!(agent.stop().success());
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = output(
            std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(at),
        );
        assert!(
            out.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_spool_filesystem_does_not_blind_a_healthy_sink_and_drops_are_folded() {
    // Every sink's spool on one small filesystem, which the sink that is
    // down fills.
    let spool = scratch_dir("evasion-sinks-spool");
    let _tmpfs = Tmpfs::mount(&spool, "64k");
    let n = 1500;
    let files = scratch_dir("evasion-sinks-files");
    for i in 0..n {
        std::fs::write(files.join(format!("f{i}")), b"").unwrap();
    }
    let agent = Agent::start_with_config(
        "evasion-sinks",
        &format!(
            "state_dir = \"{{dir}}/state\"\nspool_dir = \"{}\"\n\
             [metrics]\naddress = \"127.0.0.1:0\"\n\
             [policy]\nalert_distinct_max = 1000000\n\
             [[sinks]]\nname = \"down\"\nwebhook = {{ url = \"http://127.0.0.1:1/\" }}\n\
             retry = {{ initial_backoff_ms = 200, max_backoff_ms = 1000 }}\n\
             [[sinks]]\nname = \"local\"\nfile = {{ path = \"{{dir}}/alerts.jsonl\" }}\n",
            spool.display()
        ),
        &["--no-user-host-configs"],
    );
    let code = format!(
        "import os\nfor i in range({n}):\n    os.close(os.open('{}/f%d' % i, os.O_RDONLY))\n",
        files.display()
    );
    agent.run_python("burst", &code);
    let path = agent.dir.join("alerts.jsonl");
    let prefix = format!("{}/f", files.display());
    let ours = || distinct_numbered(&path, &prefix);
    // The healthy sink gets every alert although its spool is unwritable.
    let spool_errors = || {
        let (_, body) = http_get(&agent.metrics_address(), "/metrics").unwrap();
        body.lines()
            .find(|l| l.starts_with("mcpwatch_sink_spool_errors_total{sink=\"local\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    wait_for(
        "every alert in the healthy sink",
        Duration::from_secs(30),
        || (ours() >= n).then_some(()),
        || format!("{} of {n} alerts\n{}", ours(), agent.log()),
    );
    // The down sink's drops reach the SIEM through the healthy one, folded.
    let loss = wait_for(
        "the down sink's drops in an agent.event_loss alert",
        Duration::from_secs(20),
        || {
            let a = sink_alerts(&path, "agent.event_loss");
            let dropped: u64 = a
                .iter()
                .flat_map(|a| {
                    a["mcpwatch"]["evidence"]["sinks"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .filter(|s| s["sink"] == "down")
                .map(|s| s["dropped"].as_u64().unwrap_or(0))
                .sum();
            (dropped > 0).then_some((a.len(), dropped))
        },
        || agent.log(),
    );
    assert!(
        spool_errors() > 0,
        "the healthy sink's spool was never unwritable: the test proves nothing"
    );
    assert!(loss.0 <= 2, "loss alerts not folded: {loss:?}");
    assert!(loss.1 < n as u64, "{loss:?}");
    assert!(agent.stop().success());
}
