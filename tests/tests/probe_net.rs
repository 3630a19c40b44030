//! The network probes: connects, sends, listens and accepts by family, and
//! DNS queries and answers naming the hosts of later connects. A real process
//! under a real agent.

use mcpwatch_tests::{fixtures::*, *};

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
