//! Kernel visibility: one test per event kind and per trick. Each runs a real
//! process under a real agent and checks the decoded fields.

use mcpwatch_tests::*;
use serde_json::Value;

fn path_is(e: &Value, p: &str) -> bool {
    e["path"] == p
}

/// A scratch tree: dir/secret, dir/link -> secret, dir/sub/.
fn tree(name: &str) -> std::path::PathBuf {
    let d = scratch_dir(name);
    std::fs::write(d.join("secret"), "s3cret").unwrap();
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::os::unix::fs::symlink(d.join("secret"), d.join("link")).unwrap();
    d
}

#[test]
fn file_paths_resolve_through_every_trick() {
    let d = tree("paths-tree");
    let dd = d.display();
    let agent = Agent::start("paths", &[]);
    agent.run_python(
        "files",
        &format!(
            r#"
import os
os.chdir("{dd}/sub")
fd = os.open("{dd}", os.O_RDONLY)
os.close(os.open("secret", os.O_RDONLY, dir_fd=fd))            # relative to a dirfd
open("../link").read()                                           # symlink to the secret, via ..
open("/proc/self/cwd/../secret").read()                          # /proc/self/cwd trick
open("/proc/self/root{dd}/secret").read()                        # /proc/self/root trick
try: open("../missing-file")                                     # failed relative open
except FileNotFoundError: pass
with open("{dd}/new", "w") as f: f.write("x")                    # create + write
os.rename("{dd}/new", "{dd}/secret")                             # rename over a file
os.mkdir("{dd}/made"); os.chmod("{dd}/made", 0o700); os.rmdir("{dd}/made")
os.symlink("{dd}/secret", "{dd}/link2"); os.unlink("{dd}/link2")
"#
        ),
    );
    let ev = agent.server_events("files");
    let secret = format!("{dd}/secret");
    let opens: Vec<&Value> = ev
        .iter()
        .filter(|e| e["kind"] == "file" && e["op"] == "open" && path_is(e, &secret))
        .collect();
    let given: Vec<&str> = opens.iter().map(|e| e["path_as_given"].as_str().unwrap()).collect();
    for g in [
        "secret",
        "../link",
        "/proc/self/cwd/../secret",
        &format!("/proc/self/root{dd}/secret"),
    ] {
        assert!(
            given.contains(&g),
            "{g} not resolved to {secret}: {given:?}\n{}",
            dump(&ev)
        );
    }
    assert!(
        opens
            .iter()
            .all(|e| e["path_resolved"] == true && e["result"].as_i64().unwrap() >= 0)
    );
    let missing = find(&ev, "file", |e| e["path_as_given"] == "../missing-file");
    assert_eq!(missing["path"], format!("{dd}/missing-file"));
    assert_eq!(missing["error"], "ENOENT");
    assert_eq!(missing["path_resolved"], false);
    let created = find(&ev, "file", |e| e["op"] == "open" && path_is(e, &format!("{dd}/new")));
    let access: Vec<&str> = created["access"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        access.contains(&"write") && access.contains(&"create") && access.contains(&"truncate"),
        "{access:?}"
    );
    let rename = find(&ev, "file", |e| e["op"] == "rename");
    assert_eq!(rename["path"], format!("{dd}/new"));
    assert_eq!(rename["path2"], secret);
    assert_eq!(rename["result"], 0);
    for op in ["mkdir", "chmod", "rmdir", "symlink", "unlink"] {
        let e = find(&ev, "file", |e| e["op"] == op);
        assert!(e["path"].as_str().unwrap().starts_with(&dd.to_string()), "{e}");
    }
    assert_eq!(find(&ev, "file", |e| e["op"] == "symlink")["path2"], secret);
    assert!(agent.stop().success());
}

#[test]
fn network_connects_sends_and_listens() {
    let agent = Agent::start("net", &[]);
    let sock_path = scratch_dir("net-unix").join("s.sock");
    let sp = sock_path.display();
    agent.run_python(
        "net",
        &format!(
            r#"
import socket
srv = socket.socket(socket.AF_UNIX); srv.bind("{sp}"); srv.listen()
c = socket.socket(socket.AF_UNIX); c.connect("{sp}")
for fam, addr in [(socket.AF_INET6, ("::1", 1)), (socket.AF_INET6, ("::ffff:127.0.0.1", 2))]:
    s = socket.socket(fam)
    try: s.connect(addr)
    except OSError: pass
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b"x", ("127.0.0.1", 9))
l = socket.socket(); l.bind(("0.0.0.0", 0)); l.listen()
lo = socket.socket(); lo.bind(("127.0.0.1", 0)); lo.listen()
a = socket.socket(); a.connect(lo.getsockname()); conn, _ = lo.accept()
"#
        ),
    );
    let ev = agent.server_events("net");
    let v6 = find(&ev, "net", |e| e["op"] == "connect" && e["port"] == 1);
    assert_eq!(
        (v6["family"].as_str(), v6["addr"].as_str(), v6["proto"].as_str()),
        (Some("inet6"), Some("::1"), Some("tcp"))
    );
    assert_eq!(v6["error"], "ECONNREFUSED");
    let mapped = find(&ev, "net", |e| e["op"] == "connect" && e["port"] == 2);
    assert_eq!(mapped["addr"], "127.0.0.1", "IPv4-mapped normalised");
    let udp = find(&ev, "net", |e| e["op"] == "sendto");
    assert_eq!(
        (udp["proto"].as_str(), udp["addr"].as_str(), udp["port"].as_u64()),
        (Some("udp"), Some("127.0.0.1"), Some(9))
    );
    let unix = find(&ev, "net", |e| e["op"] == "connect" && e["family"] == "unix");
    assert_eq!(unix["unix_path"], sp.to_string());
    assert_eq!(unix["proto"], "stream");
    let exposed = find(&ev, "exposed", |_| true);
    assert_eq!(exposed["addr"], "0.0.0.0");
    let lo_listen = find(&ev, "net", |e| e["op"] == "listen" && e["addr"] == "127.0.0.1");
    assert_eq!(lo_listen["exposed"], false);
    assert_eq!(
        ev.iter().filter(|e| e["kind"] == "exposed").count(),
        1,
        "only the wildcard listen is exposed"
    );
    let accept = find(&ev, "net", |e| e["op"] == "accept");
    assert_eq!(accept["addr"], "127.0.0.1");
    assert_eq!(accept["local_port"], lo_listen["port"]);
    assert!(agent.stop().success());
}

/// A DNS stub on 127.0.0.53:53 answering every A query with 127.0.0.77.
fn dns_stub() -> std::thread::JoinHandle<()> {
    let sock = std::net::UdpSocket::bind("127.0.0.53:53").expect("bind the stub resolver on port 53 (root)");
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            return;
        };
        let q = &buf[..n];
        let mut r = q.to_vec();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 1; // one answer
        r.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 77]);
        let _ = sock.send_to(&r, from);
    })
}

#[test]
fn dns_answers_name_the_hosts_of_later_connects() {
    let stub = dns_stub();
    let agent = Agent::start("dns", &[]);
    agent.run_python(
        "dns",
        r#"
import socket, struct
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
for l in b"exfil.attacker.test".split(b"."): q += bytes([len(l)]) + l
q += b"\0" + struct.pack(">HH", 1, 1)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
u.sendto(q, ("127.0.0.53", 53)); u.recvfrom(512)
s = socket.socket()
try: s.connect(("127.0.0.77", 443))
except OSError: pass
"#,
    );
    stub.join().unwrap();
    let ev = agent.server_events("dns");
    let query = find(&ev, "dns", |e| e["dns"]["direction"] == "query");
    assert_eq!(query["dns"]["name"], "exfil.attacker.test");
    assert_eq!(query["dns"]["qtype"], "A");
    assert_eq!(
        (query["addr"].as_str(), query["port"].as_u64()),
        (Some("127.0.0.53"), Some(53))
    );
    let answer = find(&ev, "dns", |e| e["dns"]["direction"] == "answer");
    assert_eq!(answer["dns"]["answers"], serde_json::json!(["127.0.0.77"]));
    let connect = find(&ev, "net", |e| e["op"] == "connect" && e["addr"] == "127.0.0.77");
    assert_eq!(connect["hostname"], "exfil.attacker.test");
    assert!(agent.stop().success());
}

#[test]
fn reverse_shell_shaped_exec_shows_socket_stdio() {
    let agent = Agent::start("revshell", &[]);
    agent.run_python(
        "revshell",
        r#"
import os, socket
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen()
s = socket.socket(); s.connect(l.getsockname()); peer, _ = l.accept()
pid = os.fork()
if pid == 0:
    for fd in (0, 1, 2): os.dup2(s.fileno(), fd)
    os.execv("/bin/sh", ["sh", "-c", "exit 0"])
os.waitpid(pid, 0)
"#,
    );
    let ev = agent.server_events("revshell");
    let sh = find(&ev, "exec", |e| e["argv"][0] == "sh");
    assert_eq!(sh["stdio"], serde_json::json!(["socket", "socket", "socket"]));
    assert!(sh["cwd"].as_str().is_some_and(|c| c.starts_with('/')));
    let py = find(&ev, "exec", |e| e["argv"][0] != "sh");
    assert_ne!(py["stdio"][0], "socket");
    assert!(agent.stop().success());
}

#[test]
fn fileless_memfd_exec_is_flagged() {
    let agent = Agent::start("memfd", &[]);
    agent.run_python(
        "memfd",
        r#"
import os
fd = os.memfd_create("payload")
os.write(fd, open("/bin/true", "rb").read())
pid = os.fork()
if pid == 0:
    os.execve(fd, ["payload"], {})
os.waitpid(pid, 0)
"#,
    );
    let ev = agent.server_events("memfd");
    let e = find(&ev, "exec", |e| e["argv"][0] == "payload");
    assert_eq!(e["fileless"], true, "{e}");
    assert!(e["exe"].as_str().unwrap().starts_with("/memfd:payload"), "{e}");
    let py = find(&ev, "exec", |e| e["argv"][0] != "payload");
    assert_eq!(py["fileless"], false);
    assert!(agent.stop().success());
}

#[test]
fn write_then_exec_is_flagged() {
    let d = scratch_dir("dropper");
    let dd = d.display();
    let agent = Agent::start("dropper", &[]);
    agent.run_python(
        "dropper",
        &format!(
            r##"
import os, subprocess
p = "{dd}/stage2.sh"
with open(p, "w") as f: f.write("#!/bin/sh\nexit 0\n")
os.chmod(p, 0o755)
subprocess.run([p], check=True)
subprocess.run(["/bin/true"], check=True)
"##
        ),
    );
    let ev = agent.server_events("dropper");
    let stage2 = find(&ev, "exec", |e| e["filename"] == format!("{dd}/stage2.sh"));
    assert_eq!(stage2["written_then_exec"], true, "{stage2}");
    assert_eq!(stage2["interp"], "/bin/sh");
    let t = find(&ev, "exec", |e| e["filename"] == "/bin/true");
    assert_eq!(t["written_then_exec"], false);
    assert!(agent.stop().success());
}

#[test]
fn risky_operations_are_reported() {
    let agent = Agent::start("risky", &[]);
    agent.run_python(
        "risky",
        r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
libc.syscall(425, 4, params)                  # io_uring_setup
libc.syscall(101, 16, 1, 0, 0)                 # ptrace(PTRACE_ATTACH, 1)
libc.syscall(310, 1, 0, 0, 0, 0, 0)            # process_vm_readv(1, ...)
try: open("/proc/1/environ").read()
except OSError: pass
os.setgid(os.getgid())
"#,
    );
    let ev = agent.server_events("risky");
    let uring = find(&ev, "risky", |e| e["op"] == "io_uring_setup");
    assert_eq!(uring["risk"], "io_uring");
    assert!(uring["note"].as_str().unwrap().contains("bypass"));
    let ptrace = find(&ev, "risky", |e| e["op"] == "ptrace");
    assert_eq!(ptrace["target_pid"], 1);
    assert_eq!(find(&ev, "risky", |e| e["op"] == "process_vm_readv")["target_pid"], 1);
    let environ = find(&ev, "risky", |e| e["op"] == "proc_access");
    assert_eq!(
        (environ["target_pid"].as_u64(), environ["risk"].as_str()),
        (Some(1), Some("process_environment"))
    );
    assert_eq!(find(&ev, "risky", |e| e["op"] == "setid")["risk"], "credentials");
    assert!(agent.stop().success());
}

#[test]
fn ring_buffer_loss_is_counted_by_server_and_kind() {
    // A 4 KiB ring cannot hold a burst of file events: the kernel counts what
    // it drops and the agent reports it.
    let agent = Agent::start("loss", &["--ring-bytes", "4096"]);
    agent.run_python(
        "burst",
        r#"
import os
for i in range(20000):
    try: os.open("/nonexistent/%d" % i, os.O_RDONLY)
    except OSError: pass
"#,
    );
    let ev = agent.wait_events("a loss report", |ev| ev.iter().any(|e| e["kind"] == "loss"));
    let loss = find(&ev, "loss", |e| e["server"] == "burst");
    assert_eq!(loss["event_kind"], "file");
    assert!(loss["lost"].as_u64().unwrap() > 0);
    assert!(agent.status()["lost"].as_u64().unwrap() > 0);
    assert!(agent.stop().success());
}

#[test]
fn stdio_of_a_piped_server_is_captured_with_offsets() {
    let agent = Agent::start("stdio", &[]);
    let py = python();
    let mut child = agent
        .wrap(
            "stdio",
            &[
                py.to_str().unwrap(),
                "-c",
                "import sys\nfor l in sys.stdin: sys.stdout.write(l.upper())",
            ],
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let msg = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}\n".repeat(2000);
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(msg.as_bytes()).unwrap();
    }
    let out = read_stdout(&mut child);
    assert!(child.wait().unwrap().success());
    assert_eq!(out.len(), msg.len());
    let _ = agent.server_events("stdio");
    let captured = agent.status()["stdio_bytes"].as_u64().unwrap();
    assert_eq!(
        captured,
        2 * msg.len() as u64,
        "stdin read + stdout written, every byte"
    );
    assert!(agent.stop().success());
}
