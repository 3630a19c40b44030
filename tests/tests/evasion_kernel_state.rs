//! Evasion: kernel state a server can exhaust, and I/O submitted through an
//! io_uring. Per-thread syscall state must not be a shared resource one
//! server can fill for all others; a full watched map is reported as what it
//! is and alerted; operations a ring submits are seen.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
};

use mcpwatch_tests::*;
use serde_json::Value;

/// More threads than the old shared stash (8,192 entries) could hold.
const PARKED_THREADS: usize = 9000;

#[test]
fn a_server_with_thousands_of_threads_parked_in_accept_does_not_blind_another() {
    let agent = Agent::start("evasion-stash", &[]);
    // Every thread enters accept4() (a followed syscall) and stays there:
    // each holds its syscall state in the kernel until the call returns.
    let py = python();
    let mut parker = agent
        .wrap(
            "parker",
            &[
                py.to_str().unwrap(),
                "-c",
                &format!(
                    r#"
import os, socket, threading, time
threading.stack_size(65536)
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
for _ in range({PARKED_THREADS}):
    threading.Thread(target=s.accept, daemon=True).start()
# Ready once every thread is inside accept4 (288) by the kernel's account.
while True:
    n = 0
    for t in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/%s/syscall" % t) as f:
                n += f.read().split(" ", 1)[0] == "288"
        except OSError:
            pass
    if n >= {PARKED_THREADS}:
        break
    time.sleep(0.1)
print("parked", n, flush=True)
time.sleep(120)
"#
                ),
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the parker");
    let mut line = String::new();
    BufReader::new(parker.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .expect("the parker's ready line");
    assert!(line.starts_with("parked"), "parker: {line:?}");

    // Meanwhile another server opens a file: that open is still reported.
    agent.run_python("opener", r#"open("/etc/hostname").close()"#);
    let ev = agent.server_events("opener");
    let _ = parker.kill();
    let _ = parker.wait();
    let opens: Vec<&Value> = ev
        .iter()
        .filter(|e| e["kind"] == "file" && e["path"] == "/etc/hostname")
        .collect();
    assert_eq!(opens.len(), 1, "the open was not reported: {}", dump(&ev));
    assert!(agent.stop().success());
}

#[test]
fn forking_past_a_full_watched_map_is_counted_and_alerted() {
    // Room for the wrapper chain and a few children only.
    let agent = Agent::start("evasion-watched-full", &["--watched-max", "4"]);
    // Twelve children alive at once, so the map cannot make room.
    agent.run_python(
        "forker",
        r#"
import os
r, w = os.pipe()
kids = []
for _ in range(12):
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    kids.append(pid)
os.close(w)
for k in kids:
    os.waitpid(k, 0)
"#,
    );
    let ev = agent.wait_events("the watched-map-full alert", |ev| {
        alerts(ev, None).iter().any(|a| a["rule"] == "agent.watched_map_full")
    });
    let alert = alerts(&ev, None)
        .into_iter()
        .find(|a| a["rule"] == "agent.watched_map_full")
        .unwrap();
    assert_eq!(alert["severity"], "critical", "{alert}");
    assert!(
        alert["summary"].as_str().unwrap().contains("watched map is full"),
        "{alert}"
    );
    // Counted as what it is, not as ring-buffer loss.
    assert!(
        ev.iter()
            .any(|e| e["kind"] == "loss" && e["probe"] == "fork" && e["reason"] == "watched_full"),
        "{}",
        dump(&ev)
    );
    assert!(
        !ev.iter().any(|e| e["kind"] == "loss" && e["event_kind"] == "fork"),
        "reported as ring loss: {}",
        dump(&ev)
    );
    assert!(agent.status()["probe_errors"]["fork/watched_full"].as_u64() >= Some(1));
    assert!(agent.log().contains("the watched map is full"), "{}", agent.log());
    assert!(agent.stop().success());
}
