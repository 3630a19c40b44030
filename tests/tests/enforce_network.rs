//! The cgroup network allowlist on the real kernel: a server in enforce mode
//! runs in its own cgroup, where connects, datagrams and binds outside its
//! manifest's `network` fail with EPERM (the agent's `sock_addr` programs)
//! and are `enforce.denied` alerts with `layer: "cgroup"`. Declared host
//! names work through the agent's resolver, which allows the answer's
//! addresses before the server sees them. The same server in audit mode
//! connects, and its alerts say the cgroup layer would have refused.

use std::{
    net::{TcpListener, UdpSocket},
    path::Path,
    process::Command,
    time::Duration,
};

use mcpwatch_tests::*;
use serde_json::{Value, json};

/// Compiles tests/c/`name`.c into `dir`.
fn cc(dir: &Path, name: &str) -> String {
    let src = repo().join("tests/c").join(format!("{name}.c"));
    let bin = dir.join(name);
    let out = output(Command::new("gcc").arg("-O1").arg("-o").arg(&bin).arg(&src));
    assert!(out.status.success(), "gcc: {}", String::from_utf8_lossy(&out.stderr));
    bin.to_string_lossy().into_owned()
}

/// The resolver's upstream in these tests: answers every A query with
/// 127.0.0.77 (TTL 60), anything else with no answer; counts the queries
/// it saw. The tests cannot reach the internet.
fn upstream_stub() -> (std::net::SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let names = seen.clone();
    sock.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let q = &buf[..n];
            // The question: labels from byte 12, then type and class.
            let mut i = 12;
            let mut labels = Vec::new();
            while i < n && q[i] != 0 {
                let l = q[i] as usize;
                labels.push(String::from_utf8_lossy(&q[i + 1..(i + 1 + l).min(n)]).into_owned());
                i += 1 + l;
            }
            let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
            names.lock().unwrap().push(labels.join("."));
            let mut r = q[..i + 5].to_vec();
            r[2] = 0x81;
            r[3] = 0x80;
            r[6] = 0;
            r[7] = 0;
            r[8..12].fill(0);
            if qtype == 1 {
                r[7] = 1;
                r.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 77]);
            }
            let _ = sock.send_to(&r, from);
        }
    });
    (addr, seen)
}

fn manifest_dir(test: &str, name: &str, body: Value) -> std::path::PathBuf {
    let d = scratch_dir(&format!("{test}-manifests"));
    std::fs::write(d.join(format!("{name}.json")), body.to_string()).unwrap();
    d
}

/// The manifest: one declared address and port, one declared name.
fn net_manifest(name: &str, mode: &str, open: u16, named: u16) -> Value {
    json!({
        "name": name,
        "mode": mode,
        // The resolver library reads its configuration here.
        "read": ["/etc"],
        "network": {"outbound": {"allow_host": [format!("127.0.0.1:{open}"), format!("api.allowed.test:{named}")]}}
    })
}

fn by_rule<'a>(ev: &'a [Value], server: &str, rule: &str) -> Vec<&'a Value> {
    alerts(ev, Some(server))
        .into_iter()
        .filter(|a| a["rule"] == rule)
        .collect()
}

/// Runs the probe program as `server` with `ops`; its results in order and
/// the server's events once it exited.
fn run(agent: &Agent, server: &str, bin: &str, ops: &[String]) -> (Vec<String>, Vec<Value>) {
    let mut args = vec![bin];
    args.extend(ops.iter().map(String::as_str));
    let out = output(&mut agent.wrap(server, &args));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{server}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.wait_events(&format!("{server} to exit"), |ev| server_done(ev, server));
    std::thread::sleep(Duration::from_millis(300));
    let results = stdout
        .lines()
        .filter_map(|l| l.rsplit_once('=').map(|(_, v)| v.to_owned()))
        .collect();
    (results, agent.server_events(server))
}

#[test]
fn enforced_server_reaches_only_declared_addresses_and_names_resolved_by_the_agent() {
    let (upstream, seen) = upstream_stub();
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let named = TcpListener::bind("127.0.0.77:0").unwrap();
    let (p_open, p_closed, p_named) = (
        open.local_addr().unwrap().port(),
        closed.local_addr().unwrap().port(),
        named.local_addr().unwrap().port(),
    );
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let p_udp = udp.local_addr().unwrap().port();
    let d = manifest_dir("enf-net", "net", net_manifest("net", "enforce", p_open, p_named));
    let m = d.to_string_lossy().into_owned();
    let agent = Agent::start_with_config(
        "enf-net",
        &format!("[enforce]\ndns_upstream = \"{upstream}\"\n[metrics]\naddress = \"127.0.0.1:0\"\n"),
        &["--manifests", &m, "--no-user-host-configs"],
    );
    assert!(
        agent.log().contains("enforcement layer cgroup: enforced"),
        "{}",
        agent.log()
    );
    let bin = cc(&scratch_dir("enf-net-prog"), "netprobe");
    let ops = [
        format!("tcp,127.0.0.1,{p_open}"),
        format!("tcp,127.0.0.1,{p_closed}"),
        // The name's address, before the server resolved it: not allowed.
        format!("tcp,127.0.0.77,{p_named}"),
        "resolve,api.allowed.test".to_owned(),
        format!("tcp,127.0.0.77,{p_named}"),
        "resolve,evil.other.test".to_owned(),
        format!("udp,127.0.0.1,{p_udp}"),
        format!("tcp6,::ffff:127.0.0.1,{p_closed}"),
        format!("tcp6,::ffff:127.0.0.1,{p_open}"),
    ];
    let (r, ev) = run(&agent, "net", &bin, &ops);
    assert_eq!(r.len(), ops.len(), "{r:?}");
    let get = |i: usize| r[i].clone();
    assert_eq!(get(0), "0", "the declared address and port: {r:?}");
    assert_eq!(
        get(1),
        "-1",
        "an undeclared loopback port: EPERM from the kernel: {r:?}"
    );
    assert_eq!(get(2), "-1", "a name's address is allowed only once resolved: {r:?}");
    assert_eq!(
        get(3),
        "127.0.0.77",
        "the declared name resolves through the agent: {r:?}"
    );
    assert_eq!(get(4), "0", "then its address connects: {r:?}");
    assert!(get(5).starts_with("gai"), "an undeclared name is refused: {r:?}");
    assert_eq!(get(6), "-1", "an unconnected datagram to an undeclared address: {r:?}");
    assert_eq!(get(7), "-1", "IPv4-mapped IPv6 is the same address: {r:?}");
    assert_eq!(get(8), "0", "IPv4-mapped IPv6 of the declared address: {r:?}");
    assert!(
        udp.recv_from(&mut [0u8; 8]).is_err(),
        "the refused datagram never arrived"
    );
    let asked = seen.lock().unwrap().clone();
    assert!(asked.contains(&"api.allowed.test".to_owned()), "{asked:?}");
    assert!(
        !asked.iter().any(|n| n.contains("evil")),
        "an undeclared name never leaves the host: {asked:?}"
    );

    let denied = by_rule(&ev, "net", "enforce.denied");
    let target = |t: String| {
        denied
            .iter()
            .find(|a| a["evidence"]["target"] == t.as_str())
            .unwrap_or_else(|| panic!("no enforce.denied for {t}:\n{}", dump(&ev)))
            .to_owned()
    };
    let tcp = target(format!("127.0.0.1:{p_closed}"));
    assert_eq!(tcp["layer"], "cgroup", "{tcp}");
    assert_eq!(tcp["evidence"]["op"], "connect tcp", "{tcp}");
    let dgram = target(format!("127.0.0.1:{p_udp}"));
    assert_eq!(dgram["evidence"]["op"], "sendto udp", "{dgram}");
    assert!(denied.iter().all(|a| a["layer"] == "cgroup"), "{}", dump(&ev));
    let metrics = http_get(&agent.metrics_address(), "/metrics").unwrap().1;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mcpwatch_enforce_total{") && l.contains("cgroup") && l.contains("denied")),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcpwatch_enforce_layer_enforced{layer=\"cgroup\"} 1"),
        "{metrics}"
    );
    assert!(agent.stop().success());
}

#[test]
fn audit_mode_connects_and_marks_what_the_cgroup_layer_would_refuse() {
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let (p_open, p_closed) = (open.local_addr().unwrap().port(), closed.local_addr().unwrap().port());
    let d = manifest_dir(
        "enf-net-audit",
        "netaudit",
        net_manifest("netaudit", "audit", p_open, 443),
    );
    let agent = agent_with_manifests("enf-net-audit", &d);
    let bin = cc(&scratch_dir("enf-net-audit-prog"), "netprobe");
    let ops = [format!("tcp,127.0.0.1,{p_closed}")];
    let (r, ev) = run(&agent, "netaudit", &bin, &ops);
    assert_eq!(r, ["0"], "audit mode refuses nothing: {r:?}");
    assert!(by_rule(&ev, "netaudit", "enforce.denied").is_empty(), "{}", dump(&ev));
    let marked: Vec<&Value> = alerts(&ev, Some("netaudit"))
        .into_iter()
        .filter(|a| a["would_block"] == true)
        .collect();
    assert!(
        marked.iter().any(|a| a["layer"] == "cgroup"),
        "an alert for the connect marked would_block by the cgroup layer:\n{}",
        dump(&ev)
    );
    assert!(agent.stop().success());
}

fn agent_with_manifests(name: &str, d: &Path) -> Agent {
    mcpwatch_tests::policy::agent_with(name, d, &[])
}

#[test]
fn without_the_cgroup_layer_an_enforced_server_is_degraded_and_landlock_keeps_its_ports() {
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let (p_open, p_closed) = (open.local_addr().unwrap().port(), closed.local_addr().unwrap().port());
    let d = manifest_dir("enf-net-deg", "netdeg", net_manifest("netdeg", "enforce", p_open, 443));
    let m = d.to_string_lossy().into_owned();
    let agent = Agent::start_with_config(
        "enf-net-deg",
        "[enforce]\nsimulate_missing = [\"cgroup\"]\n",
        &["--manifests", &m, "--no-user-host-configs"],
    );
    let bin = cc(&scratch_dir("enf-net-deg-prog"), "netprobe");
    let ops = [format!("tcp,127.0.0.1,{p_open}"), format!("tcp,127.0.0.1,{p_closed}")];
    let (r, ev) = run(&agent, "netdeg", &bin, &ops);
    // EACCES: Landlock's port rule, not the cgroup's EPERM.
    assert_eq!(r, ["0", "-13"], "{r:?}");
    let deg = by_rule(&ev, "netdeg", "enforce.degraded");
    assert_eq!(deg.len(), 1, "{}", dump(&ev));
    assert_eq!(deg[0]["evidence"]["missing"], json!(["cgroup"]));
    assert!(agent.stop().success());
}
