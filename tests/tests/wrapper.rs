//! `mcpwatch exec`, the wrapper: without an agent it refuses or warns, and a
//! watched process cannot re-register as another server.

use mcpwatch_tests::*;

#[test]
fn wrapper_refuses_without_an_agent_when_asked_and_warns_otherwise() {
    require_root();
    let dir = scratch_dir("no-agent");
    let socket = dir.join("nobody-listens.sock");
    let refused = output(
        std::process::Command::new(bin())
            .args(["exec", "--server", "x", "--require-agent", "--socket"])
            .arg(&socket)
            .args(["--", "/bin/echo", "should-not-run"]),
    );
    assert_eq!(refused.status.code(), Some(69));
    assert!(refused.stdout.is_empty(), "nothing on stdout: it is the MCP channel");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("no mcpwatch agent is listening") && err.contains("refusing"),
        "{err}"
    );

    let ran = output(
        std::process::Command::new(bin())
            .args(["exec", "--server", "x", "--socket"])
            .arg(&socket)
            .args(["--", "/bin/echo", "ran"]),
    );
    assert!(ran.status.success());
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "ran\n");
    assert!(String::from_utf8_lossy(&ran.stderr).contains("UNWATCHED"));
}

#[test]
fn a_watched_process_cannot_move_to_another_server() {
    let agent = Agent::start("launder", &[]);
    let bin = bin();
    let inner = format!(
        "{} exec --server other --require-agent --socket {} -- /bin/true",
        bin.display(),
        agent.socket.display()
    );
    let out = output(&mut agent.wrap("first", &["sh", "-c", &inner]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ev = agent.wait_events("true exec", |ev| !exec_of(ev, "/true").is_empty());
    assert_eq!(exec_of(&ev, "/true")[0]["server"], "first");
    assert!(ev.iter().all(|e| e["server"] != "other"), "{}", dump(&ev));
    assert!(agent.stop().success());
}

/// A real rsyslogd listening on a private Unix log socket (as `/dev/log`);
/// every message it receives is written, one per line, to the returned file.
fn rsyslog_on(dir: &std::path::Path, socket: &std::path::Path) -> (Daemon, std::path::PathBuf) {
    let out = dir.join("received.log");
    let conf = dir.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{dir}")
module(load="imuxsock" SysSock.Use="off")
template(name="line" type="string" string="%syslogfacility-text%.%syslogseverity-text% %syslogtag%%msg%\n")
ruleset(name="r") {{ action(type="omfile" file="{out}" template="line") }}
input(type="imuxsock" socket="{socket}" ruleset="r")
"#,
            dir = dir.display(),
            out = out.display(),
            socket = socket.display(),
        ),
    )
    .unwrap();
    let mut d = Daemon::spawn(
        "rsyslogd",
        std::process::Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid")),
        dir.join("rsyslogd.log"),
    );
    wait_for(
        "rsyslogd's socket",
        std::time::Duration::from_secs(10),
        || {
            d.assert_running();
            socket.exists().then_some(())
        },
        || std::fs::read_to_string(dir.join("rsyslogd.log")).unwrap_or_default(),
    );
    (d, out)
}

#[test]
fn a_server_started_unwatched_or_refused_is_reported_to_syslog_and_fail_closed_refuses() {
    require_root();
    let dir = scratch_dir("wrapper-syslog");
    let log_socket = dir.join("log.sock");
    let (_rsyslog, received) = rsyslog_on(&dir, &log_socket);
    let agent_socket = dir.join("nobody-listens.sock");
    let exec = |config: &std::path::Path| {
        output(
            std::process::Command::new(bin())
                .args(["exec", "--server", "fs", "--socket"])
                .arg(&agent_socket)
                .arg("--config")
                .arg(config)
                .args(["--", "/bin/echo", "ran"]),
        )
    };
    let open = dir.join("open.toml");
    std::fs::write(
        &open,
        format!("[wrapper]\nsyslog_socket = \"{}\"\n", log_socket.display()),
    )
    .unwrap();
    let ran = exec(&open);
    assert!(ran.status.success());
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "ran\n");
    let closed = dir.join("closed.toml");
    std::fs::write(
        &closed,
        format!(
            "[wrapper]\nfail_closed = true\nsyslog_socket = \"{}\"\n",
            log_socket.display()
        ),
    )
    .unwrap();
    let refused = exec(&closed);
    assert_eq!(refused.status.code(), Some(69));
    assert!(refused.stdout.is_empty(), "the server did not run");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("fail_closed"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let lines = wait_for(
        "both reports in syslog",
        std::time::Duration::from_secs(10),
        || {
            let t = std::fs::read_to_string(&received).unwrap_or_default();
            (t.lines().count() >= 2).then_some(t)
        },
        || std::fs::read_to_string(&received).unwrap_or_default(),
    );
    let mut it = lines.lines();
    let first = it.next().unwrap();
    assert!(
        first.starts_with("auth.warning mcpwatch-exec[") && first.contains("\"fs\" started UNWATCHED"),
        "{lines}"
    );
    let second = it.next().unwrap();
    assert!(
        second.starts_with("auth.err mcpwatch-exec[") && second.contains("refused to start (fail_closed)"),
        "{lines}"
    );
}

/// A shell with a background child execs `mcpwatch exec`: the child it had
/// before is not the server's; what the server starts afterwards is.
#[test]
fn the_wrapper_adopts_only_what_starts_after_it() {
    let agent = Agent::start("adopt", &[]);
    let line = format!(
        "/bin/sleep 30 >/dev/null 2>&1 & echo $!; exec {} exec --server adopt --require-agent --socket {} -- /bin/sh -c '/bin/true'",
        bin().display(),
        agent.socket.display()
    );
    let out = output(std::process::Command::new("/bin/sh").args(["-c", &line]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sleep_pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("sleep pid");
    let ev = agent.wait_events("true exec", |ev| !exec_of(ev, "/true").is_empty());
    assert_eq!(exec_of(&ev, "/true")[0]["server"], "adopt", "what it starts is watched");
    unsafe { libc::kill(sleep_pid as i32, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ev = agent.events();
    let adopted: Vec<serde_json::Value> = of_pid(&ev, sleep_pid).into_iter().cloned().collect();
    assert!(adopted.is_empty(), "the earlier child was adopted:\n{}", dump(&adopted));
    assert!(agent.stop().success());
}
