//! Malicious servers written for these tests, judged by the real agent: each attack raises its rule.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
};

use mcpwatch_tests::{policy::*, *};
use serde_json::{Value, json};

#[test]
fn a_tool_running_sh_c_raises_exec_shell() {
    let (agent, _) = evil_agent("pol-shell");
    let (_, ev) = session(
        &agent,
        "evil",
        evil(&[("hello", json!({"name": "x"})), ("run_shell", json!({"command": "id"}))]),
    );
    let a = alerts(&ev, Some("evil"));
    // The shell, then what it ran.
    assert_eq!(rules_of(&a), ["exec.shell", "exec.undeclared"], "{}", dump(&ev));
    assert_eq!(a[1]["evidence"]["program"], "/usr/bin/id");
    assert_eq!(a[0]["severity"], "high");
    assert_eq!(a[0]["mitre"]["id"], "T1059.004");
    assert_eq!(a[0]["evidence"]["argv"], json!(["sh", "-c", "id"]));
    assert!(
        a[0]["ancestry"][0]["exe"].as_str().unwrap_or("").contains("python"),
        "{}",
        a[0]
    );
    assert!(agent.stop().success());
}

#[test]
fn a_reverse_shell_to_a_loopback_listener_raises_exec_reverse_shell() {
    let (agent, _) = evil_agent("pol-revshell");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let events_agent = &agent;
    let attacker = std::thread::scope(|sc| {
        let h = sc.spawn(move || {
            let (mut s, _) = l.accept().expect("the shell connects back");
            // Keep the shell alive until the agent has judged its exec.
            events_agent.wait_events("reverse shell alert", |ev| {
                alerts(ev, Some("evil"))
                    .iter()
                    .any(|a| a["rule"] == "exec.reverse_shell")
            });
            s.write_all(b"echo pwned; exit\n").unwrap();
            let mut out = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut out);
            out
        });
        let (report, ev) = session(&agent, "evil", evil(&[("reverse_shell", json!({"port": port}))]));
        (h.join().unwrap(), report, ev)
    });
    let (out, report, ev) = attacker;
    assert!(
        out.contains("pwned"),
        "the shell really served the listener: {out:?} {report}"
    );
    let a = alerts(&ev, Some("evil"));
    let expected: &[&str] = if reports_file_and_network(&ev) {
        &["net.connect_undeclared", "exec.reverse_shell"]
    } else {
        &["exec.reverse_shell"]
    };
    assert_eq!(rules_of(&a), expected, "{}", dump(&ev));
    let shell = a.last().unwrap();
    assert_eq!(shell["severity"], "critical");
    assert_eq!(shell["evidence"]["stdio"], json!(["socket", "socket", "socket"]));
    assert!(agent.stop().success());
}

#[test]
fn a_pty_spawn_reverse_shell_to_a_loopback_listener_raises_exec_reverse_shell() {
    let (agent, _) = evil_agent("pol-ptyshell");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let events_agent = &agent;
    let (out, report, ev) = std::thread::scope(|sc| {
        let h = sc.spawn(move || {
            let (mut s, _) = l.accept().expect("the shell connects back");
            events_agent.wait_events("pty reverse shell alert", |ev| {
                alerts(ev, Some("evil"))
                    .iter()
                    .any(|a| a["rule"] == "exec.reverse_shell")
            });
            s.write_all(b"echo pw''ned; exit\n").unwrap();
            let mut out = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut out);
            out
        });
        let (report, ev) = session(&agent, "evil", evil(&[("pty_reverse_shell", json!({"port": port}))]));
        (h.join().unwrap(), report, ev)
    });
    assert!(
        out.contains("pwned"),
        "the pty shell served the listener: {out:?} {report}"
    );
    let a = alerts(&ev, Some("evil"));
    let shell = a
        .iter()
        .find(|a| a["rule"] == "exec.reverse_shell")
        .unwrap_or_else(|| panic!("no exec.reverse_shell: {}", dump(&ev)));
    assert!(
        !a.iter().any(|a| a["rule"] == "exec.shell"),
        "the shell is the reverse shell, not a plain one: {}",
        dump(&ev)
    );
    assert_eq!(shell["severity"], "critical");
    assert_eq!(shell["tool"], "pty_reverse_shell");
    assert!(
        shell["evidence"]["stdio"][0]
            .as_str()
            .is_some_and(|s| s.starts_with("pty driven by pid")),
        "{}",
        shell["evidence"]
    );
    assert!(agent.stop().success());
}

#[test]
fn a_tool_writing_then_running_a_script_raises_write_then_exec() {
    let (agent, _) = evil_agent("pol-drop");
    let dir = scratch_dir("pol-drop-dir");
    let (report, ev) = session(
        &agent,
        "evil",
        evil(&[("drop_and_run", json!({"directory": dir.to_string_lossy()}))]),
    );
    assert!(
        report["calls"][0]["text"].as_str().unwrap_or("").contains("dropped"),
        "{report}"
    );
    let a = alerts(&ev, Some("evil"));
    // The write itself is undeclared too (when file events are reported).
    let expected: &[&str] = if reports_file_and_network(&ev) {
        &["file.write_undeclared", "exec.write_then_exec"]
    } else {
        &["exec.write_then_exec"]
    };
    assert_eq!(rules_of(&a), expected, "{}", dump(&ev));
    let drop = a.last().unwrap();
    assert_eq!(
        drop["evidence"]["filename"],
        dir.join("payload.sh").to_string_lossy().as_ref()
    );
    assert_eq!(drop["mitre"]["id"], "T1105");
    assert!(agent.stop().success());
}

/// `npx -y PACKAGE` on first launch: npm writes the package (its files and
/// the `.bin` link) into its cache, then runs the bin. That is the declared
/// launch, not a dropper (issue 17: two `exec.write_then_exec` on node).
#[test]
fn a_first_npx_launch_of_a_package_raises_no_write_then_exec() {
    let agent = Agent::start("pol-npx", &[]);
    let d = scratch_dir("pol-npx-pkg");
    let pkg = d.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("package.json"),
        r#"{"name":"mcpwatch-npx-probe","version":"1.0.0","bin":{"mcpwatch-npx-probe":"index.js"}}"#,
    )
    .unwrap();
    std::fs::write(pkg.join("index.js"), "#!/usr/bin/env node\nconsole.log('probe ran');\n").unwrap();
    let packed = output(
        std::process::Command::new("npm")
            .args(["pack", "--silent", "--pack-destination"])
            .arg(&d)
            .current_dir(&pkg),
    );
    assert!(packed.status.success(), "{}", String::from_utf8_lossy(&packed.stderr));
    // A fresh cache: the first launch installs (offline: a local tarball).
    let cache = d.join("npm-cache");
    let out = output(
        agent
            .wrap(
                "npxprobe",
                &[
                    "npx",
                    "-y",
                    "--offline",
                    "--cache",
                    cache.to_str().unwrap(),
                    "./mcpwatch-npx-probe-1.0.0.tgz",
                ],
            )
            .current_dir(&d),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("probe ran"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = agent.wait_events("npx and the package's bin done", |ev| server_done(ev, "npxprobe"));
    // The install and the run were seen: npm linked the bin, node ran it.
    assert!(
        ev.iter().any(|e| e["kind"] == "file"
            && e["server"] == "npxprobe"
            && e["op"] == "symlink"
            && e["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("node_modules/.bin/mcpwatch-npx-probe"))),
        "npm's bin link: {}",
        dump(&ev)
    );
    assert!(
        exec_of(&ev, "/node")
            .iter()
            .any(|e| e["argv"].to_string().contains(".bin/mcpwatch-npx-probe")),
        "node ran the bin: {}",
        dump(&ev)
    );
    let a = alerts(&ev, Some("npxprobe"));
    assert!(
        !a.iter().any(|a| a["rule"] == "exec.write_then_exec"),
        "no write_then_exec for npm's own install: {}",
        dump(&ev)
    );
    assert!(agent.stop().success());
}

#[test]
fn a_server_without_manifest_is_watched_and_flagged_undeclared() {
    let (agent, _) = evil_agent("pol-undeclared");
    let (_, ev) = session(&agent, "stranger", evil(&[("run_shell", json!({"command": "true"}))]));
    let a = alerts(&ev, Some("stranger"));
    assert_eq!(rules_of(&a), ["server.undeclared", "exec.shell"], "{}", dump(&ev));
    assert_eq!(a[0]["manifest"], "(built-in least privilege)");
    assert_eq!(a[1]["manifest"], "(built-in least privilege)");
    assert!(agent.stop().success());
}

#[test]
fn a_server_from_a_host_config_is_discovered_without_the_wrapper() {
    let d = manifests_copy("pol-hostcfg", &["time"]);
    let cfg = scratch_dir("pol-hostcfg-claude").join("claude_desktop_config.json");
    let args = ["-m", "mcp_server_time", "--local-timezone", "Europe/Berlin"];
    std::fs::write(
        &cfg,
        serde_json::to_string_pretty(&json!({"mcpServers": {"my clock": {"command": py(), "args": args}}})).unwrap(),
    )
    .unwrap();
    let agent = agent_with("pol-hostcfg", &d, &["--host-config", cfg.to_str().unwrap()]);
    let mut cmd = vec![py()];
    cmd.extend(args.iter().map(|s| s.to_string()));
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    McpSession::new(&cmd)
        .call("get_current_time", json!({"timezone": "UTC"}))
        .run();
    let ev = agent.wait_events("my-clock to exit", |ev| server_done(ev, "my-clock"));
    let watch: Vec<&Value> = of_kind(&ev, "watch")
        .into_iter()
        .filter(|e| e["server"] == "my-clock")
        .collect();
    assert_eq!(watch.len(), 1, "{}", dump(&ev));
    assert_eq!(watch[0]["reason"], "rule");
    // Judged against the time manifest (found by its match rule): no alert, not undeclared.
    assert!(alerts(&ev, Some("my-clock")).is_empty(), "{}", dump(&ev));
    assert!(
        agent.log().contains("1 servers from host configurations"),
        "{}",
        agent.log()
    );
    assert!(agent.stop().success());
}

#[test]
fn a_tool_reading_an_ssh_key_of_a_fake_home_raises_cred_ssh() {
    let (agent, _) = evil_agent("pol-ssh");
    let home = scratch_dir("pol-ssh-home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_rsa"), "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n").unwrap();
    let (report, ev) = session(
        &agent,
        "evil",
        evil(&[("read_ssh_key", json!({"home": home.to_string_lossy()}))]).env("HOME", home.to_str().unwrap()),
    );
    assert!(
        report["calls"][0]["text"].as_str().unwrap_or("").starts_with("read "),
        "{report}"
    );
    if !reports_file_and_network(&ev) {
        eprintln!("skipped: this agent reports no file events (kernel file probes not built in)");
        return;
    }
    let a = alerts(&ev, Some("evil"));
    let key = home.join(".ssh/id_rsa");
    let cred: Vec<&&Value> = a.iter().filter(|a| a["rule"] == "cred.ssh").collect();
    assert_eq!(cred.len(), 1, "{}", dump(&ev));
    assert_eq!(cred[0]["evidence"]["path"], key.to_string_lossy().as_ref());
    assert_eq!(cred[0]["severity"], "high");
    assert_eq!(cred[0]["mitre"]["id"], "T1552.004");
    assert!(agent.stop().success());
}

#[test]
fn a_tool_connecting_to_an_undeclared_loopback_port_raises_net_connect_undeclared() {
    let (agent, _) = evil_agent("pol-connect");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let sink = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut line = String::new();
        let _ = BufReader::new(&mut s).read_line(&mut line);
        line
    });
    let (_, ev) = session(&agent, "evil", evil(&[("connect_port", json!({"port": port}))]));
    assert_eq!(sink.join().unwrap(), "exfiltrated\n");
    if !reports_file_and_network(&ev) {
        eprintln!("skipped: this agent reports no network events (kernel network probes not built in)");
        return;
    }
    let a = alerts(&ev, Some("evil"));
    let net: Vec<&&Value> = a.iter().filter(|a| a["rule"] == "net.connect_undeclared").collect();
    assert_eq!(net.len(), 1, "{}", dump(&ev));
    assert_eq!(net[0]["evidence"]["address"], "127.0.0.1");
    assert_eq!(net[0]["evidence"]["port"], port);
    assert!(agent.stop().success());
}
