//! A level per sink: two webhook sinks of one agent while a real MCP server
//! (mcp-server-time from PyPI) answers the official SDK client. The sink at
//! `level = "summary"` receives the session's `tool_call` line (as an ECS
//! event, with what the call touched) as well as alerts; the one at `all`
//! every line (the server's exec and file lines too); the one left at the
//! default `alerts` receives alerts only.

use std::sync::{Arc, Mutex};

use mcpwatch_tests::{
    mcp::{call_ids, client, time_server},
    webhook::*,
    *,
};
use serde_json::{Value, json};

/// The JSON documents POSTed on `path` (format `json`: one per request).
fn docs(got: &Mutex<Vec<Received>>, path: &str) -> Vec<Value> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| serde_json::from_slice(&r.body).expect("a JSON document"))
        .collect()
}

/// The HEC events of the `all` sink (`/every`), their `event` documents.
fn hec(got: &Mutex<Vec<Received>>) -> Vec<Value> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/every")
        .flat_map(|r| serde_json::Deserializer::from_slice(&r.body).into_iter::<Value>())
        .map(|v| v.expect("HEC JSON")["event"].clone())
        .collect()
}

#[test]
fn a_sink_at_summary_gets_the_tool_call_line_one_at_all_every_line_one_at_alerts_none() {
    let got = Arc::new(Mutex::new(Vec::new()));
    let receiver = Receiver::start(0, got.clone());
    let port = receiver.port;
    let config = format!(
        "spool_dir = \"{{dir}}/spool\"\n\
         [[sinks]]\nname = \"lines\"\nlevel = \"summary\"\nwebhook = {{ url = \"http://127.0.0.1:{port}/lines\" }}\n\
         [[sinks]]\nname = \"alerts\"\nwebhook = {{ url = \"http://127.0.0.1:{port}/alerts\" }}\n\
         [[sinks]]\nname = \"every\"\nlevel = \"all\"\n\
         webhook = {{ url = \"http://127.0.0.1:{port}/every\", format = \"splunk_hec\" }}\n"
    );
    let agent = Agent::start_with_config("sink-level", &config, &["--audit-tool-calls"]);
    let py = python().to_string_lossy().into_owned();
    let server = time_server();
    let steps = client(
        &agent,
        "time",
        json!([["list"], ["call", "get_current_time", {"timezone": "UTC"}]]),
        &[&py, &server, "--local-timezone", "UTC"],
    );
    let sent = call_ids(&steps);
    let alert = agent.test_alert();
    let action = |d: &Value| d["event"]["action"].as_str().unwrap_or_default().to_owned();
    let lines = wait_for(
        "the tool_call line on the summary sink, the test alert on both",
        PATIENCE,
        || {
            let lines = docs(&got, "/lines");
            let has_alert = |docs: &[Value]| docs.iter().any(|d| d["event"]["id"] == alert.as_str());
            let every = hec(&got);
            (lines.iter().any(|d| action(d) == "tool_call")
                && has_alert(&lines)
                && has_alert(&docs(&got, "/alerts"))
                && has_alert(&every))
            .then_some(lines)
        },
        || format!("{:?}\n{}", docs(&got, "/lines"), agent.log()),
    );
    let call = lines.iter().find(|d| action(d) == "tool_call").unwrap();
    assert_eq!(call["event"]["kind"], "event", "{call}");
    assert_eq!(call["service"]["name"], "time", "{call}");
    let line = &call["mcpwatch"];
    assert_eq!(
        (
            line["tool"].as_str().unwrap().to_owned(),
            line["call_id"].as_str().unwrap().to_owned()
        ),
        sent[0],
        "{call}"
    );
    assert!(
        line["touched"]["events"].is_u64(),
        "the summary of what it touched: {call}"
    );
    assert!(lines.iter().any(|d| action(d) == "watch"), "the server's watch line");
    // Summary, not everything: no line per file or connection.
    assert!(
        !lines
            .iter()
            .any(|d| matches!(action(d).as_str(), "file" | "net" | "fork")),
        "{lines:?}"
    );
    // `all`: the lines the summary folds away are there too.
    let every = hec(&got);
    let kinds = |docs: &[Value], k: &str| docs.iter().filter(|d| action(d) == k).count();
    assert!(
        kinds(&every, "exec") >= 1 && kinds(&every, "file") >= 1 && kinds(&every, "tool_call") >= 1,
        "{every:?}"
    );
    eprintln!(
        "lines received: summary {}, all {}",
        lines.iter().filter(|d| d["event"]["kind"] == "event").count(),
        every.iter().filter(|d| d["event"]["kind"] == "event").count()
    );
    let alerts = docs(&got, "/alerts");
    assert!(
        alerts.iter().all(|d| d["event"]["kind"] == "alert"),
        "the alerts sink got a line: {alerts:?}"
    );
    receiver.stop();
    agent.stop();
}
