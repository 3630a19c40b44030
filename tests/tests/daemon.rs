//! The daemon's life and control socket: start-up leaves no memory peak
//! behind; a loading process that fails or dies is an error that says why and
//! leaves nothing pinned; shutdown detaches everything and removes its pins;
//! `test-alert` reaches the event stream and says what each sink did with it.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use mcpwatch_tests::*;

/// How far start-up may take the agent's memory above what it holds once
/// running (`VmHWM` over `VmRSS`). Parsing the kernel's BTF to load the
/// programs takes tens of MiB for a moment; in the agent, that moment was
/// its peak for its whole life (about 16 MiB above its running RSS).
const START_UP_PEAK_KIB: u64 = 8 << 10;

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn start_up_leaves_no_memory_peak_above_the_running_agent() {
    let agent = Agent::start("peak", &[]);
    let (hwm, rss) = (status_kib(agent.pid(), "VmHWM:"), status_kib(agent.pid(), "VmRSS:"));
    assert!(
        hwm <= rss + START_UP_PEAK_KIB,
        "start-up peaked at {hwm} KiB, {} KiB above the running agent's {rss} KiB",
        hwm.saturating_sub(rss)
    );
    assert!(agent.stop().success());
}

/// An agent of its own state and pins, not waited for.
fn agent_command(d: &Path, pin_dir: &Path) -> Command {
    let mut c = Command::new(bin());
    agent_args(&mut c, d, pin_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// The names left in `pin_dir` (none when it is gone).
fn pinned(pin_dir: &Path) -> Vec<String> {
    std::fs::read_dir(pin_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The agent's loading process (`mcpwatch load-kernel`), while it runs.
fn loading_process(agent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let ppid: u32 = status
            .lines()
            .find(|l| l.starts_with("PPid:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (ppid == agent && cmdline.split(|&b| b == 0).any(|a| a == b"load-kernel")).then_some(pid)
    })
}

#[test]
fn a_killed_loading_process_is_an_error_that_says_so_and_leaves_nothing_pinned() {
    require_root();
    let d = scratch_dir("loader-killed");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mcpwatch-it-killed-{}", std::process::id()));
    let mut agent = Reaped(agent_command(&d, &pin_dir).spawn().expect("start the agent"));
    let loader = wait_for(
        "the loading process",
        PATIENCE,
        || {
            std::thread::sleep(Duration::from_millis(1));
            loading_process(agent.0.id())
        },
        String::new,
    );
    // SAFETY: a signal to a process this test started (through the agent).
    unsafe { libc::kill(loader as i32, libc::SIGKILL) };
    let status = wait_for(
        "the agent's exit",
        PATIENCE,
        || agent.0.try_wait().unwrap(),
        String::new,
    );
    let mut err = String::new();
    agent.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("the loading process ended (signal: 9 (SIGKILL)) without an answer"),
        "the error says what happened: {err}"
    );
    assert_eq!(
        pinned(&pin_dir),
        Vec::<String>::new(),
        "nothing left pinned or attached"
    );
    let _ = std::fs::remove_dir(&pin_dir);
}

#[test]
fn what_the_loading_process_fails_on_reaches_the_agents_error() {
    require_root();
    let d = scratch_dir("loader-fails");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mcpwatch-it-fails-{}", std::process::id()));
    // A watched map of no entries: the kernel refuses to create it.
    let out = output(agent_command(&d, &pin_dir).args(["--watched-max", "0"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("in the loading process: loading the eBPF object") && err.contains("WATCHED"),
        "the loading process's own error, with the map it failed on: {err}"
    );
    assert_eq!(pinned(&pin_dir), Vec::<String>::new(), "nothing left pinned");
    let _ = std::fs::remove_dir(&pin_dir);
}

#[test]
fn shutdown_detaches_everything_and_removes_pins() {
    // Our map by its pin, not by counting: other agents may come and go.
    let pin_dir = std::path::PathBuf::from(format!("/sys/fs/bpf/mcpwatch-it-{}", std::process::id()));
    let agent = Agent::start("shutdown", &["--pin", pin_dir.to_str().unwrap()]);
    assert!(pin_dir.join("WATCHED").exists());
    let ours = {
        let map = aya::maps::MapData::from_pin(pin_dir.join("WATCHED")).expect("open the pinned map");
        map.info().expect("map info").id()
    };
    assert!(loaded_map_ids("WATCHED").contains(&ours));
    let socket = agent.socket.clone();
    assert!(agent.stop().success());
    assert!(!socket.exists(), "control socket removed");
    assert!(
        !pin_dir.join("WATCHED").exists(),
        "pins removed without --keep-sensors-on-exit"
    );
    let _ = std::fs::remove_dir(&pin_dir);
    let deadline = std::time::Instant::now() + PATIENCE;
    while loaded_map_ids("WATCHED").contains(&ours) {
        assert!(std::time::Instant::now() < deadline, "maps still loaded after exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn test_alert_reaches_the_event_stream() {
    let agent = Agent::start("testalert", &[]);
    let out = output(
        std::process::Command::new(bin())
            .arg("test-alert")
            .arg("--socket")
            .arg(&agent.socket),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let ev = agent.wait_events("test alert", |ev| ev.iter().any(|e| e["kind"] == "alert"));
    let a = ev.iter().find(|e| e["kind"] == "alert").unwrap();
    assert_eq!(a["id"], id.as_str());
    assert_eq!(a["rule"], "agent.test");
    assert_eq!(a["severity"], "info");
    assert_eq!(a["count"], 1);
    assert!(a["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(agent.stop().success());
}

#[test]
fn test_alert_says_per_sink_whether_it_was_delivered() {
    let dead = free_port();
    let agent = Agent::start_with_config(
        "testalert-sinks",
        &format!(
            "state_dir = \"{{dir}}/state\"\n[metrics]\naddress = \"127.0.0.1:0\"\n\
             [[sinks]]\nname = \"local\"\nfile = {{ path = \"{{dir}}/alerts.jsonl\" }}\n\
             [[sinks]]\nname = \"gone\"\nretry = {{ initial_backoff_ms = 50, max_backoff_ms = 400, timeout_ms = 2000 }}\n\
             webhook = {{ url = \"http://127.0.0.1:{dead}/hook\" }}\n"
        ),
        &["--no-user-host-configs"],
    );
    let t = std::time::Instant::now();
    let out = output(
        std::process::Command::new(bin())
            .arg("test-alert")
            .arg("--socket")
            .arg(&agent.socket),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "a sink failed: {stdout}");
    assert!(
        t.elapsed() < Duration::from_secs(9),
        "answered once both settled: {:?}",
        t.elapsed()
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let id = lines[0];
    assert_eq!(lines[1], "local: delivered");
    assert!(
        lines[2].starts_with("gone: failed: ") && lines[2].contains("127.0.0.1"),
        "the dead sink and why: {stdout}"
    );
    let kept = std::fs::read_to_string(agent.dir.join("alerts.jsonl")).unwrap();
    assert!(kept.contains(id), "delivered means in the file: {kept}");
    // The alert stays queued for the dead sink: delivered when it comes back.
    assert!(agent.stop().success());

    // With only the working sink, the exit status is 0.
    let agent = Agent::start_with_config(
        "testalert-ok",
        "state_dir = \"{dir}/state\"\n[metrics]\naddress = \"127.0.0.1:0\"\n\
         [[sinks]]\nname = \"local\"\nfile = { path = \"{dir}/alerts.jsonl\" }\n",
        &["--no-user-host-configs"],
    );
    let out = output(
        std::process::Command::new(bin())
            .arg("test-alert")
            .arg("--socket")
            .arg(&agent.socket),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("local: delivered\n"));
    assert!(agent.stop().success());
}
