//! Detection quality (issue 18): private keys outside `~`, decoys, repeats per
//! tool and at shutdown, children that outlive their call, over-long paths,
//! harmless system information, what a loose script's code is. The malicious
//! test server does each with real syscalls; the real agent judges it.

use std::path::{Path, PathBuf};

use mcpwatch_tests::{policy::*, *};
use serde_json::{Value, json};

fn of_rule<'a>(a: &[&'a Value], rule: &str) -> Vec<&'a Value> {
    a.iter().copied().filter(|a| a["rule"] == rule).collect()
}

/// A fake home with an SSH key, for the session's `HOME`.
fn fake_home(test: &str) -> (PathBuf, String) {
    let home = scratch_dir(test);
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let key = home.join(".ssh/id_rsa");
    std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n").unwrap();
    (home, key.to_string_lossy().into_owned())
}

fn home_env(s: McpSession, home: &Path) -> McpSession {
    s.env("HOME", home.to_str().unwrap())
}

/// Skips (true) when the agent reports no file events.
fn no_file_events(ev: &[Value]) -> bool {
    let none = !reports_file_and_network(ev);
    if none {
        eprintln!("skipped: this agent reports no file events (kernel file probes not built in)");
    }
    none
}

#[test]
fn a_tls_private_key_is_a_credential_and_certificates_and_system_information_are_not() {
    let (agent, _) = evil_agent("det-tls");
    // A key where Debian keeps them (root's test machine: created and removed here).
    let dir = Path::new("/etc/ssl/private");
    std::fs::create_dir_all(dir).unwrap();
    let key = dir.join(format!("mcpwatch-it-{}.key", std::process::id()));
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nfake\n").unwrap();
    let cert = "/etc/ssl/certs/ca-certificates.crt";
    let k = key.to_string_lossy().into_owned();
    let paths = [k.as_str(), cert, "/proc/uptime", "/proc/loadavg", "/proc/meminfo"];
    let (report, ev) = session(&agent, "evil", evil(&[("read_files", json!({ "paths": paths }))]));
    let _ = std::fs::remove_file(&key);
    assert!(
        report["calls"][0]["text"].as_str().unwrap_or("").starts_with("read "),
        "{report}"
    );
    if no_file_events(&ev) {
        return;
    }
    let a = alerts(&ev, Some("evil"));
    assert_eq!(rules_of(&a), ["cred.tls_key"], "{}", dump(&ev));
    assert_eq!(a[0]["evidence"]["path"], k.as_str());
    assert_eq!(a[0]["severity"], "high");
    assert_eq!(a[0]["mitre"]["id"], "T1552.004");
    assert_eq!(a[0]["tool"], "read_files");
    assert!(agent.stop().success());
}

#[test]
fn twenty_one_decoys_do_not_hide_the_real_key() {
    let (agent, _) = evil_agent("det-decoys");
    let (home, key) = fake_home("det-decoys-home");
    let mut paths: Vec<String> = (0..21)
        .map(|i| home.join(format!(".ssh/decoy{i}")).to_string_lossy().into_owned())
        .collect();
    paths.push(key.clone());
    let (_, ev) = session(
        &agent,
        "evil",
        home_env(evil(&[("read_files", json!({ "paths": paths }))]), &home),
    );
    if no_file_events(&ev) {
        return;
    }
    let a = alerts(&ev, Some("evil"));
    let ssh = of_rule(&a, "cred.ssh");
    assert!(
        ssh.iter()
            .any(|a| a["evidence"]["path"] == key.as_str() && a["count"] == 1),
        "no alert of its own names {key}:\n{}",
        dump(&ev)
    );
    assert_eq!(ssh.len(), 22, "every distinct credential path: {}", dump(&ev));
    assert!(agent.stop().success());
}

#[test]
fn a_second_tool_on_the_same_key_is_its_own_alert_and_repeats_are_reported_at_shutdown() {
    let (agent, _) = evil_agent("det-repeat");
    let (home, key) = fake_home("det-repeat-home");
    let h = home.to_string_lossy().into_owned();
    let (_, ev) = session(
        &agent,
        "evil",
        home_env(
            evil(&[
                ("read_ssh_key", json!({ "home": h })),
                ("read_ssh_key", json!({ "home": h })),
                ("read_files", json!({ "paths": [key] })),
            ]),
            &home,
        ),
    );
    if no_file_events(&ev) {
        return;
    }
    let a = alerts(&ev, Some("evil"));
    let ssh = of_rule(&a, "cred.ssh");
    let tools: Vec<&str> = ssh.iter().map(|a| a["tool"].as_str().unwrap_or("")).collect();
    assert_eq!(tools, ["read_ssh_key", "read_files"], "{}", dump(&ev));
    let first = ssh[0]["id"].clone();
    let events = agent.events_path.clone();
    assert!(agent.stop().success());
    // The window (60 s) had not ended: the repeat is summarised on SIGTERM.
    let text = std::fs::read_to_string(events).unwrap();
    let after: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let summaries: Vec<&Value> = alerts(&after, Some("evil"))
        .into_iter()
        .filter(|a| a["repeat_of"] == first)
        .collect();
    assert_eq!(summaries.len(), 1, "{}", dump(&after));
    assert_eq!(summaries[0]["count"], 1);
    assert_eq!(summaries[0]["tool"], "read_ssh_key");
}

#[test]
fn a_child_that_outlives_its_call_keeps_the_calls_tool() {
    let (agent, _) = evil_agent("det-child");
    let (home, key) = fake_home("det-child-home");
    let (report, ev) = session(
        &agent,
        "evil",
        home_env(
            evil(&[
                ("spawn_late", json!({ "path": key, "delay": 1.5 })),
                ("hello", json!({ "name": "x" })),
            ]),
            &home,
        ),
    );
    assert_eq!(report["calls"][0]["text"], "started", "{report}");
    if no_file_events(&ev) {
        return;
    }
    // The child reads after the call (and the server) ended.
    let ev = agent.wait_events("the late child's credential alert", |ev| {
        alerts(ev, Some("evil")).iter().any(|a| a["rule"] == "cred.ssh")
    });
    let a = alerts(&ev, Some("evil"));
    let ssh = of_rule(&a, "cred.ssh");
    assert_eq!(ssh.len(), 1, "{}", dump(&ev));
    assert_eq!(ssh[0]["evidence"]["path"], key.as_str());
    assert_eq!(ssh[0]["tool"], "spawn_late", "{}", ssh[0]);
    let call = ev
        .iter()
        .find(|e| e["kind"] == "mcp_call" && e["tool"] == "spawn_late")
        .map(|e| e["call_id"].clone());
    assert!(ssh[0]["call_id"].is_string(), "{}", ssh[0]);
    if let Some(id) = call {
        assert_eq!(ssh[0]["call_id"], id);
    }
    assert!(agent.stop().success());
}

#[test]
fn a_path_too_long_to_read_whole_is_judged_unknown_not_undeclared() {
    let dir = scratch_dir("det-deep-dir");
    let d = scratch_dir("det-deep-manifests");
    std::fs::write(
        d.join("evil.json"),
        json!({"name": "evil", "mode": "audit", "write": [dir.to_string_lossy()]}).to_string(),
    )
    .unwrap();
    let agent = agent_with("det-deep", &d, &[]);
    // 70 levels: deeper than the kernel side walks (64 components).
    let (report, ev) = session(
        &agent,
        "evil",
        evil(&[("write_deep", json!({"directory": dir.to_string_lossy(), "depth": 70}))]),
    );
    let _ = std::process::Command::new("rm").arg("-rf").arg(&dir).status();
    assert_eq!(report["calls"][0]["text"], "written", "{report}");
    if no_file_events(&ev) {
        return;
    }
    let a = alerts(&ev, Some("evil"));
    assert!(
        of_rule(&a, "file.write_undeclared").is_empty(),
        "a cut path is no undeclared write:\n{}",
        dump(&ev)
    );
    let unknown = of_rule(&a, "file.path_unknown");
    assert!(!unknown.is_empty(), "{}", dump(&ev));
    assert_eq!(unknown[0]["evidence"]["path_truncated"], true);
    assert!(
        unknown[0]["summary"].as_str().unwrap_or("").contains("not judged"),
        "{}",
        unknown[0]
    );
    assert!(agent.stop().success());
}

#[test]
fn a_loose_script_in_tmp_is_its_only_code() {
    let (agent, _) = evil_agent("det-loose");
    // The server copied alone into a scratch directory of /tmp (no package
    // metadata): its neighbours are not its code.
    let dir = scratch_dir("det-loose-dir");
    let script = dir.join("server.py");
    std::fs::copy(repo().join("tests/mcp/servers/evil.py"), &script).unwrap();
    let neighbour = dir.join("someone-elses.txt");
    std::fs::write(&neighbour, "not the server's\n").unwrap();
    let s = McpSession::new(&[&py(), script.to_str().unwrap()])
        .call("read_files", json!({ "paths": [neighbour.to_string_lossy()] }));
    let (_, ev) = session(&agent, "evil", s);
    if no_file_events(&ev) {
        return;
    }
    let a = alerts(&ev, Some("evil"));
    let reads = of_rule(&a, "file.read_undeclared");
    assert_eq!(reads.len(), 1, "{}", dump(&ev));
    assert_eq!(reads[0]["evidence"]["path"], neighbour.to_string_lossy().as_ref());
    assert!(agent.stop().success());
}
