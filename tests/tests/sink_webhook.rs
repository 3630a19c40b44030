//! Webhook delivery through an outage: an HTTP receiver on loopback is
//! stopped mid-run, alerts keep coming (and wait in the spool, across an
//! agent restart), the receiver comes back and gets every alert exactly
//! once, in order, on both a generic JSON and a Splunk HEC sink. And HTTPS
//! with a private CA (a certificate made by the test with rcgen).

use std::{
    io::{BufRead as _, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use mcpwatch::output::format::ecs;
use mcpwatch_tests::*;
use serde_json::Value;

#[derive(Clone, Debug)]
struct Received {
    path: String,
    auth: Option<String>,
    body: Vec<u8>,
}

/// An HTTP/1.1 server on loopback that records each POST and answers 200.
struct Receiver {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn handle<S: Read + Write>(mut stream: S) -> std::io::Result<Received> {
    let mut r = BufReader::new(&mut stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
    let (mut len, mut auth) = (0usize, None);
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "authorization" => auth = Some(v.trim().to_owned()),
                _ => {}
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    drop(r);
    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")?;
    stream.flush()?;
    Ok(Received { path, auth, body })
}

/// One connection, in TLS when the receiver has a server config.
fn serve(conn: TcpStream, tls: Option<&Arc<rustls::ServerConfig>>) -> std::io::Result<Received> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    match tls {
        None => handle(conn),
        Some(cfg) => {
            let session = rustls::ServerConnection::new(cfg.clone()).map_err(std::io::Error::other)?;
            let mut stream = rustls::StreamOwned::new(session, conn);
            let got = handle(&mut stream)?;
            stream.conn.send_close_notify();
            let _ = stream.flush();
            Ok(got)
        }
    }
}

impl Receiver {
    fn start(port: u16, got: Arc<Mutex<Vec<Received>>>) -> Receiver {
        Self::start_tls(port, got, None)
    }

    fn start_tls(port: u16, got: Arc<Mutex<Vec<Received>>>, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("receiver port");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(req) = serve(conn, tls.as_ref()) {
                    g.lock().unwrap().push(req);
                }
            }
        });
        Receiver {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the listening socket: connections are refused from now on.
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            t.join().expect("receiver thread");
        }
    }
}

/// Alert ids received on `path`, in arrival order.
fn ids(got: &Mutex<Vec<Received>>, path: &str) -> Vec<String> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).expect("JSON body");
            let doc = if path == "/hook" { v } else { v["event"].clone() };
            ecs::from_ecs(&doc).expect("an ECS alert").id
        })
        .collect()
}

fn metric(agent: &Agent, series: &str) -> f64 {
    let (_, text) = http_get(&agent.metrics_address(), "/metrics").expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[test]
fn receiver_outage_and_agent_restart_lose_nothing_and_duplicate_nothing() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let receiver = Receiver::start(0, got.clone());
    let port = receiver.port;
    let spool = scratch_dir("webhook-spool");
    let token = spool.join("hec.token");
    std::fs::write(&token, "Splunk 0000-test-token\n").unwrap();
    let config = format!(
        "spool_dir = \"{spool}\"\n[metrics]\naddress = \"127.0.0.1:0\"\n\
         [[sinks]]\nname = \"hook\"\nretry = {{ initial_backoff_ms = 50, max_backoff_ms = 400, timeout_ms = 2000 }}\n\
         webhook = {{ url = \"http://127.0.0.1:{port}/hook\" }}\n\
         [[sinks]]\nname = \"hec\"\nretry = {{ initial_backoff_ms = 50, max_backoff_ms = 400, timeout_ms = 2000 }}\n\
         [sinks.webhook]\nurl = \"http://127.0.0.1:{port}/services/collector/event\"\nformat = \"splunk_hec\"\n\
         auth = {{ value_file = \"{token}\" }}\n",
        spool = spool.display(),
        token = token.display()
    );
    let agent = Agent::start_with_config("webhook-a", &config, &[]);
    let mut sent: Vec<String> = (0..3).map(|_| agent.test_alert()).collect();
    let both = |n: usize| {
        let got = got.clone();
        move || (ids(&got, "/hook").len() >= n && ids(&got, "/services/collector/event").len() >= n).then_some(())
    };
    wait_for("the first 3 alerts", PATIENCE, both(3), || agent.log());

    // The receiver goes away; alerts keep coming without delay.
    receiver.stop();
    for _ in 0..4 {
        let t = Instant::now();
        sent.push(agent.test_alert());
        assert!(t.elapsed() < Duration::from_secs(2), "test-alert waited on a sink");
    }
    wait_for(
        "4 alerts waiting in each spool",
        PATIENCE,
        || {
            (metric(&agent, "mcpwatch_sink_backlog_alerts{sink=\"hook\"}") == 4.0
                && metric(&agent, "mcpwatch_sink_backlog_alerts{sink=\"hec\"}") == 4.0
                && metric(&agent, "mcpwatch_sink_alerts_retried_total{sink=\"hook\"}") >= 1.0)
                .then_some(())
        },
        || agent.log(),
    );
    assert_eq!(
        metric(&agent, "mcpwatch_sink_alerts_delivered_total{sink=\"hook\"}"),
        3.0
    );
    assert_eq!(metric(&agent, "mcpwatch_sink_alerts_dropped_total{sink=\"hook\"}"), 0.0);

    // The agent restarts during the outage: the spool survives it.
    agent.stop();
    let agent = Agent::start_with_config("webhook-b", &config, &[]);
    sent.extend((0..2).map(|_| agent.test_alert()));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        ids(&got, "/hook").len(),
        3,
        "nothing delivered while the receiver is down"
    );

    let receiver = Receiver::start(port, got.clone());
    wait_for("all 9 alerts on both sinks", PATIENCE, both(9), || agent.log());
    // A little longer: nothing arrives twice.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(ids(&got, "/hook"), sent, "generic JSON: every alert once, in order");
    assert_eq!(
        ids(&got, "/services/collector/event"),
        sent,
        "Splunk HEC: every alert once, in order"
    );
    for r in got.lock().unwrap().iter() {
        let want = (r.path != "/hook").then(|| "Splunk 0000-test-token".to_owned());
        assert_eq!(r.auth, want, "{}", r.path);
    }
    assert!(
        !agent.log().contains("0000-test-token"),
        "the auth value never appears in logs"
    );
    assert_eq!(
        metric(&agent, "mcpwatch_sink_alerts_delivered_total{sink=\"hook\"}"),
        6.0
    );
    assert_eq!(metric(&agent, "mcpwatch_sink_backlog_alerts{sink=\"hook\"}"), 0.0);
    assert!(metric(&agent, "mcpwatch_sink_alerts_spooled_total{sink=\"hook\"}") >= 2.0);
    receiver.stop();
    agent.stop();
}

/// A private CA and a server certificate for 127.0.0.1 signed by it: the
/// CA's PEM and the server's rustls config.
fn private_ca() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mcpwatch test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("server key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("server params")
        .signed_by(&leaf_key, &issuer)
        .expect("server cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .expect("server config");
    (ca_cert.pem(), Arc::new(config))
}

#[test]
fn https_with_a_private_ca_delivers_and_an_unknown_ca_is_refused() {
    let (ca_pem, server) = private_ca();
    let got = Arc::new(Mutex::new(Vec::new()));
    let receiver = Receiver::start_tls(0, got.clone(), Some(server));
    let dir = scratch_dir("webhook-tls-ca");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let agent = Agent::start_with_config(
        "webhook-tls",
        &format!(
            "spool_dir = \"{{dir}}/spool\"\n[metrics]\naddress = \"127.0.0.1:0\"\n\
             [[sinks]]\nname = \"tls\"\n\
             webhook = {{ url = \"https://127.0.0.1:{port}/hook\", ca_file = \"{ca}\" }}\n\
             [[sinks]]\nname = \"untrusted\"\nretry = {{ initial_backoff_ms = 50, max_backoff_ms = 200 }}\n\
             webhook = {{ url = \"https://127.0.0.1:{port}/untrusted\" }}\n",
            port = receiver.port,
            ca = ca_file.display()
        ),
        &[],
    );
    let sent: Vec<String> = (0..2).map(|_| agent.test_alert()).collect();
    wait_for(
        "2 alerts over HTTPS",
        PATIENCE,
        || (ids(&got, "/hook").len() >= 2).then_some(()),
        || agent.log(),
    );
    assert_eq!(ids(&got, "/hook"), sent);
    wait_for(
        "the untrusted sink to fail verification",
        PATIENCE,
        || (metric(&agent, "mcpwatch_sink_alerts_retried_total{sink=\"untrusted\"}") >= 2.0).then_some(()),
        || agent.log(),
    );
    assert!(
        ids(&got, "/untrusted").is_empty(),
        "no request got through an unverified TLS session"
    );
    assert_eq!(metric(&agent, "mcpwatch_sink_backlog_alerts{sink=\"untrusted\"}"), 2.0);
    assert_eq!(
        metric(&agent, "mcpwatch_sink_alerts_delivered_total{sink=\"tls\"}"),
        2.0
    );
    receiver.stop();
    agent.stop();
}
