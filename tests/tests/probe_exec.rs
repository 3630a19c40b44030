//! What an exec event says about the program it runs: its stdio (a reverse
//! shell's sockets), fileless (memfd) and written-then-exec. Each runs a real
//! process under a real agent and checks the decoded fields.

use mcpwatch_tests::*;

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
