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
