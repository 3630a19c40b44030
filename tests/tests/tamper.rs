//! Self-protection on the real kernel: a watched process running as root
//! that signals the agent (seen at `signal_generate`), ptrace-seizes it,
//! calls bpf(BPF_LINK_DETACH), or opens its manifests directory or its
//! configuration for writing raises a critical `agent.tamper` naming it; the
//! agent survives a SIGSTOP (the test resumes it) and keeps watching. The
//! same script unwatched (root, no manifest matches it) raises nothing: an
//! operator may stop or restart the agent. In enforce mode the offender is
//! killed in the kernel by the program that saw the signal.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use mcpwatch_tests::{policy::*, *};
use serde_json::{Value, json};

/// Does what each line on stdin says, answering one line each:
/// `sig N PID`, `ptrace PID` (PTRACE_SEIZE from a forked child that exits,
/// detaching), `bpf` (BPF_LINK_DETACH of fd -1), `append PATH`.
const TAMPERER: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
for line in sys.stdin:
    cmd, *a = line.split()
    try:
        if cmd == "sig":
            os.kill(int(a[1]), int(a[0]))
            r = "sent"
        elif cmd == "ptrace":
            child = os.fork()
            if child == 0:
                os._exit(0 if libc.ptrace(0x4206, int(a[0]), None, None) == 0 else 1)
            r = "ptrace %d" % os.waitpid(child, 0)[1]
        elif cmd == "bpf":
            attr = (ctypes.c_uint32 * 16)(0xFFFFFFFF)
            rc = libc.syscall(321, 34, attr, 64)
            r = "bpf %d %d" % (rc, ctypes.get_errno())
        elif cmd == "append":
            open(a[0], "a").close()
            r = "appended"
        else:
            r = "unknown"
    except Exception as e:
        r = "error %s" % e
    print(r, flush=True)
"#;

/// A manifests directory with one manifest `name` in `mode` finding the
/// script `script` on the command line.
fn manifests(test: &str, name: &str, mode: &str, script: &str) -> PathBuf {
    let d = scratch_dir(&format!("{test}-manifests"));
    let m = json!({"name": name, "mode": mode, "match": {"argv": [script.replace('.', "\\.")]}});
    std::fs::write(d.join(format!("{name}.json")), m.to_string()).unwrap();
    d
}

/// The tamperer script, under each of `names` (one directory per test).
fn scripts<const N: usize>(test: &str, names: [&str; N]) -> [String; N] {
    let d = scratch_dir(&format!("{test}-scripts"));
    names.map(|name| {
        let p = d.join(name);
        std::fs::write(&p, TAMPERER).unwrap();
        p.to_string_lossy().into_owned()
    })
}

/// An agent with a configuration file (in its directory) and `manifests`.
fn agent(test: &str, manifests: &Path) -> Agent {
    let m = manifests.to_string_lossy().into_owned();
    Agent::start_with_config(
        test,
        "[metrics]\nenabled = false\n",
        &["--manifests", &m, "--no-user-host-configs"],
    )
}

struct Tamperer {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Tamperer {
    /// Starts `script`; waits until `server` is watched unless None.
    fn start(agent: &Agent, script: &str, server: Option<&str>) -> Tamperer {
        let mut child = Command::new(py())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .env_remove("LD_LIBRARY_PATH")
            .spawn()
            .unwrap();
        if let Some(server) = server {
            agent.wait_events(&format!("{server} watched"), |ev| {
                ev.iter().any(|e| e["kind"] == "watch" && e["server"] == server)
            });
        }
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Tamperer { child, input, output }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one command and returns its answer ("" when the process died).
    fn ask(&mut self, line: &str) -> String {
        if writeln!(self.input, "{line}").is_err() {
            return String::new();
        }
        let mut answer = String::new();
        let _ = self.output.read_line(&mut answer);
        answer.trim().to_owned()
    }

    fn finish(mut self) -> std::process::ExitStatus {
        drop(self.input);
        self.child.wait().unwrap()
    }
}

/// The process state letter of `pid` (`T`: stopped).
fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .unwrap_or('?')
}

/// Waits until `pid`'s state is (`stopped`) or is not (`!stopped`) `T`.
fn wait_stopped(pid: u32, stopped: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if (state(pid) == 'T') == stopped {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn tamper_alerts(ev: &[Value]) -> Vec<&Value> {
    alerts(ev, None)
        .into_iter()
        .filter(|a| a["rule"] == "agent.tamper")
        .collect()
}

/// The `agent.tamper` alert of `pid` whose evidence has `key` = `value`.
fn tamper_by<'a>(ev: &'a [Value], pid: u32, key: &str, value: &str) -> Option<&'a Value> {
    tamper_alerts(ev)
        .into_iter()
        .find(|a| a["pid"] == pid && a["evidence"][key] == value)
}

/// Stops the agent from `t`, checks it really stopped, resumes it.
fn stop_and_resume(agent: &Agent, t: &mut Tamperer) {
    let pid = agent.pid();
    assert_eq!(t.ask(&format!("sig {} {pid}", libc::SIGSTOP)), "sent");
    assert!(wait_stopped(pid, true), "the agent did not stop: {}", state(pid));
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    assert!(wait_stopped(pid, false), "the agent did not resume");
}

#[test]
fn a_watched_root_process_that_stops_traces_detaches_or_rewrites_the_agent_raises_tamper_and_an_unwatched_one_does_not()
{
    let test = "tamper-audit";
    let [watched, free] = scripts(test, ["tamper_w.py", "tamper_free.py"]);
    let d = manifests(test, "tamperw", "audit", "tamper_w.py");
    let agent = agent(test, &d);
    let config = agent.dir.join("config.toml");
    let apid = agent.pid();

    // The operator's side: an unwatched root process doing all of it.
    let mut t = Tamperer::start(&agent, &free, None);
    let free_pid = t.pid();
    stop_and_resume(&agent, &mut t);
    assert!(t.ask(&format!("ptrace {apid}")).starts_with("ptrace"));
    assert!(t.ask("bpf").starts_with("bpf -1"));
    assert_eq!(t.ask(&format!("append {}", d.join("notes.txt").display())), "appended");
    assert_eq!(t.ask(&format!("append {}", config.display())), "appended");
    assert!(t.finish().success());

    // The watched server, root too.
    let mut t = Tamperer::start(&agent, &watched, Some("tamperw"));
    let pid = t.pid();
    stop_and_resume(&agent, &mut t);
    let ev = agent.wait_events("the SIGSTOP's tamper alert", |ev| {
        tamper_by(ev, pid, "signal", "SIGSTOP").is_some()
    });
    let a = tamper_by(&ev, pid, "signal", "SIGSTOP").unwrap();
    assert_eq!(
        (
            a["severity"].as_str(),
            a["server"].as_str(),
            a["evidence"]["target_pid"].as_u64()
        ),
        (Some("critical"), Some("tamperw"), Some(apid as u64)),
        "{a}"
    );
    assert_eq!(a["evidence"]["killed"], false, "{a}");
    assert!(
        a["summary"].as_str().unwrap().contains("sent SIGSTOP to the agent"),
        "{a}"
    );

    assert!(t.ask(&format!("ptrace {apid}")).starts_with("ptrace"));
    assert!(t.ask("bpf").starts_with("bpf -1"), "BPF_LINK_DETACH of fd -1 fails");
    let notes = d.join("notes.txt");
    assert_eq!(t.ask(&format!("append {}", notes.display())), "appended");
    assert_eq!(t.ask(&format!("append {}", config.display())), "appended");
    let ev = agent.wait_events("the tamper alerts", |ev| {
        let n = tamper_alerts(ev)
            .into_iter()
            .filter(|a| a["server"] == "tamperw")
            .count();
        n >= 5
    });
    // The seizing child is the server's too (forked), its pid its own.
    let ptrace = tamper_alerts(&ev)
        .into_iter()
        .find(|a| a["evidence"]["kind"] == "ptrace")
        .expect("ptrace alert");
    assert_eq!(
        (ptrace["server"].as_str(), ptrace["evidence"]["target_pid"].as_u64()),
        (Some("tamperw"), Some(apid as u64)),
        "{ptrace}"
    );
    let bpf = tamper_by(&ev, pid, "cmd", "BPF_LINK_DETACH").expect("bpf alert");
    assert!(bpf["summary"].as_str().unwrap().contains("refused"), "{bpf}");
    let m = tamper_by(&ev, pid, "protected", "manifests").expect("manifests alert");
    assert_eq!(m["evidence"]["path"], notes.to_string_lossy().as_ref(), "{m}");
    let c = tamper_by(&ev, pid, "protected", "configuration").expect("configuration alert");
    assert_eq!(c["evidence"]["path"], config.to_string_lossy().as_ref(), "{c}");

    // A SIGTERM from it is reported and not obeyed: the agent keeps running
    // (the operator's, below, stops it).
    assert_eq!(t.ask(&format!("sig {} {apid}", libc::SIGTERM)), "sent");
    let ev = agent.wait_events("the SIGTERM's tamper alert", |ev| {
        tamper_by(ev, pid, "signal", "SIGTERM").is_some()
    });
    std::thread::sleep(Duration::from_millis(500));
    // Still serving its control socket (status fails on a gone agent).
    assert!(agent.status().is_object());
    assert!(agent.log().contains("came from a watched process"), "{}", agent.log());

    // Nothing of the operator's process.
    assert!(
        tamper_alerts(&ev).iter().all(|a| a["pid"] != free_pid),
        "{:#?}",
        tamper_alerts(&ev)
    );
    assert!(t.finish().success());
    assert!(agent.stop().success());
}

#[test]
fn an_enforced_server_that_stops_the_agent_is_killed_in_the_kernel() {
    let test = "tamper-enforce";
    let [s] = scripts(test, ["tamper_e.py"]);
    let d = manifests(test, "tampere", "enforce", "tamper_e.py");
    let agent = agent(test, &d);
    assert!(
        agent.log().contains("enforcement layer kill: enforced"),
        "{}",
        agent.log()
    );
    let apid = agent.pid();
    let mut t = Tamperer::start(&agent, &s, Some("tampere"));
    let pid = t.pid();
    // The signal was queued before the program ran: the agent stops all the
    // same, and the sender is dead before kill() returns to it.
    let answer = t.ask(&format!("sig {} {apid}", libc::SIGSTOP));
    assert_eq!(answer, "", "the sender lived on to answer");
    assert!(wait_stopped(apid, true), "the agent did not stop: {}", state(apid));
    unsafe { libc::kill(apid as i32, libc::SIGCONT) };
    assert_eq!(t.finish().signal(), Some(libc::SIGKILL));
    let ev = agent.wait_events("the tamper alert", |ev| {
        tamper_by(ev, pid, "signal", "SIGSTOP").is_some()
    });
    let a = tamper_by(&ev, pid, "signal", "SIGSTOP").unwrap();
    assert_eq!(
        (a["evidence"]["killed"].as_bool(), a["layer"].as_str()),
        (Some(true), Some("kill")),
        "{a}"
    );
    assert!(agent.stop().success());
}
