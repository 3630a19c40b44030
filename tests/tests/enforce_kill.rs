//! The kill layer on the real kernel: a server the agent did not launch
//! (found by a manifest's `match` rule, no wrapper, so no sandbox) whose
//! manifest is in enforce mode is killed by `bpf_send_signal(SIGKILL)` in
//! the program that saw the violation: its reverse shell dies before its
//! first instruction, its credential read before the open returns. The same
//! servers in audit mode run untouched, their alerts marked `would_block`
//! with `layer: "kill"`; a process no manifest matches is never killed.

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use mcpwatch_tests::{policy::*, *};
use serde_json::{Value, json};

/// A manifests directory: per (name, mode, script file name), a manifest
/// that finds the server by its script on the command line.
fn manifests(test: &str, servers: &[(&str, &str, &str)]) -> PathBuf {
    let d = scratch_dir(&format!("{test}-manifests"));
    for (name, mode, script) in servers {
        let m = json!({
            "name": name,
            "mode": mode,
            "match": {"argv": [regex_escape(script)]},
            // The reverse shell's connect back is declared: what is killed
            // here is the shell's exec (a connect outside the allowlist
            // would kill the server first: enforce_kill_identity.rs).
            "network": {"outbound": {"allow_host": ["127.0.0.1"]}},
        });
        std::fs::write(d.join(format!("{name}.json")), m.to_string()).unwrap();
    }
    d
}

fn regex_escape(s: &str) -> String {
    s.replace('.', "\\.")
}

/// The malicious test server, copied under `name` (what the rules match).
fn evil_copy(dir: &Path, name: &str) -> String {
    let to = dir.join(name);
    std::fs::copy(repo().join("tests/mcp/servers/evil.py"), &to).unwrap();
    to.to_string_lossy().into_owned()
}

/// A loopback listener that a reverse shell connects back to: it sends a
/// command and returns whatever arrives within 3 s of it.
fn listener() -> (u16, std::thread::JoinHandle<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = s.write_all(b"echo pwned-$((6*7))\nexit\n");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        String::from_utf8_lossy(&got).into_owned()
    });
    (port, h)
}

/// A home whose `.ssh/id_rsa` is a fake key.
fn fake_home(test: &str) -> PathBuf {
    let home = scratch_dir(&format!("{test}-home")).canonicalize().unwrap();
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_rsa"), "FAKE-PRIVATE-KEY-MATERIAL\n").unwrap();
    home
}

/// A server reading its user's SSH key once told to (a line on stdin),
/// so the test can wait until the agent has found it.
fn cred_reader(dir: &Path, name: &str) -> String {
    let p = dir.join(name);
    std::fs::write(
        &p,
        "import os, sys\nsys.stdin.readline()\n\
         with open(os.path.join(os.environ['HOME'], '.ssh', 'id_rsa')) as f:\n    data = f.read()\n\
         print('READ:' + data.strip(), flush=True)\n",
    )
    .unwrap();
    p.to_string_lossy().into_owned()
}

/// Runs the credential reader `script` with HOME=`home`; once `server` is
/// watched (unless None: no rule matches it) tells it to read. Returns its
/// stdout and exit status.
fn read_key(agent: &Agent, script: &str, home: &Path, server: Option<&str>) -> (String, std::process::ExitStatus) {
    let mut child = Command::new(py())
        .arg(script)
        .env("HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(server) = server {
        agent.wait_events(&format!("{server} watched"), |ev| {
            ev.iter().any(|e| e["kind"] == "watch" && e["server"] == server)
        });
    }
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status)
}

/// `a` is the kill layer's denial of a reverse shell's exec during `tool`
/// (not a would-block), and the shell died of SIGKILL.
fn assert_shell_killed(agent: &Agent, a: &Value, tool: &str) {
    assert_eq!(
        (a["layer"].as_str(), a["evidence"]["op"].as_str()),
        (Some("kill"), Some("exec")),
        "{a}"
    );
    assert!(a["evidence"]["rules"].to_string().contains("exec.reverse_shell"), "{a}");
    let summary = a["summary"].as_str().unwrap();
    assert!(
        summary.contains("killed pid") && summary.contains(&format!("during {tool}")),
        "{a}"
    );
    assert!(a.get("would_block").is_none_or(|w| w == false), "{a}");
    let shell_pid = a["pid"].as_u64().unwrap();
    let ev = agent.wait_events("the shell's exit", |ev| {
        ev.iter().any(|e| e["kind"] == "exit" && e["pid"] == shell_pid)
    });
    let exit = ev
        .iter()
        .find(|e| e["kind"] == "exit" && e["pid"] == shell_pid)
        .unwrap();
    assert_eq!(exit["signal"], 9, "{exit}");
}

#[test]
fn a_discovered_enforced_server_is_killed_before_its_reverse_shell_runs_and_before_its_key_read_returns() {
    let dir = scratch_dir("kill-enf-scripts");
    let evil = evil_copy(&dir, "evil_enf.py");
    let reader = cred_reader(&dir, "cred_enf.py");
    let free = cred_reader(&dir, "cred_free.py");
    let home = fake_home("kill-enf");
    let d = manifests(
        "kill-enf",
        &[("evilk", "enforce", "evil_enf.py"), ("credk", "enforce", "cred_enf.py")],
    );
    let agent = agent_with("kill-enf", &d, &[]);
    assert!(
        agent.log().contains("enforcement layer kill: enforced"),
        "{}",
        agent.log()
    );

    // The reverse shell: /bin/sh exec'd with a TCP socket as stdio dies at
    // its exec; the listener receives nothing (not even a prompt).
    let (port, heard) = listener();
    let report = McpSession::new(&[&py(), &evil])
        .call("reverse_shell", json!({"port": port}))
        .run();
    assert_eq!(report["calls"][0]["text"], "shell closed", "{report}");
    assert_eq!(heard.join().unwrap(), "", "the shell ran");
    let ev = agent.wait_events("the shell's kill", |ev| {
        !by_rule(ev, "evilk", "enforce.denied").is_empty()
    });
    assert_shell_killed(&agent, by_rule(&ev, "evilk", "enforce.denied")[0], "reverse_shell");

    // The credential read: killed at the open's exit, before read().
    let (out, status) = read_key(&agent, &reader, &home, Some("credk"));
    assert_eq!(out, "", "the key was printed");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    let ev = agent.wait_events("the reader's kill", |ev| {
        !by_rule(ev, "credk", "enforce.denied").is_empty()
    });
    let a = by_rule(&ev, "credk", "enforce.denied")[0];
    let key = home.join(".ssh/id_rsa").to_string_lossy().into_owned();
    assert_eq!(
        (
            a["layer"].as_str(),
            a["evidence"]["op"].as_str(),
            a["evidence"]["target"].as_str()
        ),
        (Some("kill"), Some("open (read)"), Some(key.as_str())),
        "{a}"
    );

    // No manifest matches this one: never killed.
    let (out, status) = read_key(&agent, &free, &home, None);
    assert_eq!(out, "READ:FAKE-PRIVATE-KEY-MATERIAL\n");
    assert!(status.success(), "{status}");

    let m = http_get(&agent.metrics_address(), "/metrics").unwrap().1;
    assert!(m.contains("mcpwatch_enforce_layer_enforced{layer=\"kill\"} 1"), "{m}");
    assert!(
        m.lines().any(|l| l.starts_with("mcpwatch_enforce_total{")
            && l.contains("layer=\"kill\"")
            && l.contains("outcome=\"denied\"")
            && l.contains("server=\"credk\"")),
        "{m}"
    );
    assert!(agent.stop().success());
}

#[test]
fn the_same_servers_in_audit_mode_run_untouched_and_their_alerts_say_the_kill_layer_would_block() {
    let dir = scratch_dir("kill-audit-scripts");
    let evil = evil_copy(&dir, "evil_audit.py");
    let reader = cred_reader(&dir, "cred_audit.py");
    let home = fake_home("kill-audit");
    let d = manifests(
        "kill-audit",
        &[("evila", "audit", "evil_audit.py"), ("creda", "audit", "cred_audit.py")],
    );
    let agent = agent_with("kill-audit", &d, &[]);

    let (port, heard) = listener();
    let report = McpSession::new(&[&py(), &evil])
        .call("reverse_shell", json!({"port": port}))
        .run();
    assert_eq!(report["calls"][0]["text"], "shell closed", "{report}");
    assert!(heard.join().unwrap().contains("pwned-42"), "the shell did not run");

    let (out, status) = read_key(&agent, &reader, &home, Some("creda"));
    assert_eq!(out, "READ:FAKE-PRIVATE-KEY-MATERIAL\n");
    assert!(status.success(), "{status}");

    let ev = agent.wait_events("both alerts", |ev| {
        !by_rule(ev, "evila", "exec.reverse_shell").is_empty() && !alerts(ev, Some("creda")).is_empty()
    });
    let shell = by_rule(&ev, "evila", "exec.reverse_shell")[0];
    assert_eq!(
        (shell["would_block"].as_bool(), shell["layer"].as_str()),
        (Some(true), Some("kill")),
        "{shell}"
    );
    let cred = alerts(&ev, Some("creda"))
        .into_iter()
        .find(|a| a["rule"].as_str().unwrap().starts_with("cred."))
        .unwrap_or_else(|| panic!("{}", dump(&ev)));
    assert_eq!(
        (cred["would_block"].as_bool(), cred["layer"].as_str()),
        (Some(true), Some("kill")),
        "{cred}"
    );
    assert!(by_rule(&ev, "evila", "enforce.denied").is_empty());
    assert!(by_rule(&ev, "creda", "enforce.denied").is_empty());
    assert!(agent.stop().success());
}

/// Waits up to the tests' patience for `done`; whether it came (no panic:
/// the caller still has a shell to end).
fn came(agent: &Agent, done: impl Fn(&[Value]) -> bool) -> bool {
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::time::Instant::now() < deadline {
        if done(&agent.events()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// An agent watching the pty shell server as `name` in `mode`. The server
/// may run a shell: what makes this one a reverse shell is its pty's master
/// held by a process with a socket, not an undeclared exec.
fn pty_agent(test: &str, name: &str, mode: &str) -> (Agent, String) {
    let dir = scratch_dir(&format!("{test}-scripts"));
    let script = format!("{name}.py");
    let evil = evil_copy(&dir, &script);
    let d = scratch_dir(&format!("{test}-manifests"));
    let m = json!({
        "name": name,
        "mode": mode,
        "match": {"argv": [regex_escape(&script)]},
        "exec": ["sh"],
        "network": {"outbound": {"allow_host": ["127.0.0.1"]}},
    });
    std::fs::write(d.join(format!("{name}.json")), m.to_string()).unwrap();
    (agent_with(test, &d, &[]), evil)
}

/// Runs the server's `pty_reverse_shell` against a loopback listener. The
/// shell's pty is only known as the network's once it runs: the command is
/// sent once the agent reported `rule` for `server` (or gave up waiting), so
/// that only a shell still alive then answers. Returns whether the rule came,
/// what the listener heard, and the session's report.
fn pty_session(agent: &Agent, evil: &str, server: &str, rule: &str) -> (bool, String, Value) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::scope(|sc| {
        let h = sc.spawn(move || {
            let (mut s, _) = l.accept().expect("the pty shell connects back");
            let came = came(agent, |ev| !by_rule(ev, server, rule).is_empty());
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let _ = s.write_all(b"echo pwned-$((6*7))\nexit\n");
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            (came, String::from_utf8_lossy(&got).into_owned())
        });
        let report = McpSession::new(&[&py(), evil])
            .call("pty_reverse_shell", json!({"port": port}))
            .run();
        let (came, heard) = h.join().unwrap();
        (came, heard, report)
    })
}

#[test]
fn a_pty_reverse_shell_in_audit_mode_runs_and_its_alert_says_the_kill_layer_would_block() {
    let (agent, evil) = pty_agent("kill-pty-audit", "evilpa", "audit");
    let (alerted, heard, report) = pty_session(&agent, &evil, "evilpa", "exec.reverse_shell");
    assert_eq!(report["calls"][0]["text"], "pty shell closed", "{report}");
    assert!(alerted, "no exec.reverse_shell: {}", dump(&agent.events()));
    assert!(heard.contains("pwned-42"), "audit mode kills nothing: {heard:?}");
    let ev = agent.events();
    let shell = by_rule(&ev, "evilpa", "exec.reverse_shell")[0];
    assert_eq!(
        (shell["would_block"].as_bool(), shell["layer"].as_str()),
        (Some(true), Some("kill")),
        "{shell}"
    );
    assert!(by_rule(&ev, "evilpa", "enforce.denied").is_empty());
    assert!(agent.stop().success());
}

#[test]
fn an_enforced_servers_pty_reverse_shell_is_killed_by_the_agent_at_its_exec() {
    let (agent, evil) = pty_agent("kill-pty", "evilp", "enforce");
    let (killed, heard, report) = pty_session(&agent, &evil, "evilp", "enforce.denied");
    assert_eq!(report["calls"][0]["text"], "pty shell closed", "{report}");
    assert!(killed, "no enforce.denied for the pty shell: {}", dump(&agent.events()));
    assert!(!heard.contains("pwned-42"), "the shell ran: {heard:?}");
    let ev = agent.events();
    assert_shell_killed(&agent, by_rule(&ev, "evilp", "enforce.denied")[0], "pty_reverse_shell");
    assert!(agent.stop().success());
}
