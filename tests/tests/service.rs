//! The agent as a systemd service: the notification protocol (READY, the
//! watchdog pinged from the event loop, STOPPING) spoken to a real datagram
//! socket, and the shipped unit checked by systemd's own tools
//! (`systemd-analyze verify`, `security --offline`), its capability set the
//! one the least-privilege test runs use.

use std::{
    os::unix::net::UnixDatagram,
    path::Path,
    time::{Duration, Instant},
};

use mcpwatch_tests::*;

#[test]
fn the_agent_says_ready_pings_the_watchdog_from_its_loop_and_says_stopping() {
    let d = scratch_dir("notify");
    let path = d.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    // WatchdogSec=2: a ping at least every second.
    let agent = Agent::start_with_env(
        "notify-agent",
        &[("NOTIFY_SOCKET", path.to_str().unwrap()), ("WATCHDOG_USEC", "2000000")],
        &[],
    );
    let mut buf = [0u8; 4096];
    let mut recv = || {
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert!(first.starts_with("READY=1\n"), "{first:?}");
    assert!(first.contains("STATUS=mcpwatch agent running"), "{first:?}");
    // Ready only once the control socket answers: the harness's ping worked.
    assert!(agent.status().is_object());
    let mut pings = Vec::new();
    while pings.len() < 3 {
        let m = recv();
        assert_eq!(m, "WATCHDOG=1\n");
        pings.push(Instant::now());
    }
    for w in pings.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap < Duration::from_secs(2),
            "pinged before the watchdog expires: {gap:?}"
        );
    }
    let pid = agent.pid();
    let stopper = std::thread::spawn(move || agent.stop());
    let mut last = recv();
    while last == "WATCHDOG=1\n" {
        last = recv();
    }
    assert_eq!(last, "STOPPING=1\n", "after SIGTERM to {pid}");
    assert!(stopper.join().unwrap().success());
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// The shipped unit with its placeholder filled, in a scratch directory.
fn unit() -> (std::path::PathBuf, String) {
    let text = std::fs::read_to_string(repo().join("packaging/mcpwatch.service"))
        .unwrap()
        .replace("@BINDIR@", bin().parent().unwrap().to_str().unwrap());
    let d = scratch_dir("unit");
    let path = d.join("mcpwatch.service");
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

#[test]
fn the_shipped_unit_verifies_and_is_hardened() {
    let (path, text) = unit();
    let out = output(std::process::Command::new("systemd-analyze").arg("verify").arg(&path));
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = output(
        std::process::Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&path),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    let score: f64 = report
        .lines()
        .find_map(|l| l.split("Overall exposure level for mcpwatch.service: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score: {report}"));
    eprintln!("systemd-analyze security --offline: exposure {score}");
    assert!(
        score <= 4.0,
        "exposure {score} (was 3.6 when the unit was written):\n{report}"
    );
    // The unit grants exactly the set the least-privilege runs test.
    let bounding: Vec<String> = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .unwrap()
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect();
    assert_eq!(bounding.join(","), AGENT_CAPS);
    let ambient = text
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .unwrap();
    assert_eq!(
        ambient,
        text.lines()
            .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
            .unwrap()
    );
    assert!(text.contains("Type=notify") && text.contains("WatchdogSec="));
    assert!(!Path::new(&path).with_extension("tmp").exists());
}

#[test]
fn heartbeats_reach_the_sinks_at_the_configured_interval() {
    let agent = Agent::start_with_config(
        "heartbeat",
        "heartbeat_s = 1\n[[sinks]]\nname = \"f\"\nfile = { path = \"{dir}/alerts.jsonl\" }\n",
        &[],
    );
    let beats = agent.wait_events("three heartbeats", |ev| {
        ev.iter()
            .filter(|a| a["kind"] == "alert" && a["rule"] == "agent.heartbeat")
            .count()
            >= 3
    });
    let beats: Vec<&serde_json::Value> = beats.iter().filter(|a| a["rule"] == "agent.heartbeat").collect();
    assert_eq!(beats[0]["severity"], "info");
    assert!(beats[0]["evidence"]["uptime_s"].as_u64().is_some(), "{}", beats[0]);
    assert_eq!(beats[0]["evidence"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(beats[0]["evidence"]["processes_watched"].is_u64(), "{}", beats[0]);
    let uptimes: Vec<u64> = beats
        .iter()
        .map(|b| b["evidence"]["uptime_s"].as_u64().unwrap())
        .collect();
    assert!(uptimes.windows(2).all(|w| w[1] > w[0]), "{uptimes:?}");
    // Through the sink too (ECS there).
    let sink = std::fs::read_to_string(agent.dir.join("alerts.jsonl")).unwrap();
    assert!(
        sink.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|a| a["event"]["action"] == "agent.heartbeat"),
        "{sink}"
    );
    assert!(agent.stop().success());
}
