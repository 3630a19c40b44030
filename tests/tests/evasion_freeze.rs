//! Freezing the agent from outside: a FIFO where a host configuration or a
//! manifest is expected, and an unprivileged user holding idle control
//! connections. The agent keeps answering and the wrapper keeps registering.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mcpwatch_tests::*;

fn mkfifo(path: &std::path::Path) {
    let out = output(Command::new("mkfifo").arg(path));
    assert!(out.status.success(), "mkfifo {}", path.display());
}

#[test]
fn a_fifo_planted_as_host_config_or_manifest_does_not_freeze_the_agent() {
    let d = scratch_dir("freeze-fifo-files");
    let host = d.join("mcp.json");
    mkfifo(&host);
    let manifests = d.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    mkfifo(&manifests.join("planted.json"));
    let (h, m) = (
        host.to_string_lossy().into_owned(),
        manifests.to_string_lossy().into_owned(),
    );
    // Agent::start waits until the agent answers: a read blocked on a FIFO
    // never lets it.
    let agent = Agent::start(
        "freeze-fifo",
        &["--host-config", &h, "--manifests", &m, "--no-user-host-configs"],
    );
    let asked = Instant::now();
    let status = agent.status();
    assert!(status["events"].is_u64(), "{status}");
    assert!(asked.elapsed() < Duration::from_secs(5), "status answered at once");
    // The planted manifest is a clear, alerted load error, not a hang.
    let ev = agent.wait_events("the rejected manifest", |ev| {
        alerts(ev, None)
            .iter()
            .any(|a| a["rule"] == "policy.manifest_invalid" && a["summary"].as_str().unwrap_or("").contains("FIFO"))
    });
    assert!(!alerts(&ev, None).is_empty());
    assert!(agent.log().contains("not a regular file"), "{}", agent.log());
    assert!(agent.stop().success(), "SIGTERM still ends it");
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
