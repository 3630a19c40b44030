//! Process lifecycle: the real agent, the real programs, real processes.

use std::{process::Stdio, time::Duration};

use mcpwatch_tests::*;
use serde_json::Value;

fn exec_of<'a>(events: &'a [Value], exe_suffix: &str) -> Vec<&'a Value> {
    of_kind(events, "exec")
        .into_iter()
        .filter(|e| e["exe"].as_str().is_some_and(|x| x.ends_with(exe_suffix)))
        .collect()
}

fn pid(e: &Value) -> u32 {
    e["pid"].as_u64().expect("pid") as u32
}

#[test]
fn wrapped_tree_is_attributed_at_every_level() {
    let agent = Agent::start("tree", &[]);
    // wrapper -> sh (exec) -> fork -> sh -> fork+exec sleep (grandchild) ; then exit 3
    let out = output(&mut agent.wrap(
        "tree",
        &["sh", "-c", "sh -c '/bin/sleep 0.1; exit 0'; /bin/echo done; exit 3"],
    ));
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    let ev = agent.wait_events("echo exit", |ev| {
        exec_of(ev, "/echo").first().is_some_and(|e| {
            let p = pid(e);
            ev.iter().any(|x| x["kind"] == "exit" && x["pid"] == p)
        }) && ev.iter().any(|x| x["kind"] == "exit" && x["exit_code"] == 3)
    });

    let watch = of_kind(&ev, "watch");
    assert_eq!(watch.len(), 1, "{}", dump(&ev));
    assert_eq!(watch[0]["reason"], "wrapper");
    assert_eq!(watch[0]["server"], "tree");
    let root = pid(watch[0]);

    // The wrapper became sh: same pid, exec event with full argv.
    let root_exec = of_pid(&ev, root)
        .into_iter()
        .find(|e| e["kind"] == "exec")
        .expect("root exec");
    // `filename` is what was exec'd; `exe` the file the kernel ran (sh may be a link to dash).
    assert!(root_exec["filename"].as_str().unwrap().ends_with("/sh"), "{root_exec}");
    assert!(root_exec["exe"].as_str().unwrap().starts_with('/'));
    assert_eq!(root_exec["argv"][0], "sh");
    assert_eq!(root_exec["argv"][1], "-c");

    // Child shell forked by the root, then the grandchild sleep forked by it.
    let child_fork = of_kind(&ev, "fork")
        .into_iter()
        .find(|e| pid(e) == root)
        .expect("root forks");
    let child = child_fork["child_pid"].as_u64().unwrap() as u32;
    let sleep = exec_of(&ev, "/sleep");
    assert_eq!(sleep.len(), 1, "{}", dump(&ev));
    let grandchild = pid(sleep[0]);
    assert_eq!(sleep[0]["ppid"], child, "sleep's parent is the inner sh");
    assert_eq!(sleep[0]["argv"], serde_json::json!(["/bin/sleep", "0.1"]));
    let chain: Vec<u64> = sleep[0]["ancestry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(&chain[..2], &[child as u64, root as u64], "ancestry nearest first");

    // Every event of the tree carries the server, and each level exits once.
    for p in [root, child, grandchild] {
        let mine = of_pid(&ev, p);
        assert!(!mine.is_empty());
        assert!(mine.iter().all(|e| e["server"] == "tree"), "{}", dump(&ev));
        assert_eq!(
            mine.iter().filter(|e| e["kind"] == "exit").count(),
            1,
            "pid {p}: {}",
            dump(&ev)
        );
    }
    let root_exit = of_pid(&ev, root)
        .into_iter()
        .find(|e| e["kind"] == "exit")
        .unwrap()
        .clone();
    assert_eq!(root_exit["exit_code"], 3);
    // Required fields on every line.
    for e in &ev {
        for f in ["ts", "kind", "server", "pid", "ppid", "uid", "exe", "argv"] {
            assert!(e.get(f).is_some(), "missing {f} in {e}");
        }
    }
    assert!(agent.stop().success());
}

#[test]
fn unwatched_processes_produce_no_events() {
    // A rule that matches nothing turns on exec discovery in the kernel: those
    // execs reach userspace but must not become events.
    let agent = Agent::start("unwatched", &["--watch", "nothing=no-such-server-anywhere-7f3a"]);
    let before = agent.events().len();
    // Long-lived and unwatched: pending at its exec, released once no rule matches.
    let mut sleeper = std::process::Command::new("/bin/sleep")
        .arg("30")
        .spawn()
        .expect("sleep");
    let out =
        output(std::process::Command::new("sh").args(["-c", "/bin/true; ls / >/dev/null; (sleep 0.05 &); exit 4"]));
    assert_eq!(out.status.code(), Some(4));
    // A watched marker afterwards: once its events are in, the others had their chance.
    let marker = output(&mut agent.wrap("marker", &["/bin/true"]));
    assert!(marker.status.success());
    let ev = agent.wait_events("marker exit", |ev| {
        ev.iter().any(|e| e["server"] == "marker" && e["kind"] == "exit")
    });
    let foreign: Vec<&Value> = ev[before..].iter().filter(|e| e["server"] != "marker").collect();
    assert!(foreign.is_empty(), "unwatched activity leaked: {foreign:?}");
    let sleeper_pid = Value::from(sleeper.id());
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let st = agent.status();
        let held = |k: &str| st[k].as_array().unwrap().contains(&sleeper_pid);
        if !held("watched") && !held("pending") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "unmatched process still held in the kernel map: {st}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert!(agent.stop().success());
}

#[test]
fn watched_map_holds_only_live_processes_after_1000_children() {
    let agent = Agent::start("thousand", &[]);
    let mut child = agent
        .wrap(
            "churn",
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 1000 ]; do /bin/true; i=$((i+1)); done; exec /bin/sleep 60",
            ],
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn churn");
    let root = child.id();
    let ev = agent.wait_events("1000 exits", |ev| {
        ev.iter()
            .filter(|e| e["kind"] == "exit" && e["server"] == "churn")
            .count()
            >= 1000
            && ev.iter().any(|e| {
                e["kind"] == "exec" && e["pid"] == root && e["exe"].as_str().is_some_and(|x| x.ends_with("/sleep"))
            })
    });
    let exits = ev
        .iter()
        .filter(|e| e["kind"] == "exit" && e["server"] == "churn")
        .count();
    assert_eq!(exits, 1000);
    let status = agent.status();
    assert_eq!(
        status["watched"],
        serde_json::json!([root]),
        "only the live process stays watched: {status}"
    );
    assert_eq!(status["gc_removed"], 0, "every exit was seen by the kernel hook");
    assert_eq!(status["lost"], 0);
    child.kill().unwrap();
    child.wait().unwrap();
    let ev = agent.wait_events("sleep killed", |ev| {
        ev.iter().any(|e| e["kind"] == "exit" && e["pid"] == root)
    });
    let exit = ev.iter().find(|e| e["kind"] == "exit" && e["pid"] == root).unwrap();
    assert_eq!(exit["signal"], 9);
    let deadline = std::time::Instant::now() + PATIENCE;
    while agent.status()["watched"] != serde_json::json!([]) {
        assert!(
            std::time::Instant::now() < deadline,
            "watched map not empty: {}",
            agent.status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(agent.stop().success());
}

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
fn shutdown_detaches_everything_and_removes_pins() {
    // Our map by its pin, not by counting: other agents may come and go.
    let pin_dir = std::path::PathBuf::from(format!("/sys/fs/bpf/mcpwatch-it-{}", std::process::id()));
    let agent = Agent::start("shutdown", &["--pin", pin_dir.to_str().unwrap()]);
    assert!(pin_dir.join("WATCHED").exists());
    let ours = {
        let map = aya::maps::MapData::from_pin(pin_dir.join("WATCHED")).expect("open the pinned map");
        map.info().expect("map info").id()
    };
    assert!(loaded_map_ids("WATCHED").contains(&ours));
    let socket = agent.socket.clone();
    assert!(agent.stop().success());
    assert!(!socket.exists(), "control socket removed");
    assert!(!pin_dir.join("WATCHED").exists(), "pins removed without --keep-pins");
    let _ = std::fs::remove_dir(&pin_dir);
    let deadline = std::time::Instant::now() + PATIENCE;
    while loaded_map_ids("WATCHED").contains(&ours) {
        assert!(std::time::Instant::now() < deadline, "maps still loaded after exit");
        std::thread::sleep(Duration::from_millis(50));
    }
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

#[test]
fn test_alert_reaches_the_event_stream() {
    let agent = Agent::start("testalert", &[]);
    let out = output(
        std::process::Command::new(bin())
            .arg("test-alert")
            .arg("--socket")
            .arg(&agent.socket),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let ev = agent.wait_events("test alert", |ev| ev.iter().any(|e| e["kind"] == "alert"));
    let a = ev.iter().find(|e| e["kind"] == "alert").unwrap();
    assert_eq!(a["id"], id.as_str());
    assert_eq!(a["rule"], "agent.test");
    assert_eq!(a["severity"], "info");
    assert_eq!(a["count"], 1);
    assert!(a["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(agent.stop().success());
}
