//! Evasion: kernel state a server can exhaust, syscalls in flight when the
//! agent starts, and I/O submitted through an io_uring. No per-thread state
//! may be a shared resource one server can fill for all others; a call begun
//! before the programs attached is reported at its exit; a full watched map
//! is reported as what it is and alerted; operations a ring submits are seen.

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
    // Every thread enters accept4() (a followed syscall) and stays there
    // (the enter/stash design held per-thread state until the call returned).
    let py = python();
    let parker = agent
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
    // Killed however the test ends: 9,000 threads must not outlive it.
    let mut parker = Reaped(parker);
    let mut line = String::new();
    BufReader::new(parker.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .expect("the parker's ready line");
    assert!(line.starts_with("parked"), "parker: {line:?}");

    // Meanwhile another server opens a file: that open is still reported.
    agent.run_python("opener", r#"open("/etc/hostname").close()"#);
    let ev = agent.server_events("opener");
    drop(parker);
    let opens: Vec<&Value> = ev
        .iter()
        .filter(|e| e["kind"] == "file" && e["path"] == "/etc/hostname")
        .collect();
    assert_eq!(opens.len(), 1, "the open was not reported: {}", dump(&ev));
    assert!(agent.stop().success());
}

#[test]
fn a_syscall_begun_before_the_agent_started_is_reported_at_its_exit() {
    let dir = scratch_dir("evasion-in-flight-server");
    let fifo = dir.join("wire");
    let _ = std::fs::remove_file(&fifo);
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    // The server's open of the FIFO blocks until a writer comes.
    let server = dir.join("in-flight-server-5e1a.sh");
    script(&server, &format!("read x < {}\necho \"$x\"", fifo.display()));
    let proc_ = Reaped(
        std::process::Command::new(&server)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the server"),
    );
    let server_pid = proc_.0.id();
    wait_for(
        "the server to block in its open",
        PATIENCE,
        || {
            let sc = std::fs::read_to_string(format!("/proc/{server_pid}/syscall")).ok()?;
            let nr = sc.split(' ').next()?;
            (nr == "257" || nr == "2").then_some(())
        },
        || "never blocked in open/openat".into(),
    );

    // The agent starts while the open is under way and watches the server
    // through its start-up scan.
    let agent = Agent::start("evasion-in-flight", &["--watch", "inflight=in-flight-server-5e1a"]);
    agent.wait_events("the server watched", |ev| {
        of_kind(ev, "watch").iter().any(|e| pid(e) == server_pid)
    });
    // A writer lets the open return.
    std::fs::write(&fifo, "go\n").expect("write the FIFO");
    let ev = agent.wait_events("the open's exit reported", |ev| {
        ev.iter()
            .any(|e| e["kind"] == "file" && e["pid"] == server_pid && e["op"] == "open")
    });
    let open = find(&ev, "file", |e| e["pid"] == server_pid && e["op"] == "open");
    assert_eq!(open["server"], "inflight", "{open}");
    assert_eq!(open["path"], fifo.to_str().unwrap(), "{open}");
    assert!(open["result"].as_i64().is_some_and(|fd| fd >= 0), "{open}");
    drop(proc_);
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

#[test]
fn an_openat_and_a_connect_submitted_through_an_io_uring_are_reported() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    let port = listener.local_addr().unwrap().port();
    let agent = Agent::start("evasion-io-uring", &[]);
    // A raw ring (Python has no io_uring module): io_uring_setup, the three
    // mmaps, one sqe per operation, io_uring_enter. No open or connect
    // syscall is made; the kernel runs both from the ring.
    let out = agent.run_python(
        "ringer",
        &format!(
            r#"
import ctypes, mmap, os, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
u32 = ctypes.c_uint32
class Params(ctypes.Structure):
    _fields_ = [("sq_entries", u32), ("cq_entries", u32), ("flags", u32), ("sq_thread_cpu", u32),
                ("sq_thread_idle", u32), ("features", u32), ("wq_fd", u32), ("resv", u32 * 3),
                ("sq_off", u32 * 10), ("cq_off", u32 * 10)]
p = Params()
fd = libc.syscall(425, 4, ctypes.byref(p))
assert fd >= 0, ctypes.get_errno()
rw = mmap.PROT_READ | mmap.PROT_WRITE
sq = mmap.mmap(fd, p.sq_off[6] + p.sq_entries * 4, mmap.MAP_SHARED, rw, offset=0)
cq = mmap.mmap(fd, p.cq_off[5] + p.cq_entries * 16, mmap.MAP_SHARED, rw, offset=0x8000000)
sqes = mmap.mmap(fd, p.sq_entries * 64, mmap.MAP_SHARED, rw, offset=0x10000000)
def u32_at(m, off): return struct.unpack_from("=I", m, off)[0]
def submit(opcode, sfd, addr, length, off, op_flags, user_data):
    tail = u32_at(sq, p.sq_off[1])
    idx = tail & u32_at(sq, p.sq_off[2])
    struct.pack_into("=BBHiQQIIQHHiQQ", sqes, idx * 64, opcode, 0, 0, sfd, off, addr, length, op_flags,
                     user_data, 0, 0, 0, 0, 0)
    struct.pack_into("=I", sq, p.sq_off[6] + idx * 4, idx)
    struct.pack_into("=I", sq, p.sq_off[1], tail + 1)
    assert libc.syscall(426, fd, 1, 1, 1, None, 0) == 1, ctypes.get_errno()
    head = u32_at(cq, p.cq_off[0])
    ud, res, _ = struct.unpack_from("=QiI", cq, p.cq_off[5] + (head & u32_at(cq, p.cq_off[2])) * 16)
    struct.pack_into("=I", cq, p.cq_off[0], head + 1)
    assert ud == user_data
    return res
path = ctypes.create_string_buffer(b"/etc/hostname")
opened = submit(18, -100, ctypes.addressof(path), 0, 0, os.O_RDONLY, 0x1234)
assert opened >= 0, opened
s = socket.socket()
sa = ctypes.create_string_buffer(struct.pack("=H2s4s8x", socket.AF_INET, struct.pack("!H", {port}),
                                             socket.inet_aton("127.0.0.1")), 16)
connected = submit(16, s.fileno(), ctypes.addressof(sa), 0, 16, 0, 0x5678)
assert connected == 0, connected
print(s.fileno())
"#
        ),
    );
    drop(listener);
    let sock_fd: i64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the socket's fd");
    let ev = agent.server_events("ringer");
    let ops: Vec<&Value> = ev
        .iter()
        .filter(|e| e["kind"] == "risky" && e["op"] == "io_uring_op")
        .collect();
    let op = |name: &str| {
        ops.iter()
            .find(|e| e["opcode"] == name)
            .unwrap_or_else(|| panic!("no io_uring {name}: {}", dump(&ev)))
    };
    let open = op("openat");
    assert!(open.get("fd").is_none(), "an openat acts on no descriptor: {open}");
    assert_eq!(open["user_data"], 0x1234, "{open}");
    assert_eq!(open["risk"], "io_uring", "{open}");
    let connect = op("connect");
    assert_eq!(connect["fd"], sock_fd, "{connect}");
    assert_eq!(connect["user_data"], 0x5678, "{connect}");
    // Neither went through a syscall the hooks follow.
    assert!(
        !ev.iter().any(|e| e["kind"] == "net" && e["op"] == "connect"),
        "{}",
        dump(&ev)
    );
    // One alert per process and opcode.
    let ev = agent.wait_events("the io_uring_op alerts", |ev| {
        alerts(ev, Some("ringer"))
            .iter()
            .filter(|a| a["rule"] == "evasion.io_uring_op")
            .count()
            >= 2
    });
    let ring_alerts: Vec<&Value> = alerts(&ev, Some("ringer"))
        .into_iter()
        .filter(|a| a["rule"] == "evasion.io_uring_op")
        .collect();
    assert_eq!(ring_alerts.len(), 2, "{}", dump(&ev));
    assert!(
        ring_alerts
            .iter()
            .any(|a| a["summary"].as_str().unwrap().contains("openat"))
    );
    assert!(
        ring_alerts
            .iter()
            .any(|a| a["summary"].as_str().unwrap().contains("connect"))
    );
    assert!(agent.stop().success());
}
