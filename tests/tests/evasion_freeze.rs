//! Issue 12, freezes: an unprivileged user must not be able to stop the
//! agent's loop. Files any user can plant (a FIFO where a host configuration
//! or a manifest is expected) are refused, and the agent keeps answering
//! `status` and obeys SIGINT; a user holding idle control connections does
//! not lock the wrapper out.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mcpwatch_tests::*;
use serde_json::Value;

fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0, "mkfifo {}", p.display());
}

/// Runs `mcpwatch status` and says whether it answered within `limit`.
fn status_within(agent: &Agent, limit: Duration) -> bool {
    let mut child = Command::new(bin())
        .arg("status")
        .arg("--socket")
        .arg(&agent.socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn status");
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("wait status") {
            return s.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// After the FIFO is planted: the reload sees it and refuses it, `status`
/// answers within a second all along, and SIGINT stops the agent.
fn assert_not_blocked(agent: Agent, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            status_within(&agent, Duration::from_secs(1)),
            "status did not answer within 1 s after a FIFO {what} was planted:\n{}",
            agent.log()
        );
        if agent.log().contains("not a regular file (a FIFO): refused") {
            break;
        }
        assert!(Instant::now() < deadline, "FIFO {what} never refused:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Keeps answering after the refusal, at the next reload checks too.
    for _ in 0..5 {
        assert!(
            status_within(&agent, Duration::from_secs(1)),
            "status stalled:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = agent.pid();
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !exited(pid) {
        assert!(Instant::now() < deadline, "agent ignored SIGINT:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The agent is our child: once it exits it stays a zombie until reaped.
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_or(true, |s| s.lines().any(|l| l.starts_with("State:") && l.contains('Z')))
}

#[test]
fn fifo_host_configuration_is_refused_and_the_loop_keeps_serving() {
    let ws = scratch_dir("freeze-fifo-host-ws");
    std::fs::create_dir_all(ws.join(".cursor")).unwrap();
    let w = ws.to_string_lossy().into_owned();
    let agent = Agent::start(
        "freeze-fifo-host",
        &["--no-user-host-configs", "--host-config", w.as_str()],
    );
    // Planted after start-up: the change is picked up by the reload check.
    mkfifo(&ws.join(".cursor/mcp.json"));
    assert_not_blocked(agent, "host configuration");
}

#[test]
fn fifo_manifest_is_refused_and_the_loop_keeps_serving() {
    let d = scratch_dir("freeze-fifo-manifest-dir");
    let m = d.to_string_lossy().into_owned();
    let agent = Agent::start(
        "freeze-fifo-manifest",
        &["--manifests", m.as_str(), "--no-user-host-configs"],
    );
    mkfifo(&d.join("evil.json"));
    assert_not_blocked(agent, "manifest");
}

#[test]
fn idle_control_connections_of_a_user_do_not_lock_out_the_wrapper() {
    // The agent starts with the usual soft limit of 1024 open files (cargo
    // raised this test's; the agent inherits it).
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = 1024.min(lim.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let agent = Agent::start("freeze-conns", &[]);
    // 1,100 connections held open, as user nobody (more than the agent's
    // default open-file limit of 1024).
    let hold = format!(
        r#"
import resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held = []
for _ in range(1100):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect("{}")
    except OSError:
        s.close()
        continue
    held.append(s)
print(len(held), flush=True)
time.sleep(30)
"#,
        agent.socket.display()
    );
    let mut holder = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(python())
        .args(["-c", &hold])
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert!(line.trim().parse::<u32>().is_ok(), "holder: {line}");
    // Root's wrapper still registers its server, which is then watched.
    let out = output(&mut agent.wrap("after-flood", &["/bin/true"]));
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(
        out.status.success(),
        "wrapper: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    let ev = agent.wait_events("the wrapped server", |ev| {
        ev.iter().any(|e| e["kind"] == "exec" && e["server"] == "after-flood")
    });
    assert!(ev.iter().any(|e| e["kind"] == "watch" && e["server"] == "after-flood"));
    assert!(agent.status()["events"].is_u64(), "status still answers");
    assert!(agent.stop().success());
}

/// A child killed when dropped: a failed assertion must not leave it running
/// (it would hold the integration tests' lock, inherited, forever).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Events of `server` written so far.
fn count_of(agent: &Agent, server: &str) -> usize {
    agent.events().iter().filter(|e| e["server"] == server).count()
}

#[test]
fn a_huge_manifest_is_refused_off_the_loop_while_status_and_events_keep_flowing() {
    let d = scratch_dir("freeze-huge-manifest-dir");
    let m = d.to_string_lossy().into_owned();
    let agent = Agent::start(
        "freeze-huge-manifest",
        &["--manifests", m.as_str(), "--no-user-host-configs"],
    );
    // A watched server busy all along: a fork, an exec, an open every 50 ms.
    let _busy = Killed(
        agent
            .wrap(
                "busy",
                &[
                    "/bin/sh",
                    "-c",
                    "while :; do cat /etc/hostname >/dev/null; sleep 0.05; done",
                ],
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the busy server"),
    );
    agent.wait_events("the busy server's events", |ev| {
        ev.iter().filter(|e| e["server"] == "busy").count() > 10
    });
    // 300,000 patterns in 3.5 MB (under the 4 MiB file cap), renamed into
    // place whole.
    let body: Vec<String> = (0..300_000).map(|i| format!("\"/pa{i:06}\"")).collect();
    let text = format!("{{\"read\": [{}]}}", body.join(","));
    assert!(text.len() > 3_400_000 && text.len() < 4 << 20, "{} bytes", text.len());
    std::fs::write(d.join("huge.tmp"), &text).unwrap();
    std::fs::rename(d.join("huge.tmp"), d.join("huge.json")).unwrap();
    let start = Instant::now();
    let (mut seen, mut last_new) = (count_of(&agent, "busy"), Instant::now());
    loop {
        assert!(
            status_within(&agent, Duration::from_secs(1)),
            "status did not answer within 1 s, {:?} after the manifest was dropped:\n{}",
            start.elapsed(),
            agent.log()
        );
        let n = count_of(&agent, "busy");
        if n > seen {
            (seen, last_new) = (n, Instant::now());
        }
        assert!(
            last_new.elapsed() < Duration::from_secs(2),
            "no event of the watched server for 2 s, {:?} after the manifest was dropped:\n{}",
            start.elapsed(),
            agent.log()
        );
        if agent.log().contains("too many patterns") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never refused:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = agent.log();
    assert!(
        log.contains("huge.json:1:2: read: too many patterns: 300000 (at most 4096 per manifest"),
        "the refusal names the file and the field:\n{log}"
    );
    // check-manifests says the same.
    let out = output(Command::new(bin()).arg("check-manifests").arg(d.join("huge.json")));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("huge.json:1:2: read: too many patterns: 300000"), "{err}");
    assert!(agent.stop().success());
}

/// What 300 forgotten servers may leave in the agent's RSS: allocator
/// fragmentation and state that expires by time (repeat windows); the agent
/// of the start code grew by about 75 MiB and never gave it back.
const RSS_MARGIN_KIB: u64 = 24 << 10;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn metrics_bytes(addr: &str) -> usize {
    http_get(addr, "/metrics").expect("scrape").1.len()
}

/// `mcpwatch exec --require-agent --server NAME -- CMD` as user nobody.
fn wrap_as_nobody(agent: &Agent, server: &str, cmd: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .args(["exec", "--require-agent", "--server", server, "--socket"])
        .arg(&agent.socket)
        .arg("--")
        .args(cmd)
        .env_remove("LD_LIBRARY_PATH");
    c
}

#[test]
fn names_a_user_registers_are_capped_and_forgotten_once_their_processes_exit() {
    let agent = Agent::start_with_config(
        "bounds-names",
        "[metrics]\naddress = \"127.0.0.1:0\"\n[servers]\nforget_after_s = 1\n",
        &["--no-user-host-configs"],
    );
    let addr = agent.metrics_address();
    // A first server, forgotten, so that what one leaves is in the baseline.
    assert!(
        output(&mut wrap_as_nobody(&agent, "warm-up", &["/bin/true"]))
            .status
            .success()
    );
    std::thread::sleep(Duration::from_secs(4));
    let (rss0, metrics0) = (rss_kib(agent.pid()), metrics_bytes(&addr));
    // 300 random names whose processes exit at once, in batches of 60 (under
    // the cap of 64 names a user holds until they are forgotten).
    let seed = std::process::id();
    let mut peak = 0;
    let (mut rss, mut metrics) = (rss0, metrics0);
    for batch in 0..5 {
        for i in batch * 60..(batch + 1) * 60 {
            let name = format!("rnd-{seed:x}-{i}-{:x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let out = output(&mut wrap_as_nobody(&agent, &name, &["/bin/true"]));
            assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        peak = peak.max(metrics_bytes(&addr));
        // Forgotten a second after their exit: metrics and memory back near the baseline.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            (rss, metrics) = (rss_kib(agent.pid()), metrics_bytes(&addr));
            if (metrics <= metrics0 + 2048 && rss <= rss0 + RSS_MARGIN_KIB) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let watched = agent.events().iter().filter(|e| e["kind"] == "watch").count();
    assert!(watched > 300, "every registration was watched: {watched}");
    assert!(
        peak > metrics0 + 20_000,
        "60 servers had series: {metrics0} -> {peak} bytes"
    );
    assert!(
        metrics <= metrics0 + 2048,
        "/metrics grew from {metrics0} to {metrics} bytes:\n{}",
        http_get(&addr, "/metrics").unwrap().1
    );
    assert!(rss <= rss0 + RSS_MARGIN_KIB, "RSS grew from {rss0} to {rss} KiB");
    // Every name forgotten (the warm-up's and the 300): none counts against the cap below.
    let deadline = Instant::now() + Duration::from_secs(15);
    while agent.log().matches("forgotten: no process left").count() < 301 {
        assert!(Instant::now() < deadline, "not every name forgotten:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(200));
    }

    // 64 live names of one user are admitted, the 65th refused with an alert.
    let live_watched = |n: usize| {
        agent.wait_events("live servers", |ev| {
            ev.iter()
                .filter(|e| e["kind"] == "watch" && e["server"].as_str().is_some_and(|s| s.starts_with("live-")))
                .count()
                >= n
        });
    };
    let mut live = Vec::new();
    for i in 0..64 {
        live.push(Killed(
            wrap_as_nobody(&agent, &format!("live-{i}"), &["/bin/sleep", "60"])
                .spawn()
                .expect("spawn"),
        ));
        // At most 16 connections at once: the control socket holds 32 per user.
        if i % 16 == 15 {
            live_watched(i + 1);
        }
    }
    for i in 0..3 {
        let out = output(&mut wrap_as_nobody(&agent, &format!("over-{i}"), &["/bin/true"]));
        assert_eq!(out.status.code(), Some(69), "refused, not started (--require-agent)");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("uid 65534 already has 64 server names registered (at most 64"),
            "{err}"
        );
    }
    // Root is not capped.
    assert!(output(&mut agent.wrap("root-server", &["/bin/true"])).status.success());
    let ev = agent.wait_events("the refusal alert", |ev| {
        ev.iter()
            .any(|e| e["kind"] == "alert" && e["rule"] == "agent.registration_refused")
    });
    let refusals: Vec<&Value> = ev
        .iter()
        .filter(|e| e["kind"] == "alert" && e["rule"] == "agent.registration_refused")
        .collect();
    assert_eq!(refusals.len(), 1, "folded: {}", dump(&ev));
    assert_eq!(refusals[0]["uid"], 65534, "{}", refusals[0]);
    drop(live);
    assert!(agent.stop().success());
}
