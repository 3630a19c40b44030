//! Lies told to the agent through DNS: a server controls what it sends, so a
//! forged "answer" it sends to port 53 must not name the hosts it connects to.

use mcpwatch_tests::{fixtures::*, *};

#[test]
fn a_forged_answer_the_server_sends_names_no_host_but_a_real_answer_does() {
    let stub = dns_stub();
    let agent = Agent::start("evasion-dns", &[]);
    agent.run_python(
        "liar",
        r#"
import socket, struct
def msg(id, flags, name, answer=None):
    m = struct.pack(">HHHHHH", id, flags, 1, 1 if answer else 0, 0, 0)
    for l in name.split(b"."): m += bytes([len(l)]) + l
    m += b"\0" + struct.pack(">HH", 1, 1)
    if answer: m += bytes([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]) + bytes(answer)
    return m
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
# The lie: an "answer" the server itself sends, naming a trusted host.
u.sendto(msg(0x5151, 0x8180, b"api.github.com", [127, 0, 0, 88]), ("127.0.0.1", 53))
s = socket.socket()
try: s.connect(("127.0.0.88", 443))
except OSError: pass
# The truth: a query and the resolver's answer on the same socket.
u.sendto(msg(0x4242, 0x0100, b"real.example.test"), ("127.0.0.53", 53)); u.recvfrom(512)
s = socket.socket()
try: s.connect(("127.0.0.77", 443))
except OSError: pass
"#,
    );
    stub.join().unwrap();
    let ev = agent.server_events("liar");
    // The forged message is seen (as what the server sent) ...
    let forged = find(&ev, "dns", |e| e["dns"]["name"] == "api.github.com");
    assert_eq!(forged["dns"]["direction"], "query", "sent, not received");
    // ... but teaches nothing: the connect is judged by its address alone.
    let lied_to = find(&ev, "net", |e| e["op"] == "connect" && e["addr"] == "127.0.0.88");
    assert!(
        lied_to.get("hostname").is_none_or(|h| h.is_null()),
        "a forged answer named the host: {lied_to}"
    );
    let real = find(&ev, "net", |e| e["op"] == "connect" && e["addr"] == "127.0.0.77");
    assert_eq!(real["hostname"], "real.example.test");
    assert!(agent.stop().success());
}
