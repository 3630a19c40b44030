//! Webhook delivery through an outage: an HTTP receiver on loopback is
//! stopped mid-run, alerts keep coming (and wait in the spool, across an
//! agent restart), the receiver comes back and gets every alert exactly
//! once, in order, on both a generic JSON and a Splunk HEC sink.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use mcpwatch::sinks::ecs;
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

fn handle(stream: TcpStream) -> std::io::Result<Received> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut r = BufReader::new(stream.try_clone()?);
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
    let mut w = stream;
    w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")?;
    Ok(Received { path, auth, body })
}

impl Receiver {
    fn start(port: u16, got: Arc<Mutex<Vec<Received>>>) -> Receiver {
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
                if let Ok(req) = handle(conn) {
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
