//! Webhook delivery through an outage: an HTTP receiver on loopback is
//! stopped mid-run, alerts keep coming (and wait in the spool, across an
//! agent restart), the receiver comes back and gets every alert exactly
//! once, in order, on both a generic JSON and a Splunk HEC sink. And HTTPS
//! with a private CA (a certificate made by the test with rcgen).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mcpwatch::output::format::ecs;
use mcpwatch_tests::{webhook::*, *};
use serde_json::Value;

/// Alert ids received on `path`, in arrival order.
fn ids(got: &Mutex<Vec<Received>>, path: &str) -> Vec<String> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == path)
        .flat_map(|r| hec_events(&r.body))
        .map(|v| {
            let doc = if path == "/hook" { v } else { v["event"].clone() };
            ecs::from_ecs(&doc).expect("an ECS alert").id
        })
        .collect()
}

/// The JSON objects of a body, one after the other (HEC batches events so).
fn hec_events(body: &[u8]) -> Vec<Value> {
    serde_json::Deserializer::from_slice(body)
        .into_iter()
        .map(|v| v.expect("JSON body"))
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

/// What an Elasticsearch data stream does with a `_bulk` request, per item:
/// only `create` is allowed (an `index` action is refused, as data streams
/// do), an `_id` it holds already is a 409 conflict, the 2nd distinct alert
/// is refused for good (a mapping error), the 3rd is refused with a 429 the
/// first time it comes. Stored documents are kept in arrival order.
#[derive(Default)]
struct DataStream {
    stored: Vec<String>,
    seen: Vec<String>,
    /// Answers given per `_id` (status codes, in order).
    answers: std::collections::HashMap<String, Vec<u64>>,
}

impl DataStream {
    fn bulk(&mut self, body: &[u8]) -> (u16, String) {
        let lines: Vec<Value> = std::str::from_utf8(body)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut items = Vec::new();
        for pair in lines.chunks(2) {
            let (op, meta) = pair[0].as_object().unwrap().iter().next().unwrap();
            let id = meta["_id"].as_str().unwrap_or("").to_owned();
            if !self.seen.contains(&id) {
                self.seen.push(id.clone());
            }
            let nth = self.seen.iter().position(|s| *s == id).unwrap() + 1;
            let first_time = !self.answers.contains_key(&id);
            let (status, error) = if op != "create" {
                (
                    400,
                    Some((
                        "illegal_argument_exception",
                        "only write ops with an op_type of create are allowed in data streams",
                    )),
                )
            } else if self.stored.contains(&id) {
                (
                    409,
                    Some(("version_conflict_engine_exception", "document already exists")),
                )
            } else if nth == 2 {
                (
                    400,
                    Some(("document_parsing_exception", "failed to parse field [event.severity]")),
                )
            } else if nth == 3 && first_time {
                (429, Some(("es_rejected_execution_exception", "rejected execution")))
            } else {
                self.stored.push(id.clone());
                (201, None)
            };
            self.answers.entry(id.clone()).or_default().push(status);
            let mut item = serde_json::json!({ "_index": meta["_index"], "_id": id, "status": status });
            if let Some((t, r)) = error {
                item["error"] = serde_json::json!({ "type": t, "reason": r });
            }
            items.push(serde_json::json!({ op.as_str(): item }));
        }
        let errors = items
            .iter()
            .any(|i| i.as_object().unwrap().values().next().unwrap()["status"].as_u64() >= Some(300));
        (
            200,
            serde_json::json!({ "took": 1, "errors": errors, "items": items }).to_string(),
        )
    }
}

/// Alerts pile up while the receiver is down; when it comes back, one
/// `_bulk` request carries them all as `create` actions and its answer is
/// read item by item: the refused alert goes to the dead-letter file
/// (counted), the one refused for now is sent again, the accepted ones are
/// neither lost nor stored twice. The same backlog reaches Splunk HEC as
/// one POST of many events, each with the configured index, source and
/// sourcetype.
#[test]
fn elastic_bulk_items_are_settled_one_by_one_and_hec_batches() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let port = free_port();
    let config = format!(
        "spool_dir = \"{{dir}}/spool\"\n[metrics]\naddress = \"127.0.0.1:0\"\n\
         [[sinks]]\nname = \"elastic\"\nretry = {{ initial_backoff_ms = 50, max_backoff_ms = 200, timeout_ms = 2000 }}\n\
         webhook = {{ url = \"http://127.0.0.1:{port}/_bulk\", format = \"elastic_bulk\", index = \"logs-mcpwatch-default\" }}\n\
         [[sinks]]\nname = \"hec\"\nretry = {{ initial_backoff_ms = 50, max_backoff_ms = 200, timeout_ms = 2000 }}\n\
         [sinks.webhook]\nurl = \"http://127.0.0.1:{port}/services/collector/event\"\nformat = \"splunk_hec\"\n\
         index = \"mcpwatch\"\nsource = \"host-agent\"\nsourcetype = \"mcpwatch:test\"\n\
         batch = {{ max_events = 4 }}\n"
    );
    let agent = Agent::start_with_config("webhook-elastic", &config, &[]);
    let sent: Vec<String> = (0..6).map(|_| agent.test_alert()).collect();
    wait_for(
        "6 alerts waiting in each spool",
        PATIENCE,
        || {
            (metric(&agent, "mcpwatch_sink_backlog_alerts{sink=\"elastic\"}") == 6.0
                && metric(&agent, "mcpwatch_sink_backlog_alerts{sink=\"hec\"}") == 6.0)
                .then_some(())
        },
        || agent.log(),
    );
    let stream = Arc::new(Mutex::new(DataStream::default()));
    let s = stream.clone();
    let answer: Answer = Arc::new(move |r: &Received| {
        if r.path == "/_bulk" {
            s.lock().unwrap().bulk(&r.body)
        } else {
            (200, "{\"text\":\"Success\",\"code\":0}".into())
        }
    });
    let receiver = Receiver::start_answering(port, got.clone(), None, answer);
    wait_for(
        "5 documents stored and 6 HEC events",
        PATIENCE,
        || {
            (stream.lock().unwrap().stored.len() >= 5
                && ids(&got, "/services/collector/event").len() >= 6
                && metric(&agent, "mcpwatch_sink_backlog_alerts{sink=\"elastic\"}") == 0.0)
                .then_some(())
        },
        || agent.log(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let ds = stream.lock().unwrap();
    let mut want = sent.clone();
    let refused = want.remove(1);
    // A bulk request's items are settled independently: the one retried
    // lands after those behind it (Elasticsearch orders by @timestamp).
    let mut stored = ds.stored.clone();
    stored.sort_by_key(|id| sent.iter().position(|s| s == id));
    assert_eq!(stored, want, "every accepted alert once");
    assert_eq!(ds.answers[&sent[2]], [429, 201], "refused for now, then sent again");
    assert_eq!(ds.answers[&refused], [400], "refused for good: not sent again");
    for later in &sent[3..] {
        assert_eq!(
            ds.answers[later],
            [201, 409],
            "sent again after the 429: a conflict, not a copy"
        );
    }
    let bulks: Vec<Received> = got
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/_bulk")
        .cloned()
        .collect();
    let first = String::from_utf8(bulks[0].body.clone()).unwrap();
    let actions: Vec<Value> = first
        .lines()
        .step_by(2)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(actions.len(), 6, "the backlog in one request: {first}");
    for (a, id) in actions.iter().zip(&sent) {
        assert_eq!(
            a,
            &serde_json::json!({ "create": { "_index": "logs-mcpwatch-default", "_id": id } })
        );
    }
    let dead = std::fs::read_to_string(agent.dir.join("spool/elastic/dead-letter.jsonl")).expect("a dead-letter file");
    let dead: Vec<Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["alert"]["id"], refused.as_str());
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .contains("400 document_parsing_exception"),
        "{}",
        dead[0]
    );
    assert_eq!(
        metric(&agent, "mcpwatch_sink_alerts_dead_lettered_total{sink=\"elastic\"}"),
        1.0
    );
    assert_eq!(
        metric(&agent, "mcpwatch_sink_alerts_delivered_total{sink=\"elastic\"}"),
        5.0
    );
    drop(ds);

    // HEC: the backlog in POSTs of at most 4 events, in order, with the settings.
    assert_eq!(ids(&got, "/services/collector/event"), sent);
    let posts: Vec<Vec<Value>> = got
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/services/collector/event")
        .map(|r| hec_events(&r.body))
        .collect();
    assert_eq!(
        posts.iter().map(Vec::len).collect::<Vec<_>>(),
        [4, 2],
        "batches of at most 4"
    );
    for ev in posts.iter().flatten() {
        assert_eq!(ev["index"], "mcpwatch");
        assert_eq!(ev["source"], "host-agent");
        assert_eq!(ev["sourcetype"], "mcpwatch:test");
    }
    receiver.stop();
    agent.stop();
}
