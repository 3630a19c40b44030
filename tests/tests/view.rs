//! Reading the output as a person: `mcpwatch tail` follows the events file of
//! a real agent while a real MCP server's tool reads a credential, and
//! `mcpwatch report` says which tool touched what.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mcpwatch_tests::{policy::*, *};
use serde_json::json;

#[test]
fn tail_follows_the_events_file_and_report_names_what_each_tool_touched() {
    // With a tool_call line per call: a call that touched nothing is counted too.
    let manifests = scratch_dir("view-manifests");
    std::fs::write(manifests.join("evil.json"), r#"{"name": "evil", "mode": "audit"}"#).unwrap();
    let agent = agent_with("view", &manifests, &["--audit-tool-calls"]);
    let home = scratch_dir("view-home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let key = home.join(".ssh/id_rsa");
    std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n").unwrap();
    // Following from before the session: what it prints arrives as it happens.
    let mut tail = Command::new(bin())
        .args([
            "tail",
            "--color",
            "always",
            "--severity",
            "high",
            "--server",
            "evil",
            "--file",
        ])
        .arg(&agent.events_path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    session(
        &agent,
        "evil",
        evil(&[
            ("hello", json!({"name": "x"})),
            ("read_ssh_key", json!({"home": home.to_string_lossy()})),
        ])
        .env("HOME", home.to_str().unwrap()),
    );
    let deadline = Instant::now() + PATIENCE;
    let line = loop {
        let l = rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
        if l.contains("cred.ssh") {
            break l;
        }
        assert!(Instant::now() < deadline, "tail printed no cred.ssh line");
    };
    let _ = tail.kill();
    let _ = tail.wait();
    assert!(
        line.contains("\u{1b}[31mALERT HIGH cred.ssh: "),
        "coloured by severity: {line:?}"
    );
    assert!(line.contains(&key.display().to_string()), "{line:?}");
    assert!(
        line.contains("[read_ssh_key#"),
        "the tool call that caused it: {line:?}"
    );

    // Not following: the same alert, plain; the filters hold.
    let out = output(
        Command::new(bin())
            .args([
                "tail",
                "--no-follow",
                "--color",
                "never",
                "--alerts",
                "--since",
                "1h",
                "--file",
            ])
            .arg(&agent.events_path),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().all(|l| l.contains(" ALERT ")), "{text}");
    assert!(text.lines().any(|l| l.contains("ALERT HIGH cred.ssh")), "{text}");

    let out = output(
        Command::new(bin())
            .args(["report", "--json", "--server", "evil", "--file"])
            .arg(&agent.events_path),
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let srv = &r["servers"][0];
    assert_eq!(srv["server"], "evil");
    assert_eq!(srv["tool_calls"], 2, "{srv}");
    let tool = srv["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"] == "read_ssh_key")
        .unwrap_or_else(|| panic!("{srv}"));
    assert!(
        tool["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == key.to_string_lossy().as_ref() && f["access"] == json!(["read"])),
        "{tool}"
    );
    assert!(
        tool["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == "cred.ssh"),
        "{tool}"
    );
    let out = output(Command::new(bin()).args(["report", "--file"]).arg(&agent.events_path));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("server evil: 2 tool calls"), "{text}");
    assert!(text.contains("  tool read_ssh_key: 1 call\n"), "{text}");
    assert!(agent.stop().success());
}

/// The same session at each events level: `all` writes every event,
/// `summary` one line per tool call and server exit with what it touched
/// (and `report` still names what each tool touched), `alerts` the alerts and
/// the server's start and exit.
#[test]
fn events_levels_write_less_and_report_still_works_from_a_summary() {
    let manifests = scratch_dir("levels-manifests");
    std::fs::write(manifests.join("evil.json"), r#"{"name": "evil", "mode": "audit"}"#).unwrap();
    let home = scratch_dir("levels-home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let key = home.join(".ssh/id_rsa");
    std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n").unwrap();
    let mut lines = Vec::new();
    for level in ["all", "summary", "alerts"] {
        let agent = agent_with(&format!("levels-{level}"), &manifests, &["--events-level", level]);
        session(
            &agent,
            "evil",
            evil(&[
                ("hello", json!({"name": "x"})),
                ("read_ssh_key", json!({"home": home.to_string_lossy()})),
            ])
            .env("HOME", home.to_str().unwrap()),
        );
        let ev = agent.events();
        assert!(agent.stop().success());
        let alerts = ev
            .iter()
            .filter(|e| e["kind"] == "alert" && e["rule"] == "cred.ssh")
            .count();
        assert_eq!(alerts, 1, "{level}: the alert is at every level: {}", dump(&ev));
        eprintln!("level {level}: {} lines", ev.len());
        lines.push(ev.len());
        match level {
            "summary" => {
                assert!(!ev.iter().any(|e| e["kind"] == "file"), "{}", dump(&ev));
                let call = ev
                    .iter()
                    .find(|e| e["kind"] == "tool_call" && e["tool"] == "read_ssh_key")
                    .unwrap_or_else(|| panic!("{}", dump(&ev)));
                assert!(
                    call["touched"]["files"]["first"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|f| f["path"] == key.to_string_lossy().as_ref()),
                    "{call}"
                );
                assert!(
                    ev.iter().any(|e| e["kind"] == "activity"),
                    "the server's exit: {}",
                    dump(&ev)
                );
                let out = output(
                    Command::new(bin())
                        .args(["report", "--json", "--server", "evil", "--file"])
                        .arg(agent_events(&ev, &key)),
                );
                let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let srv = &r["servers"][0];
                assert_eq!(srv["tool_calls"], 2, "{srv}");
                let tool = srv["tools"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["tool"] == "read_ssh_key")
                    .unwrap_or_else(|| panic!("{srv}"));
                assert!(
                    tool["files"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|f| f["path"] == key.to_string_lossy().as_ref()),
                    "report from a summary file names the key: {tool}"
                );
                assert!(
                    tool["alerts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|a| a["rule"] == "cred.ssh")
                );
            }
            "alerts" => {
                let kinds: std::collections::BTreeSet<&str> = ev.iter().filter_map(|e| e["kind"].as_str()).collect();
                assert!(
                    kinds.iter().all(|k| ["alert", "watch", "exit", "loss"].contains(k)),
                    "{kinds:?}"
                );
            }
            _ => {}
        }
    }
    assert!(
        lines[0] > 10 * lines[1] && lines[1] > lines[2],
        "all > summary > alerts: {lines:?}"
    );
}

/// The events as a file of their own (the agent's scratch dir is removed with it).
fn agent_events(ev: &[serde_json::Value], near: &std::path::Path) -> std::path::PathBuf {
    let p = near.parent().unwrap().join("summary-events.jsonl");
    let text: String = ev.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&p, text).unwrap();
    p
}
