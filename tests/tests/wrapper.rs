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
