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
/// 127.0.0.77 (TTL 60), anything else with no answer, and never answers a
/// name under `down.`; counts the queries it saw. The tests cannot reach
/// the internet.
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
            let name = labels.join(".");
            names.lock().unwrap().push(name.clone());
            if name.starts_with("down.") {
                // An upstream that never answers this name.
                continue;
            }
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
        "network": {"outbound": {"allow_host": [
            format!("127.0.0.1:{open}"),
            format!("api.allowed.test:{named}"),
            format!("down.allowed.test:{named}"),
        ]}}
    })
}

/// Runs the probe program as `server` with `ops`; its results in order and
/// the server's events once it exited.
fn run(agent: &Agent, server: &str, bin: &str, ops: &[String]) -> (Vec<String>, Vec<Value>) {
    let mut args = vec![bin];
    args.extend(ops.iter().map(String::as_str));
    // One try per lookup: the upstream that never answers costs one
    // forward timeout, not glibc's two.
    let out = output(agent.wrap(server, &args).env("RES_OPTIONS", "attempts:1"));
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
        "resolve,down.allowed.test".to_owned(),
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
    assert!(get(9).starts_with("gai"), "the upstream never answered: {r:?}");
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
    // The monitor agrees with the kernel: the query steered to the agent's
    // resolver and the connect to the address it answered for a declared
    // name are no undeclared connects.
    let undeclared = by_rule(&ev, "net", "net.connect_undeclared");
    assert!(
        !undeclared
            .iter()
            .any(|a| a["evidence"]["proto"] == "udp" || a["evidence"]["address"] == "127.0.0.77"),
        "{}",
        dump(&ev)
    );
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
    // The resolver's counters: one name answered (its address allowed), one
    // refused, one the upstream never answered.
    for line in [
        r#"mcpwatch_resolver_queries_total{outcome="answered",server="net"} 1"#,
        r#"mcpwatch_resolver_queries_total{outcome="refused",server="net"} 1"#,
        r#"mcpwatch_resolver_queries_total{outcome="upstream_failed",server="net"} 1"#,
        r#"mcpwatch_resolver_addresses_allowed_total{server="net"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    assert!(agent.stop().success());
}

/// The complete `ARG=RESULT` lines `path` holds so far.
fn results_in(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    complete
        .lines()
        .filter_map(|l| l.rsplit_once('=').map(|(_, v)| v.to_owned()))
        .collect()
}

fn wait_results(path: &Path, n: usize) -> Vec<String> {
    wait_for(
        "the probe's results",
        PATIENCE,
        || Some(results_in(path)).filter(|r| r.len() >= n),
        || format!("{:?}", results_in(path)),
    )
}

#[test]
fn an_enforced_servers_allowlist_holds_while_the_agent_restarts_and_the_next_agent_takes_it_over() {
    let (upstream, seen) = upstream_stub();
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let named = TcpListener::bind("127.0.0.77:0").unwrap();
    let (p_open, p_closed, p_named) = (
        open.local_addr().unwrap().port(),
        closed.local_addr().unwrap().port(),
        named.local_addr().unwrap().port(),
    );
    let d = manifest_dir(
        "enf-net-restart",
        "netkeep",
        net_manifest("netkeep", "enforce", p_open, p_named),
    );
    let dir = scratch_dir("enf-net-restart");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!("[enforce]\ndns_upstream = \"{upstream}\"\n[metrics]\naddress = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let (config, m) = (config.to_string_lossy().into_owned(), d.to_string_lossy().into_owned());
    let args = ["--config", config.as_str(), "--manifests", &m, "--no-user-host-configs"];
    let agent = Agent::start_in("enf-net-restart", dir.clone(), &args);
    let bin = cc(&scratch_dir("enf-net-restart-prog"), "netprobe");
    let (go, go2) = (dir.join("go"), dir.join("go2"));
    let phase = [
        format!("tcp,127.0.0.1,{p_open}"),
        format!("tcp,127.0.0.1,{p_closed}"),
        format!("tcp,127.0.0.77,{p_named}"),
    ];
    let mut ops = vec!["resolve,api.allowed.test".to_owned()];
    ops.extend(phase.iter().cloned());
    ops.push(format!("wait,{}", go.display()));
    ops.extend(phase.iter().cloned());
    ops.push(format!("wait,{}", go2.display()));
    ops.extend(phase.iter().cloned());
    ops.push("resolve,api.allowed.test".to_owned());
    ops.push("resolve,evil.other.test".to_owned());
    let out = dir.join("probe.out");
    let mut cmd = vec![bin.as_str()];
    cmd.extend(ops.iter().map(String::as_str));
    let server = agent
        .wrap("netkeep", &cmd)
        .env("RES_OPTIONS", "attempts:1")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Reaped(server);
    let r = wait_results(&out, 4);
    assert_eq!(
        r[..4],
        ["127.0.0.77", "0", "-1", "0"][..],
        "under the first agent: {r:?}"
    );
    let target = format!("127.0.0.1:{p_closed}");
    let denials = |ev: &[Value]| {
        by_rule(ev, "netkeep", "enforce.denied")
            .iter()
            .filter(|a| a["evidence"]["target"] == target.as_str())
            .count()
    };
    agent.wait_events("the first agent's denial", |ev| denials(ev) == 1);

    // No agent: the kept programs and maps keep the allowlist as it was,
    // the resolver's address included.
    agent.kill9();
    std::fs::write(&go, "").unwrap();
    let r = wait_results(&out, 8);
    assert_eq!(
        r[4..8],
        ["0", "0", "-1", "0"][..],
        "while no agent runs, nothing opens or closes: {r:?}"
    );

    let agent = Agent::start_in("enf-net-restart", dir.clone(), &args);
    assert!(
        agent.log().contains("netkeep: took over its network allowlist"),
        "{}",
        agent.log()
    );
    std::fs::write(&go2, "").unwrap();
    let r = wait_results(&out, 14);
    assert_eq!(
        r[8..13],
        ["0", "0", "-1", "0", "127.0.0.77"][..],
        "under the next agent: {r:?}"
    );
    assert!(r[13].starts_with("gai"), "an undeclared name is still refused: {r:?}");
    assert!(server.0.wait().unwrap().success());
    let asked = seen.lock().unwrap().clone();
    assert_eq!(
        asked.iter().filter(|n| *n == "api.allowed.test").count(),
        2,
        "the next agent's resolver forwarded the declared name: {asked:?}"
    );
    // The next agent judges the server by the sandbox it took over: the
    // refusals while no agent ran and after are its denials too.
    let ev = agent.wait_events("the next agent's denial", |ev| denials(ev) >= 2);
    let denied = by_rule(&ev, "netkeep", "enforce.denied");
    assert!(denied.iter().all(|a| a["layer"] == "cgroup"), "{}", dump(&ev));
    let metrics = http_get(&agent.metrics_address(), "/metrics").unwrap().1;
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"mcpwatch_resolver_queries_total{outcome="answered",server="netkeep"} 1"#),
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
