//! Finding servers without the wrapper: the start-up scan of running
//! processes and discovery rules applied at exec.

use std::{process::Stdio, time::Duration};

use mcpwatch_tests::*;
use serde_json::Value;

#[test]
fn server_started_before_the_agent_is_found_by_the_startup_scan() {
    let dir = scratch_dir("scan-server");
    let server = dir.join("fake-mcp-server-scan-91c2.sh");
    script(&server, "/bin/sleep 60 &\nwait");
    let mut proc_ = std::process::Command::new(&server)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn server");
    let server_pid = proc_.id();
    // Let the script fork its sleep before the agent starts.
    let deadline = std::time::Instant::now() + PATIENCE;
    let sleep_pid = loop {
        let kids =
            std::fs::read_to_string(format!("/proc/{server_pid}/task/{server_pid}/children")).unwrap_or_default();
        if let Some(k) = kids.split_whitespace().next() {
            break k.parse::<u32>().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "server did not fork");
        std::thread::sleep(Duration::from_millis(20));
    };

    let agent = Agent::start("scan", &["--watch", "scanned=fake-mcp-server-scan-91c2"]);
    let ev = agent.wait_events("scan watch events", |ev| of_kind(ev, "watch").len() >= 2);
    let watch = of_kind(&ev, "watch");
    let pids: Vec<u32> = watch.iter().map(|e| pid(e)).collect();
    assert!(pids.contains(&server_pid) && pids.contains(&sleep_pid), "{}", dump(&ev));
    assert!(watch.iter().all(|e| e["reason"] == "scan" && e["server"] == "scanned"));
    let mut status = agent.status()["watched"].as_array().unwrap().clone();
    status.sort_by_key(|v| v.as_u64());
    let mut want = vec![Value::from(server_pid), Value::from(sleep_pid)];
    want.sort_by_key(|v| v.as_u64());
    assert_eq!(status, want);

    // What it does from now on is attributed: kill the sleep, the script exits.
    unsafe { libc::kill(sleep_pid as i32, libc::SIGTERM) };
    proc_.wait().unwrap();
    let ev = agent.wait_events("both exits", |ev| {
        [server_pid, sleep_pid]
            .iter()
            .all(|p| ev.iter().any(|e| e["kind"] == "exit" && e["pid"] == *p))
    });
    let sleep_exit = ev
        .iter()
        .find(|e| e["kind"] == "exit" && e["pid"] == sleep_pid)
        .unwrap();
    assert_eq!(sleep_exit["server"], "scanned");
    assert_eq!(sleep_exit["signal"], 15);
    assert!(agent.stop().success());
}

#[test]
fn discovery_rule_watches_a_server_at_exec() {
    let dir = scratch_dir("rule-server");
    let server = dir.join("fake-mcp-server-rule-5d1e.sh");
    // A child that runs and exits at once: forked before userspace can have
    // matched the script, it must still be attributed (pending in the kernel).
    script(&server, "/bin/true\n/bin/echo started");
    let agent = Agent::start("rule", &["--watch", "ruled=fake-mcp-server-rule-5d1e"]);
    let out = output(&mut std::process::Command::new(&server));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\n");
    let ev = agent.wait_events("echo exec", |ev| !exec_of(ev, "/echo").is_empty());
    let watch = of_kind(&ev, "watch");
    assert_eq!(watch[0]["reason"], "rule");
    let t = exec_of(&ev, "/true");
    assert_eq!(t.len(), 1, "the immediate child is attributed: {}", dump(&ev));
    assert_eq!(t[0]["server"], "ruled");
    let true_pid = pid(t[0]);
    let ev = agent.wait_events("true exit", |ev| {
        ev.iter().any(|e| e["kind"] == "exit" && e["pid"] == true_pid)
    });
    let root = pid(watch[0]);
    // The script's own exec: a script, so the interpreter is what runs.
    let script_exec = of_pid(&ev, root)
        .into_iter()
        .find(|e| e["kind"] == "exec")
        .expect("script exec");
    assert_eq!(script_exec["filename"], server.to_str().unwrap());
    assert_eq!(script_exec["interp"], "/bin/sh");
    let echo = exec_of(&ev, "/echo")[0];
    assert_eq!(echo["server"], "ruled");
    assert_eq!(echo["ppid"], root);
    assert!(agent.stop().success());
}

/// The agent stopped (SIGSTOP) for as long as a guard lives: userspace
/// decides nothing meanwhile, the kernel keeps queueing records.
struct Held(u32);

impl Held {
    fn new(agent: &Agent) -> Held {
        // SAFETY: a signal to the agent the test started.
        assert_eq!(unsafe { libc::kill(agent.pid() as i32, libc::SIGSTOP) }, 0);
        let held = Held(agent.pid());
        // Every thread stopped, not merely signalled.
        let stopped = |t: std::fs::DirEntry| {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T'))
        };
        wait_for(
            "the agent to stop",
            PATIENCE,
            || {
                let tasks = std::fs::read_dir(format!("/proc/{}/task", held.0)).ok()?;
                tasks.flatten().all(stopped).then_some(())
            },
            || "still running".into(),
        );
        held
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

#[test]
fn a_read_inside_the_pending_window_is_reported_once_a_rule_matches() {
    let dir = scratch_dir("pending-window-files");
    let secret = dir.join("secret.txt");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let server = dir.join("pending-window-server-7c3e.sh");
    script(&server, &format!("cat {}", secret.display()));
    let bystander = dir.join("pending-window-bystander.sh");
    script(&bystander, &format!("cat {}", secret.display()));
    let agent = Agent::start("pending-window", &["--watch", "window=pending-window-server-7c3e"]);
    let released_before = agent.status()["released_records"].as_u64().unwrap();
    // Both run to their end before userspace has matched either: every
    // syscall they make is in the pending window.
    let held = Held::new(&agent);
    let out = output(&mut std::process::Command::new(&server));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "s3cret\n");
    let out = output(&mut std::process::Command::new(&bystander));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "s3cret\n");
    drop(held);

    // Once more, decided at once this time: its read comes after every
    // record queued during the hold.
    output(&mut std::process::Command::new(&server));

    let is_secret = |e: &Value| e["kind"] == "file" && e["path"] == secret.to_str().unwrap();
    let ev = agent.wait_events("both runs' reads of the secret", |ev| {
        ev.iter().filter(|e| is_secret(e)).count() >= 2
    });
    let reads: Vec<&Value> = ev.iter().filter(|e| is_secret(e)).collect();
    assert_eq!(reads.len(), 2, "the bystander's read is not reported: {}", dump(&ev));
    for r in &reads {
        assert_eq!(r["server"], "window", "{r}");
        assert_eq!(r["op"], "open", "{r}");
    }
    // Judged like any read of the server's.
    assert!(
        alerts(&ev, Some("window"))
            .iter()
            .any(|a| a["rule"] == "file.read_undeclared" && a["summary"].as_str().unwrap().contains("secret.txt")),
        "{}",
        dump(&ev)
    );
    // The bystander's records were dropped unjudged, and counted.
    let released = agent.status()["released_records"].as_u64().unwrap();
    assert!(released > released_before, "released {released_before} -> {released}");
    assert!(agent.stop().success());
}

/// The filesystem server started through wrappers that carry its command
/// line (timeout, strace, a shell's `-c`, the SDK client, mcp-proxy, the MCP
/// Inspector CLI): the shipped manifest's `match.argv` finds the server each
/// of them starts, and never the wrapper.
#[test]
fn discovery_watches_the_server_never_the_wrapper_carrying_its_command_line() {
    use mcpwatch_tests::{mcp::client_of, policy::agent_with};
    let agent = agent_with("wrappers", &shipped_manifests(), &[]);
    let root = scratch_dir("wrappers-root");
    let r = root.to_string_lossy().into_owned();
    let fs = node_server("server-filesystem").to_string_lossy().into_owned();
    let server = ["node", fs.as_str(), r.as_str()];
    let plan = serde_json::json!([["list"]]);
    let shell_line = server.join(" ");
    let mut runs = 0;
    // The SDK client (itself a client whose argv names the server) in front of each.
    for pre in [&["timeout", "30"][..], &["strace", "-f", "-o", "/dev/null"], &[]] {
        let args: Vec<&str> = pre.iter().chain(&server).copied().collect();
        let steps = client_of(&agent, plan.clone(), &args);
        assert!(!steps[0]["tools"].as_array().unwrap().is_empty(), "{steps:?}");
        runs += 1;
    }
    let steps = client_of(&agent, plan.clone(), &["sh", "-c", &shell_line]);
    assert!(!steps[0]["tools"].as_array().unwrap().is_empty());
    runs += 1;
    // The MCP Inspector's CLI (npm) lists the tools and exits.
    let inspector = testenv().join("inspector/node_modules/.bin/mcp-inspector");
    let out = output(
        std::process::Command::new(&inspector)
            .arg("--cli")
            .args(server)
            .args(["--method", "tools/list"]),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("read_text_file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    runs += 1;
    // mcp-proxy (PyPI) starts the server behind an HTTP port at once.
    let port = free_port().to_string();
    let mut proxy = std::process::Command::new(testenv().join("venv-sdk1/bin/mcp-proxy"))
        .args(["--host", "127.0.0.1", "--port", &port])
        .args(server)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mcp-proxy");
    runs += 1;
    let roots = |ev: &[Value]| {
        ev.iter()
            .filter(|e| e["kind"] == "watch" && e["server"] == "filesystem" && e["reason"] == "rule")
            .cloned()
            .collect::<Vec<_>>()
    };
    let ev = agent.wait_events("a watched server per wrapper", |ev| roots(ev).len() >= runs);
    unsafe { libc::kill(proxy.id() as i32, libc::SIGTERM) };
    proxy.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let ev = [ev, agent.events()].concat();
    let watched = roots(&ev);
    for w in &watched {
        assert_eq!(
            w["exe"].as_str().map(|e| e.ends_with("/node")),
            Some(true),
            "{}",
            dump(&ev)
        );
        assert_eq!(w["argv"][1], fs.as_str(), "the watched root is the server: {w}");
    }
    let mut pids: Vec<u32> = watched.iter().map(pid).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), runs, "one server per wrapper: {}", dump(&watched));
    // Nothing else was ever judged as the server.
    let others: Vec<&Value> = ev
        .iter()
        .filter(|e| e["server"] == "filesystem" && e["exe"].as_str().is_some_and(|x| !x.ends_with("/node")))
        .collect();
    assert!(
        others.is_empty(),
        "wrappers watched as the server:\n{}",
        dump(&others.into_iter().cloned().collect::<Vec<_>>())
    );
    assert!(agent.stop().success());
}
