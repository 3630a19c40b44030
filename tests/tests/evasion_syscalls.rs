//! Evasion through syscalls the probes did not follow: ia32 calls made
//! with `int 0x80` from a 64-bit process, sendmmsg, recvmmsg,
//! open_by_handle_at, pidfd_getfd, and operations submitted through an
//! io_uring instead of a syscall. Each is a real C program (tests/c/) run as
//! a watched server.

use std::{
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
};

use mcpwatch_tests::{fixtures::dns_stub, *};
use serde_json::Value;

/// Compiles tests/c/`name`.c into the scratch directory `dir`.
fn cc(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let src = repo().join("tests/c").join(format!("{name}.c"));
    let bin = dir.join(name);
    let out = output(Command::new("gcc").args(flags).arg("-O1").arg("-o").arg(&bin).arg(&src));
    assert!(
        out.status.success(),
        "gcc {name}.c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// A file with something to steal in it.
fn secret(dir: &Path) -> String {
    let p = dir.join("token.txt");
    std::fs::write(&p, "ghp_secret\n").unwrap();
    p.to_str().unwrap().to_owned()
}

/// Runs `cmd` wrapped as `server`, asserts it succeeded, returns its stdout
/// and the server's events.
fn run(agent: &Agent, server: &str, cmd: &[&str]) -> (String, Vec<Value>) {
    let out = output(&mut agent.wrap(server, cmd));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{server}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    (stdout, agent.server_events(server))
}

#[test]
fn ia32_open_and_socketcall_connect_are_reported_as_compat_syscalls() {
    let dir = scratch_dir("evasion-compat-prog");
    // -no-pie: the program's static buffers lie below 4 GiB, where ia32
    // pointers reach.
    let bin = cc(&dir, "compat", &["-no-pie"]);
    let token = secret(&dir);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let agent = Agent::start("evasion-compat", &[]);
    let (stdout, ev) = run(&agent, "compat", &[bin.to_str().unwrap(), &token, &port]);
    let pid: u32 = stdout.split_whitespace().next().unwrap().parse().unwrap();
    // ia32 open (5) is fstat on x86_64: it must be named from the ia32 table.
    let open = find(&ev, "risky", |e| e["op"] == "compat_syscall" && e["syscall"] == "open");
    assert_eq!(
        (open["path"].as_str(), open["pid"].as_u64()),
        (Some(token.as_str()), Some(pid as u64))
    );
    assert_eq!(open["risk"], "compat_syscall");
    // Where the socketcall connect (arguments behind a pointer) and the
    // direct ia32 connect (arguments in registers) went.
    let port: u64 = port.parse().unwrap();
    for (syscall, to) in [("socketcall", port), ("connect", port + 1)] {
        let c = find(&ev, "risky", |e| {
            e["op"] == "compat_syscall" && e["syscall"] == syscall && e["addr"].is_string()
        });
        assert_eq!(
            (c["addr"].as_str(), c["port"].as_u64(), c["family"].as_str()),
            (Some("127.0.0.1"), Some(to), Some("inet")),
            "{syscall}"
        );
    }
    assert!(
        !ev.iter().any(|e| e["syscall"] == "fstat" || e["syscall"] == "getuid"),
        "an ia32 number read as an x86_64 one:\n{}",
        dump(&ev)
    );
    // One alert for the process, however many ia32 calls it made.
    let alerts: Vec<&Value> = alerts(&ev, Some("compat"))
        .into_iter()
        .filter(|a| a["rule"] == "evasion.compat_syscall")
        .collect();
    assert_eq!(alerts.len(), 1, "{}", dump(&ev));
    assert_eq!(alerts[0]["severity"], "high");
    assert_eq!(alerts[0]["evidence"]["ia32_name"], "open");
    assert_eq!(alerts[0]["pid"], pid);
    assert!(agent.stop().success());
}

#[test]
fn sendmmsg_reports_its_destination() {
    let dir = scratch_dir("evasion-sendmmsg-prog");
    let bin = cc(&dir, "evade", &[]);
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sink.local_addr().unwrap().port();
    let agent = Agent::start("evasion-sendmmsg", &[]);
    let (_, ev) = run(
        &agent,
        "sendmmsg",
        &[bin.to_str().unwrap(), "sendmmsg", &port.to_string()],
    );
    let send = find(&ev, "net", |e| e["syscall"] == "sendmmsg");
    assert_eq!(
        (
            send["op"].as_str(),
            send["addr"].as_str(),
            send["port"].as_u64(),
            send["proto"].as_str()
        ),
        (Some("sendto"), Some("127.0.0.1"), Some(port as u64), Some("udp"))
    );
    assert_eq!(send["result"], 2, "two messages sent");
    assert!(agent.stop().success());
}

#[test]
fn open_by_handle_at_reports_the_file_opened() {
    let dir = scratch_dir("evasion-handle-prog");
    let bin = cc(&dir, "evade", &[]);
    let token = secret(&dir);
    let agent = Agent::start("evasion-handle", &[]);
    let (_, ev) = run(
        &agent,
        "handle",
        &[bin.to_str().unwrap(), "handle", &token, dir.to_str().unwrap()],
    );
    let open = find(&ev, "file", |e| e["syscall"] == "open_by_handle_at");
    assert_eq!(
        (
            open["op"].as_str(),
            open["path"].as_str(),
            open["path_resolved"].as_bool()
        ),
        (Some("open"), Some(token.as_str()), Some(true))
    );
    assert!(open["result"].as_i64().unwrap() >= 0);
    assert!(agent.stop().success());
}

#[test]
fn pidfd_getfd_reports_the_target_process_and_the_stolen_file() {
    let dir = scratch_dir("evasion-getfd-prog");
    let bin = cc(&dir, "evade", &[]);
    let token = secret(&dir);
    let agent = Agent::start("evasion-getfd", &[]);
    let (stdout, ev) = run(&agent, "getfd", &[bin.to_str().unwrap(), "getfd", &token]);
    let child: u64 = stdout.split_whitespace().next().unwrap().parse().unwrap();
    let steal = find(&ev, "risky", |e| e["op"] == "pidfd_getfd");
    assert_eq!(
        (
            steal["target_pid"].as_u64(),
            steal["path"].as_str(),
            steal["risk"].as_str()
        ),
        (Some(child), Some(token.as_str()), Some("descriptor_theft"))
    );
    let alert = alerts(&ev, Some("getfd"))
        .into_iter()
        .find(|a| a["rule"] == "proc.fd_steal")
        .unwrap_or_else(|| panic!("no proc.fd_steal alert:\n{}", dump(&ev)));
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["evidence"]["target_pid"].as_u64(), Some(child));
    assert!(alert["summary"].as_str().unwrap().contains(&format!("pid {child}")));
    assert!(agent.stop().success());
}

#[test]
fn a_dns_answer_received_with_recvmmsg_names_the_connect_that_follows() {
    let dir = scratch_dir("evasion-recvmmsg-prog");
    let bin = cc(&dir, "evade", &[]);
    let stub = dns_stub();
    let agent = Agent::start("evasion-recvmmsg", &[]);
    let (stdout, ev) = run(
        &agent,
        "recvmmsg",
        &[bin.to_str().unwrap(), "recvmmsg", "mmsg.example.test"],
    );
    stub.join().unwrap();
    assert!(stdout.starts_with("127.0.0.77 "), "{stdout}");
    let answer = find(&ev, "dns", |e| e["syscall"] == "recvmmsg");
    assert_eq!(answer["dns"]["name"], "mmsg.example.test", "{answer}");
    let connect = find(&ev, "net", |e| e["op"] == "connect" && e["addr"] == "127.0.0.77");
    assert_eq!(connect["hostname"], "mmsg.example.test", "{}", dump(&ev));
    assert!(agent.stop().success());
}

#[test]
fn io_uring_operations_report_the_path_and_address_they_name_and_are_judged() {
    let dir = scratch_dir("evasion-ring-prog");
    let bin = cc(&dir, "ring", &[]);
    std::fs::create_dir_all(dir.join(".ssh")).unwrap();
    let key = dir.join(".ssh/id_rsa");
    std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n").unwrap();
    let key = key.to_str().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = sink.local_addr().unwrap().port();
    let agent = Agent::start("evasion-ring", &[]);
    // The key is opened relative to a directory descriptor: the path is the
    // kernel's copy, joined to the directory resolved in the kernel.
    let (stdout, ev) = run(
        &agent,
        "ringer",
        &[
            bin.to_str().unwrap(),
            dir.to_str().unwrap(),
            ".ssh/id_rsa",
            &port.to_string(),
            &udp_port.to_string(),
        ],
    );
    assert!(stdout.contains("connect=0"), "{stdout}");
    let op = |name: &str| find(&ev, "risky", |e| e["op"] == "io_uring_op" && e["opcode"] == name);
    let open = op("openat");
    assert_eq!(
        (
            open["path"].as_str(),
            open["path_as_given"].as_str(),
            open["user_data"].as_u64()
        ),
        (Some(key), Some(".ssh/id_rsa"), Some(0x1234)),
        "{open}"
    );
    assert_eq!(open["access"], serde_json::json!(["read"]), "{open}");
    let connect = op("connect");
    assert_eq!(
        (
            connect["addr"].as_str(),
            connect["port"].as_u64(),
            connect["proto"].as_str(),
            connect["family"].as_str(),
            connect["user_data"].as_u64()
        ),
        (
            Some("127.0.0.1"),
            Some(port as u64),
            Some("tcp"),
            Some("inet"),
            Some(0x5678)
        ),
        "{connect}"
    );
    let send = op("sendmsg");
    assert_eq!(
        (send["addr"].as_str(), send["port"].as_u64(), send["proto"].as_str()),
        (Some("127.0.0.1"), Some(udp_port as u64), Some("udp")),
        "{send}"
    );
    // No syscall made any of them.
    assert!(
        !ev.iter()
            .any(|e| (e["kind"] == "file" && e["path"] == key) || (e["kind"] == "net" && e["port"] == port)),
        "{}",
        dump(&ev)
    );
    // Judged like the syscalls: the key is a credential, the port undeclared.
    let ev = agent.wait_events("the credential and network alerts", |ev| {
        let a = alerts(ev, Some("ringer"));
        a.iter().any(|a| a["rule"] == "cred.ssh") && a.iter().any(|a| a["rule"] == "net.connect_undeclared")
    });
    let a = alerts(&ev, Some("ringer"));
    let cred = a.iter().find(|a| a["rule"] == "cred.ssh").unwrap();
    assert_eq!(
        (cred["evidence"]["path"].as_str(), cred["evidence"]["via"].as_str()),
        (Some(key), Some("io_uring")),
        "{cred}"
    );
    let net = a
        .iter()
        .find(|a| a["rule"] == "net.connect_undeclared" && a["evidence"]["port"] == port)
        .unwrap_or_else(|| panic!("no alert for the ring's connect:\n{}", dump(&ev)));
    assert_eq!(
        (net["evidence"]["address"].as_str(), net["evidence"]["via"].as_str()),
        (Some("127.0.0.1"), Some("io_uring")),
        "{net}"
    );
    assert!(agent.stop().success());
}
