//! Gaps across restarts: a watched server keeps being watched, under the
//! same name, when the agent is killed and started again; a pid reused by
//! another process is not adopted.

use std::process::{Command, Stdio};

use mcpwatch_tests::*;
use serde_json::{Value, json};

/// A child killed when the test ends, passed or not.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_wrapped_server_is_found_again_after_kill_9_and_a_reused_pid_is_not() {
    let dir = scratch_dir("evasion-restart");
    let trigger = dir.join("go");
    let secret = dir.join("after-restart.txt");
    std::fs::write(&secret, "s").unwrap();
    let agent = Agent::start_in("evasion-restart", dir.clone(), &[]);
    let code = format!(
        "import os, time\nend = time.time() + 60\nwhile not os.path.exists('{}') and time.time() < end: time.sleep(0.05)\nos.close(os.open('{}', os.O_RDONLY))\n",
        trigger.display(),
        secret.display()
    );
    let py = python();
    let mut server = Reaped(
        agent
            .wrap("keeper", &[py.to_str().unwrap(), "-c", &code])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the wrapped server"),
    );
    agent.wait_events("keeper watched", |ev| {
        ev.iter().any(|e| e["kind"] == "watch" && e["server"] == "keeper")
    });
    // Another process whose pid a stale registration names.
    let other = Reaped(Command::new("sleep").arg("60").spawn().unwrap());
    // kill -9: no shutdown, nothing written on the way out.
    drop(agent);
    let reg = dir.join("state/registrations.json");
    let mut list: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&reg).unwrap()).unwrap();
    assert!(list.iter().any(|r| r["server"] == "keeper"), "{list:?}");
    list.push(json!({ "server": "impostor", "pid": other.0.id(), "start_time": 1 }));
    std::fs::write(&reg, serde_json::to_vec(&list).unwrap()).unwrap();

    let agent = Agent::start_in("evasion-restart", dir.clone(), &[]);
    std::fs::write(&trigger, "").unwrap();
    assert!(server.0.wait().unwrap().success());
    let secret = secret.to_string_lossy().into_owned();
    agent.wait_events("the server's open after the restart, under its name", |ev| {
        ev.iter()
            .any(|e| e["kind"] == "file" && e["path"] == secret && e["server"] == "keeper")
    });
    // The gap is not silent.
    let gap = agent.wait_events("a watch-gap alert", |ev| {
        ev.iter()
            .any(|e| e["kind"] == "alert" && e["rule"] == "agent.watch_gap")
    });
    let gap = find(&gap, "alert", |e| e["rule"] == "agent.watch_gap");
    assert_eq!(gap["server"], "keeper");
    assert_eq!(gap["pid"], server.0.id());
    let status = agent.status();
    let names: Vec<&str> = status["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(!names.contains(&"impostor"), "a reused pid was adopted: {status}");
    assert!(
        !status["watched"].as_array().unwrap().contains(&json!(other.0.id())),
        "{status}"
    );
    assert!(agent.stop().success());
}
