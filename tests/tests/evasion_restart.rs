//! Gaps across restarts: the kernel objects outlive a killed agent, so what a
//! watched server does while no agent runs is queued and seen by the next
//! one, under the same name and with no gap; pins the next agent cannot use
//! are removed and the gap is reported; a clean stop leaves nothing behind;
//! a pid reused by another process is not adopted.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

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

/// Waits until `path` exists (a step of the server's script).
fn wait_file(path: &Path) {
    let deadline = Instant::now() + PATIENCE;
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A wrapped server that, at `go`, runs `cat SECRET` (a child that opens it
/// and exits), writes `forked`, then at `go2` opens `SECRET2` itself and exits.
struct Keeper {
    dir: PathBuf,
    secret: String,
    secret2: String,
}

impl Keeper {
    fn new(name: &str) -> Self {
        let dir = scratch_dir(name);
        let (secret, secret2) = (dir.join("gap-secret"), dir.join("after-secret"));
        std::fs::write(&secret, "s").unwrap();
        std::fs::write(&secret2, "s").unwrap();
        Keeper {
            secret: secret.to_string_lossy().into_owned(),
            secret2: secret2.to_string_lossy().into_owned(),
            dir,
        }
    }

    fn spawn(&self, agent: &Agent) -> Reaped {
        let d = self.dir.display();
        let code = format!(
            "import os, subprocess, time\n\
             def wait(p):\n    end = time.time() + 60\n    while not os.path.exists(p) and time.time() < end: time.sleep(0.02)\n\
             wait('{d}/go')\n\
             subprocess.run(['/bin/cat', '{}'], stdout=subprocess.DEVNULL, check=True)\n\
             open('{d}/forked', 'w').close()\n\
             wait('{d}/go2')\n\
             os.close(os.open('{}', os.O_RDONLY))\n",
            self.secret, self.secret2
        );
        let py = python();
        Reaped(
            agent
                .wrap("keeper", &[py.to_str().unwrap(), "-c", &code])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn the wrapped server"),
        )
    }

    /// While no agent runs: the server forks `cat`, which opens the secret and exits.
    fn fork_in_the_gap(&self) {
        std::fs::write(self.dir.join("go"), "").unwrap();
        wait_file(&self.dir.join("forked"));
    }
}

fn watch_reasons(ev: &[Value]) -> Vec<String> {
    ev.iter()
        .filter(|e| e["kind"] == "watch" && e["server"] == "keeper")
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn what_a_server_does_while_no_agent_runs_is_seen_by_the_next_one_without_a_gap() {
    let k = Keeper::new("evasion-restart");
    let agent = Agent::start_in("evasion-restart", k.dir.clone(), &[]);
    let mut server = k.spawn(&agent);
    agent.wait_events("keeper watched", |ev| watch_reasons(ev).contains(&"wrapper".to_owned()));
    // Another process whose pid a stale registration names.
    let other = Reaped(Command::new("sleep").arg("60").spawn().unwrap());
    agent.kill9();
    k.fork_in_the_gap();
    let reg = k.dir.join("state/registrations.json");
    let mut list: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&reg).unwrap()).unwrap();
    assert!(list.iter().any(|r| r["server"] == "keeper"), "{list:?}");
    list.push(json!({ "server": "impostor", "pid": other.0.id(), "start_time": 1 }));
    std::fs::write(&reg, serde_json::to_vec(&list).unwrap()).unwrap();

    let agent = Agent::start_in("evasion-restart", k.dir.clone(), &[]);
    // The child's exec and open, queued in the kept ring while no agent ran,
    // attributed to the server.
    let ev = agent.wait_events("the gap child's exec and open, under the server's name", |ev| {
        ev.iter()
            .any(|e| e["kind"] == "file" && e["path"] == k.secret && e["server"] == "keeper")
    });
    let open = find(&ev, "file", |e| e["path"] == k.secret);
    let cat = open["pid"].clone();
    assert!(
        ev.iter()
            .any(|e| e["kind"] == "exec" && e["pid"] == cat && e["server"] == "keeper" && e["exe"] == "/usr/bin/cat"),
        "{}",
        dump(&ev)
    );
    assert!(
        ev.iter().any(|e| e["kind"] == "exit" && e["pid"] == cat),
        "{}",
        dump(&ev)
    );
    let ev = agent.wait_events("the takeover watch line", |ev| {
        watch_reasons(ev).contains(&"takeover".to_owned())
    });
    assert!(!watch_reasons(&ev).contains(&"restart".to_owned()), "{}", dump(&ev));
    assert!(
        agent.log().contains("taking over the kernel objects"),
        "{}",
        agent.log()
    );
    // Still watched after the takeover.
    std::fs::write(k.dir.join("go2"), "").unwrap();
    assert!(server.0.wait().unwrap().success());
    let ev = agent.wait_events("the server's open after the takeover", |ev| {
        ev.iter()
            .any(|e| e["kind"] == "file" && e["path"] == k.secret2 && e["server"] == "keeper")
    });
    // No gap: nothing to alert.
    assert!(
        !ev.iter()
            .any(|e| e["kind"] == "alert" && e["rule"] == "agent.watch_gap"),
        "{}",
        dump(&ev)
    );
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

#[test]
fn pins_of_another_object_are_removed_and_the_gap_is_reported() {
    let k = Keeper::new("evasion-restart-stale");
    let agent = Agent::start_in("evasion-restart-stale", k.dir.clone(), &[]);
    let mut server = k.spawn(&agent);
    agent.wait_events("keeper watched", |ev| watch_reasons(ev).contains(&"wrapper".to_owned()));
    let pins = agent.pin_dir.clone();
    agent.kill9();
    // As an older agent's object would have left them: another stamp.
    let marker = std::fs::read_dir(&pins)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("object-"))
        .expect("an object marker next to the pins");
    let (_, nonce) = marker.split_once('_').unwrap();
    let stale = format!("object-0000000000000000-w1-r4096_{nonce}");
    std::fs::rename(pins.join(&marker), pins.join(&stale)).unwrap();
    let state = k.dir.join("state/kernel-objects.json");
    let text = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, text.replace(&marker, &stale)).unwrap();

    let agent = Agent::start_in("evasion-restart-stale", k.dir.clone(), &[]);
    assert!(
        agent.log().contains("another eBPF object"),
        "the reason is logged: {}",
        agent.log()
    );
    assert!(!pins.join(&stale).exists(), "the stale set is removed");
    // Today's path: adopted again from the registrations, the gap alerted.
    let ev = agent.wait_events("a watch-gap alert", |ev| {
        ev.iter()
            .any(|e| e["kind"] == "alert" && e["rule"] == "agent.watch_gap")
    });
    assert!(watch_reasons(&ev).contains(&"restart".to_owned()), "{}", dump(&ev));
    let gap = find(&ev, "alert", |e| e["rule"] == "agent.watch_gap");
    assert_eq!(gap["server"], "keeper");
    assert_eq!(gap["pid"], server.0.id());
    k.fork_in_the_gap();
    std::fs::write(k.dir.join("go2"), "").unwrap();
    assert!(server.0.wait().unwrap().success());
    agent.wait_events("the server's open after the restart, under its name", |ev| {
        ev.iter()
            .any(|e| e["kind"] == "file" && e["path"] == k.secret2 && e["server"] == "keeper")
    });
    assert!(agent.stop().success());
}

/// Ids of the links pinned in `pins` (the descriptors are closed at once).
fn pinned_link_ids(pins: &Path) -> Vec<u32> {
    std::fs::read_dir(pins.join("links"))
        .expect("links pinned")
        .flatten()
        .map(|e| {
            let link = aya::programs::links::PinnedLink::from_pin(e.path()).expect("open a pinned link");
            aya::programs::links::FdLink::from(link).info().expect("link info").id()
        })
        .collect()
}

fn loaded_link_ids() -> Vec<u32> {
    aya::programs::loaded_links().flatten().map(|l| l.id()).collect()
}

#[test]
fn a_clean_stop_leaves_nothing_pinned_or_attached_unless_asked_to_keep_it() {
    let dir = scratch_dir("evasion-restart-stop");
    let agent = Agent::start_in("evasion-restart-stop", dir.clone(), &[]);
    let pins = agent.pin_dir.clone();
    let ours = pinned_link_ids(&pins);
    assert!(ours.len() >= 5, "every program's link pinned: {ours:?}");
    assert!(agent.stop().success());
    assert!(
        !pins.exists(),
        "pins left after SIGTERM: {:?}",
        std::fs::read_dir(&pins).map(|d| d.count())
    );
    let deadline = Instant::now() + PATIENCE;
    while loaded_link_ids().iter().any(|id| ours.contains(id)) {
        assert!(Instant::now() < deadline, "programs still attached after a clean stop");
        std::thread::sleep(Duration::from_millis(50));
    }

    // An upgrade: the objects stay attached for the next agent.
    let agent = Agent::start_in("evasion-restart-stop", dir.clone(), &["--keep-sensors-on-exit"]);
    let kept = pinned_link_ids(&pins);
    assert!(agent.stop().success());
    assert_eq!(pinned_link_ids(&pins), kept, "kept through the stop");
    let agent = Agent::start_in("evasion-restart-stop", dir, &[]);
    assert!(
        agent.log().contains("taking over the kernel objects"),
        "{}",
        agent.log()
    );
    // The new agent's links replaced the old ones, which are detached.
    let now = pinned_link_ids(&pins);
    assert!(now.iter().all(|id| !kept.contains(id)), "{now:?} {kept:?}");
    let deadline = Instant::now() + PATIENCE;
    while loaded_link_ids().iter().any(|id| kept.contains(id)) {
        assert!(
            Instant::now() < deadline,
            "the previous agent's programs still attached"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(agent.stop().success());
    assert!(!pins.exists());
}
