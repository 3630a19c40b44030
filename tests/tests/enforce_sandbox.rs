//! Enforcement by the wrapper's sandbox, on the real kernel: a server whose
//! manifest is in enforce mode runs under Landlock and a seccomp filter;
//! what they refuse fails in the server and is an `enforce.denied` alert.
//! The same servers in audit mode run untouched, their alerts marked
//! `would_block`. `enforce-check` says what this kernel enforces; a layer
//! simulated missing starts the server with `enforce.degraded`.

use std::{path::Path, process::Command};

use mcpwatch_tests::{policy::*, *};
use serde_json::{Value, json};

/// Compiles tests/c/`name`.c into `dir`.
fn cc(dir: &Path, name: &str) -> String {
    let src = repo().join("tests/c").join(format!("{name}.c"));
    let bin = dir.join(name);
    let out = output(Command::new("gcc").arg("-O1").arg("-o").arg(&bin).arg(&src));
    assert!(out.status.success(), "gcc: {}", String::from_utf8_lossy(&out.stderr));
    bin.to_string_lossy().into_owned()
}

/// A manifests directory holding `name`.json with `body`.
fn manifest(test: &str, name: &str, body: Value) -> std::path::PathBuf {
    let d = scratch_dir(&format!("{test}-manifests"));
    std::fs::write(d.join(format!("{name}.json")), body.to_string()).unwrap();
    d
}

/// Runs the sandbox probe program wrapped as `server` (`then`: `ia32` or
/// `exec`, tried last); returns its stdout, exit status and the server's
/// events once it exited.
fn probe(agent: &Agent, server: &str, bin: &str, then: Option<&str>) -> (String, std::process::ExitStatus, Vec<Value>) {
    let pid = agent.pid().to_string();
    let mut args = vec![bin, pid.as_str()];
    args.extend(then);
    let out = output(&mut agent.wrap(server, &args));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !stdout.is_empty(),
        "{server} printed nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = agent.wait_events(&format!("{server} to exit"), |ev| server_done(ev, server));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = ev;
    (stdout, out.status, agent.server_events(server))
}

#[test]
fn filesystem_server_enforced_reads_and_writes_its_root_and_is_refused_outside_even_when_roots_name_it() {
    let d = narrowed("enf-fs", "filesystem", |m| m["mode"] = json!("enforce"));
    let agent = agent_with("enf-fs", &d, &[]);
    let root = scratch_dir("enf-fs-root");
    let outside = scratch_dir("enf-fs-outside");
    std::fs::write(root.join("notes.txt"), "hello\n").unwrap();
    std::fs::write(outside.join("secret.txt"), "ghp_secret\n").unwrap();
    let (r, o) = (root.to_str().unwrap(), outside.to_str().unwrap());
    let node = node_server("server-filesystem");
    let mut s = McpSession::new(&["node", node.to_str().unwrap(), r])
        .call("read_text_file", json!({"path": format!("{r}/notes.txt")}))
        .call(
            "write_file",
            json!({"path": format!("{r}/out.txt"), "content": "written"}),
        )
        .call("read_text_file", json!({"path": format!("{o}/secret.txt")}));
    // The client names the outside directory as a root: the server trusts
    // roots over its command line, the sandbox does not.
    s.roots = vec![root.clone(), outside.clone()];
    s.allow_errors = true;
    let (report, ev) = session(&agent, "filesystem", s);
    let calls = report["calls"].as_array().unwrap();
    assert_eq!(calls[0]["text"], "hello\n", "{report}");
    assert_eq!(calls[1]["is_error"], false, "{report}");
    assert_eq!(std::fs::read_to_string(root.join("out.txt")).unwrap(), "written");
    assert_eq!(calls[2]["is_error"], true, "{report}");
    assert!(
        calls[2]["text"].as_str().unwrap().contains("EACCES"),
        "the kernel refused the read: {report}"
    );
    let denied = by_rule(&ev, "filesystem", "enforce.denied");
    let secret = format!("{o}/secret.txt");
    let d = denied
        .iter()
        .find(|a| a["evidence"]["target"] == secret.as_str())
        .unwrap_or_else(|| panic!("no enforce.denied for {secret}:\n{}", dump(&ev)));
    assert_eq!(d["layer"], "landlock");
    assert_eq!(d["tool"], "read_text_file");
    assert!(d["call_id"].is_string(), "{d}");
    assert!(
        by_rule(&ev, "filesystem", "file.read_undeclared")
            .iter()
            .all(|a| a["evidence"]["path"] != secret.as_str()),
        "the refused read is the denial, not a read:\n{}",
        dump(&ev)
    );
    let m = http_get(&agent.metrics_address(), "/metrics").unwrap().1;
    assert!(
        m.lines()
            .any(|l| l.starts_with("mcpwatch_enforce_total{") && l.contains("landlock") && l.contains("denied")),
        "{m}"
    );
    assert!(agent.stop().success());
}

#[test]
fn seccomp_refuses_ptrace_io_uring_and_signals_to_the_agent_and_kills_ia32_calls() {
    let d = manifest("enf-sec", "sbx", json!({"name": "sbx", "mode": "enforce"}));
    let agent = agent_with("enf-sec", &d, &[]);
    let bin = cc(&scratch_dir("enf-sec-prog"), "sandboxed");
    let (stdout, status, ev) = probe(&agent, "sbx", &bin, Some("ia32"));
    assert!(
        stdout.starts_with("ptrace=-1 io_uring=-1 kill=-1 sigqueue=-1 killall=-1\n"),
        "EPERM for each: {stdout}"
    );
    assert!(!stdout.contains("ia32="), "the int 0x80 call returned: {stdout}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGSYS), "killed by the filter: {status}");
    let denied = by_rule(&ev, "sbx", "enforce.denied");
    let ops: Vec<&str> = denied.iter().filter_map(|a| a["evidence"]["op"].as_str()).collect();
    assert!(
        ops.contains(&"ptrace") && ops.contains(&"io_uring_setup"),
        "{ops:?}\n{}",
        dump(&ev)
    );
    assert!(denied.iter().all(|a| a["layer"] == "seccomp"), "{}", dump(&ev));
    assert!(agent.stop().success());
}

#[test]
fn landlock_refuses_the_exec_of_an_undeclared_program_and_the_refusal_is_an_alert() {
    let d = manifest("enf-exec", "sbx", json!({"name": "sbx", "mode": "enforce"}));
    let agent = agent_with("enf-exec", &d, &[]);
    let bin = cc(&scratch_dir("enf-exec-prog"), "sandboxed");
    let (stdout, status, ev) = probe(&agent, "sbx", &bin, Some("exec"));
    assert!(stdout.contains("\nexec=-13\n"), "EACCES from Landlock: {stdout}");
    assert!(status.success(), "{status}");
    let denied: Vec<&Value> = by_rule(&ev, "sbx", "enforce.denied")
        .into_iter()
        .filter(|a| a["evidence"]["op"] == "exec")
        .collect();
    assert_eq!(denied.len(), 1, "{}", dump(&ev));
    assert_eq!(denied[0]["layer"], "landlock", "{}", denied[0]);
    assert_eq!(denied[0]["evidence"]["target"], "/usr/bin/id", "{}", denied[0]);
    assert!(exec_of(&ev, "/id").is_empty(), "never a process: {}", dump(&ev));
    assert!(agent.stop().success());
}

#[test]
fn audit_mode_leaves_the_same_servers_untouched_and_marks_what_enforcement_would_block() {
    let d = manifest("enf-audit", "sbx", json!({"name": "sbx", "mode": "audit"}));
    std::fs::copy(shipped_manifests().join("filesystem.json"), d.join("filesystem.json")).unwrap();
    let agent = agent_with("enf-audit", &d, &[]);
    let bin = cc(&scratch_dir("enf-audit-prog"), "sandboxed");
    let (stdout, status, ev) = probe(&agent, "sbx", &bin, Some("ia32"));
    assert!(stdout.starts_with("ptrace=-3 io_uring="), "{stdout}");
    assert!(stdout.contains(" kill=0 sigqueue=0 killall=0\nia32="), "{stdout}");
    assert!(status.success(), "{status}");
    let ring = by_rule(&ev, "sbx", "evasion.io_uring");
    assert!(!ring.is_empty(), "{}", dump(&ev));
    assert_eq!(
        (ring[0]["would_block"].as_bool(), ring[0]["layer"].as_str()),
        (Some(true), Some("seccomp"))
    );
    let ptrace = by_rule(&ev, "sbx", "proc.ptrace");
    assert_eq!(ptrace[0]["would_block"], true, "{}", dump(&ev));
    assert!(by_rule(&ev, "sbx", "enforce.denied").is_empty());

    // The filesystem server reads outside its root when the client's roots
    // name it: in audit mode it succeeds, and the alert says Landlock would
    // have refused it.
    let root = scratch_dir("enf-audit-root");
    let outside = scratch_dir("enf-audit-outside");
    std::fs::write(outside.join("secret.txt"), "ghp_secret\n").unwrap();
    let node = node_server("server-filesystem");
    let o = outside.to_str().unwrap();
    let mut s = McpSession::new(&["node", node.to_str().unwrap(), root.to_str().unwrap()])
        .call("read_text_file", json!({"path": format!("{o}/secret.txt")}));
    s.roots = vec![root.clone(), outside.clone()];
    let (report, ev) = session(&agent, "filesystem", s);
    assert_eq!(report["calls"][0]["text"], "ghp_secret\n", "{report}");
    let read = by_rule(&ev, "filesystem", "file.read_undeclared");
    let a = read
        .iter()
        .find(|a| a["evidence"]["path"] == format!("{o}/secret.txt").as_str())
        .unwrap_or_else(|| panic!("{}", dump(&ev)));
    assert_eq!(
        (a["would_block"].as_bool(), a["layer"].as_str()),
        (Some(true), Some("landlock"))
    );
    let m = http_get(&agent.metrics_address(), "/metrics").unwrap().1;
    assert!(
        m.lines()
            .any(|l| l.starts_with("mcpwatch_enforce_total{") && l.contains("would_block")),
        "{m}"
    );
    assert!(agent.stop().success());
}

#[test]
fn enforce_check_reports_each_layer_and_a_simulated_missing_one_degrades_the_server() {
    let out = output(Command::new(bin()).args(["enforce-check", "--json", "--config", "/nonexistent/mcpwatch.toml"]));
    // An explicit missing file is an error; the default path may be absent.
    assert!(!out.status.success());
    let dir = scratch_dir("enf-check-cfg");
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, "[enforce]\nsimulate_missing = [\"landlock\"]\n").unwrap();
    let out = output(
        Command::new(bin())
            .args(["enforce-check", "--json"])
            .arg("--config")
            .arg(&cfg),
    );
    let layers: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |n: &str| layers.iter().find(|l| l["layer"] == n).unwrap().clone();
    assert_eq!(of("landlock")["enforced"], false);
    assert!(of("landlock")["detail"].as_str().unwrap().contains("simulated"));
    assert_eq!(of("seccomp")["enforced"], true);
    assert_eq!(of("cgroup")["enforced"], true, "a trial attach works here");
    // The kill layer is tried for real: bpf_send_signal killed a test process.
    assert_eq!(of("kill")["enforced"], true, "{:?}", of("kill"));
    assert!(of("kill")["detail"].as_str().unwrap().contains("killed a test process"));
    assert_eq!(out.status.code(), Some(1), "a sandbox layer is missing");
    let plain = output(
        Command::new(bin())
            .arg("enforce-check")
            .arg("--config")
            .arg(dir.join("none.toml")),
    );
    assert!(!plain.status.success());

    let d = manifest("enf-degraded", "sbx", json!({"name": "sbx", "mode": "enforce"}));
    let m = d.to_string_lossy().into_owned();
    let agent = Agent::start_with_config(
        "enf-degraded",
        "[enforce]\nsimulate_missing = [\"landlock\"]\n[metrics]\naddress = \"127.0.0.1:0\"\n",
        &["--manifests", &m, "--no-user-host-configs"],
    );
    assert!(
        agent.log().contains("enforcement layer landlock: NOT enforced"),
        "{}",
        agent.log()
    );
    let bin = cc(&scratch_dir("enf-degraded-prog"), "sandboxed");
    let (stdout, _, ev) = probe(&agent, "sbx", &bin, None);
    assert!(stdout.starts_with("ptrace=-1 "), "seccomp still applies: {stdout}");
    let deg = by_rule(&ev, "sbx", "enforce.degraded");
    assert_eq!(deg.len(), 1, "{}", dump(&ev));
    assert_eq!(deg[0]["evidence"]["missing"], json!(["landlock"]));
    let metrics = http_get(&agent.metrics_address(), "/metrics").unwrap().1;
    assert!(
        metrics.contains("mcpwatch_enforce_layer_enforced{layer=\"landlock\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcpwatch_enforce_layer_enforced{layer=\"seccomp\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcpwatch_enforce_layer_enforced{layer=\"kill\"} 1"),
        "{metrics}"
    );
    assert!(agent.stop().success());

    // Refused when the configuration says so.
    let agent = Agent::start_with_config(
        "enf-refused",
        "[enforce]\nsimulate_missing = [\"landlock\"]\nrefuse_degraded = true\n",
        &["--manifests", &m, "--no-user-host-configs"],
    );
    let out = output(&mut agent.wrap("sbx", &[&bin, "1"]));
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "the server did not run");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refuse_degraded"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(agent.stop().success());
}
