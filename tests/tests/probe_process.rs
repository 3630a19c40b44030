//! The process probes (fork, exec, exit): a wrapped tree is attributed at
//! every level, unwatched processes stay out, the watched map follows the
//! live processes. The real agent, the real programs, real processes.

use std::{process::Stdio, time::Duration};

use mcpwatch_tests::*;
use serde_json::Value;

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
