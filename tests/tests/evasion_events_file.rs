//! The events file cannot be blown up or corrupted: it is bounded by size
//! (rotation, N files kept), a restarted writer starts on a line boundary,
//! and SIGHUP reopens it (logrotate's convention).

use mcpwatch_tests::*;

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn assert_every_line_parses(path: &std::path::Path) {
    for (i, l) in lines(path).iter().enumerate() {
        assert!(
            serde_json::from_str::<serde_json::Value>(l).is_ok(),
            "{} line {} does not parse: {l}",
            path.display(),
            i + 1
        );
    }
}

#[test]
fn a_restarted_writer_starts_on_a_line_boundary() {
    let dir = scratch_dir("evasion-events-torn");
    let events = dir.join("events.jsonl");
    // What a writer killed mid-line leaves behind.
    std::fs::write(
        &events,
        "{\"kind\":\"watch\",\"server\":\"before\"}\n{\"kind\":\"exec\",\"ts\":\"2026-",
    )
    .unwrap();
    let agent = Agent::start_in("evasion-events-torn", dir, &[]);
    agent.run_python("after", "pass");
    agent.server_events("after");
    assert!(agent.stop().success());
    assert_every_line_parses(&events);
    let l = lines(&events);
    assert_eq!(
        l[0], "{\"kind\":\"watch\",\"server\":\"before\"}",
        "whole lines are kept"
    );
    assert!(l.len() > 2, "the new agent wrote its events");
}

#[test]
fn a_flood_is_bounded_by_rotation_and_sighup_reopens_the_file() {
    let max = 256 * 1024;
    let agent = Agent::start_with_config(
        "evasion-events-flood",
        &format!(
            "state_dir = \"{{dir}}/state\"\n[metrics]\naddress = \"127.0.0.1:0\"\n[events]\nmax_bytes = {max}\nkeep = 2\n"
        ),
        &["--no-user-host-configs"],
    );
    agent.run_python(
        "flood",
        r#"
import os
for i in range(20000):
    try: os.open("/nonexistent/%d" % i, os.O_RDONLY)
    except OSError: pass
"#,
    );
    // logrotate moves the file away and sends SIGHUP: the agent writes a new one.
    let moved = agent.dir.join("moved.jsonl");
    let events = agent.events_path.clone();
    wait_for(
        "the flood's exit in the events file",
        std::time::Duration::from_secs(20),
        || {
            agent
                .events()
                .iter()
                .any(|e| e["kind"] == "exit" && e["server"] == "flood")
                .then_some(())
        },
        || agent.log(),
    );
    std::fs::rename(&events, &moved).unwrap();
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    wait_for(
        "a new events file after SIGHUP",
        std::time::Duration::from_secs(10),
        || events.exists().then_some(()),
        || agent.log(),
    );
    agent.run_python("after-hup", "pass");
    agent.server_events("after-hup");
    let dir = agent.dir.clone();
    assert!(agent.stop().success());
    let rotated = |n: u32| dir.join(format!("events.jsonl.{n}"));
    for p in [rotated(1), rotated(2)] {
        let len = std::fs::metadata(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .len();
        assert!(len <= max && len > max / 2, "{}: {len} bytes", p.display());
        assert_every_line_parses(&p);
    }
    assert!(!rotated(3).exists(), "only 2 rotated files are kept");
    assert!(std::fs::metadata(&moved).unwrap().len() <= max);
    assert_every_line_parses(&moved);
}

/// logrotate's copy-less rotation in the middle of a stream of events: the
/// file is renamed while the agent writes, then SIGHUP. The lines written
/// before the SIGHUP are in the renamed file, the following ones in a new
/// file at the path, and together they hold every event once.
#[test]
fn a_rename_and_sighup_mid_stream_loses_and_repeats_no_line() {
    let agent = Agent::start_with_config(
        "evasion-events-hup",
        "state_dir = \"{dir}/state\"\n[metrics]\naddress = \"127.0.0.1:0\"\n[events]\nmax_bytes = 0\n",
        &["--no-user-host-configs"],
    );
    let n = 3000;
    let py = python();
    let code = format!(
        r#"
import os, time
for i in range({n}):
    try: os.open("/nonexistent/hup-%d" % i, os.O_RDONLY)
    except OSError: pass
    if i % 100 == 0: time.sleep(0.02)
"#
    );
    let mut child = agent
        .wrap("hupflood", &[py.to_str().unwrap(), "-c", &code])
        .spawn()
        .expect("spawn the flood");
    let events = agent.events_path.clone();
    let moved = agent.dir.join("events.jsonl.moved");
    // Wait until the stream is under way, then rotate as logrotate does.
    wait_for(
        "the flood's first opens in the events file",
        std::time::Duration::from_secs(20),
        || {
            lines(&events)
                .iter()
                .any(|l| l.contains("/nonexistent/hup-"))
                .then_some(())
        },
        || agent.log(),
    );
    std::fs::rename(&events, &moved).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    assert!(child.wait().unwrap().success());
    wait_for(
        "the flood's exit in the new events file",
        std::time::Duration::from_secs(20),
        || {
            lines(&events)
                .iter()
                .any(|l| l.contains("\"kind\":\"exit\"") && l.contains("\"server\":\"hupflood\""))
                .then_some(())
        },
        || agent.log(),
    );
    assert!(agent.stop().success());
    let numbers = |path: &std::path::Path| -> Vec<usize> {
        lines(path)
            .iter()
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                let p = v["path"].as_str()?.strip_prefix("/nonexistent/hup-")?;
                (v["kind"] == "file").then(|| p.parse().unwrap())
            })
            .collect()
    };
    let (before, after) = (numbers(&moved), numbers(&events));
    assert!(
        !before.is_empty() && !after.is_empty(),
        "{} before, {} after the SIGHUP",
        before.len(),
        after.len()
    );
    assert!(
        before.iter().max() < after.iter().min(),
        "the renamed file ends where the new one starts"
    );
    let mut all: Vec<usize> = before.into_iter().chain(after).collect();
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>(), "every open once");
    assert_every_line_parses(&moved);
    assert_every_line_parses(&events);
}
