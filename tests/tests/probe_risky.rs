//! The risky-syscall probes: io_uring, ptrace, process_vm_readv, another
//! process's /proc files, credential changes. A real process under a real
//! agent.

use mcpwatch_tests::*;

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
