//! Secrets on the wire: a tool result carrying a (fake) private key and an
//! AWS key pair reaches the official SDK client redacted through the gate,
//! or replaced by an error under a `block` rule, with an alert naming tool,
//! call, rule and span and the secret in no line the agent writes; without
//! the gate the kernel capture raises `mcp.secret_in_result` (a tool that
//! dumps its environment); the reference servers' sessions through the gate
//! have no finding.

use mcpwatch_tests::{mcp::*, policy::manifests_copy, *};
use serde_json::{Value, json};

const KEY_BODY: &str = "MIIEowIBAAKCAQEAouHgxzNNAL5wIScGebcy8F5n3/YNBDRzrZSgqbjG3uhkWKFLf6xuI5aHUQPFeNBT";
const AWS_ID: &str = "AKIAQ3EGT7SXYZ2ABCDE";
const AWS_SECRET: &str = "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";
const GITHUB_TOKEN: &str = "ghp_1LlqsajAIxNKu8iS2G8NPRVdD53X83RZJzzz";

/// An agent with one manifest, `leaky` gated with `gate` as its section.
fn agent_gating(name: &str, gate: Value) -> Agent {
    let d = scratch_dir(&format!("{name}-manifests"));
    std::fs::write(d.join("leaky.json"), json!({"name": "leaky", "gate": gate}).to_string()).unwrap();
    agent_with_manifests(name, &d)
}

fn gated_leaky(agent: &Agent) -> Vec<String> {
    vec![
        bin().to_string_lossy().into_owned(),
        "exec".into(),
        "--gate".into(),
        "--server".into(),
        "leaky".into(),
        "--require-agent".into(),
        "--socket".into(),
        agent.socket.to_string_lossy().into_owned(),
        "--".into(),
        python().to_string_lossy().into_owned(),
        server_script("leaky.py"),
    ]
}

fn assert_no_secret_in(what: &str, text: &str) {
    for s in [KEY_BODY, AWS_ID, AWS_SECRET, GITHUB_TOKEN] {
        assert!(!text.contains(s), "{what} holds a secret ({s}):\n{text}");
    }
}

/// (rule, action, field) of each secret finding of the alerts of `rule`.
fn findings<'a>(events: &'a [Value], rule: &str) -> Vec<&'a Value> {
    alerts_by_rule(events, rule)
        .into_iter()
        .map(|a| {
            a["evidence"]["gate"]["finding"]
                .as_object()
                .map_or(&a["evidence"]["finding"], |_| &a["evidence"]["gate"]["finding"])
        })
        .collect()
}

#[test]
fn a_private_key_and_an_aws_pair_in_a_result_are_redacted_through_the_gate() {
    let agent = agent_gating("sec-redact", json!({"unlisted": "allow"}));
    let args = gated_leaky(&agent);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let steps = client_of(
        &agent,
        json!([["list"], ["call", "show_config", {}], ["call", "echo", {"text": "hello"}]]),
        &args,
    );
    let text = steps[1]["text"][0].as_str().unwrap_or_else(|| panic!("{steps:?}"));
    assert_eq!(
        text,
        "deploy key:\n[REDACTED:private-key]\naws_access_key_id = [REDACTED:aws-access-key-id]\n\
         aws_secret_access_key = [REDACTED:aws-secret-access-key]\nregion = eu-west-1\n",
        "{steps:?}"
    );
    assert_eq!(steps[2]["text"], json!(["hello"]), "a clean result passes: {steps:?}");

    let events = agent.wait_events("secret alerts", |ev| {
        alerts_by_rule(ev, "mcp.secret_in_result").len() >= 3
    });
    let alerts = alerts_by_rule(&events, "mcp.secret_in_result");
    let call_id = steps[1]["id"].to_string();
    for a in &alerts {
        assert_eq!(a["server"], "leaky");
        assert_eq!(a["tool"], "show_config");
        assert_eq!(a["call_id"], call_id.trim_matches('"'), "{a}");
        assert_eq!(a["severity"], "high");
        assert!(a["summary"].as_str().unwrap().contains("redacted by the gate"), "{a}");
    }
    let rules: Vec<(&Value, &Value, &Value)> = findings(&events, "mcp.secret_in_result")
        .into_iter()
        .map(|f| (&f["rule"], &f["action"], &f["field"]))
        .collect();
    let field = json!("result.content[0].text");
    assert_eq!(
        rules,
        [
            (&json!("private-key"), &json!("redact"), &field),
            (&json!("aws-access-key-id"), &json!("redact"), &field),
            (&json!("aws-secret-access-key"), &json!("redact"), &field)
        ]
    );
    let span = &findings(&events, "mcp.secret_in_result")[0]["span"];
    assert_eq!(span["start"], "deploy key:\n".len(), "{span}");
    // The capture underneath saw the redacted result: no second alert.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let events = agent.events();
    assert_eq!(
        alerts_by_rule(&events, "mcp.secret_in_result").len(),
        3,
        "{}",
        dump(&events)
    );
    assert_no_secret_in("the events file", &std::fs::read_to_string(&agent.events_path).unwrap());
    assert_no_secret_in("the agent's log", &agent.log());
    assert!(agent.stop().success());
}

#[test]
fn a_block_rule_replaces_the_result_with_an_error() {
    let agent = agent_gating(
        "sec-block",
        json!({"unlisted": "allow", "secrets": {"private-key": "block"}}),
    );
    let args = gated_leaky(&agent);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let steps = client_of(
        &agent,
        json!([["call", "show_config", {}], ["call", "echo", {"text": "still here"}]]),
        &args,
    );
    assert_eq!(steps[0]["error"]["code"], -32003, "{steps:?}");
    let message = steps[0]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the result of tool 'show_config' of server 'leaky' was blocked by mcpwatch")
            && message.contains("rule private-key"),
        "{message}"
    );
    assert_eq!(
        steps[1]["text"],
        json!(["still here"]),
        "the session goes on: {steps:?}"
    );
    let events = agent.wait_events("secret alerts", |ev| {
        !alerts_by_rule(ev, "mcp.secret_in_result").is_empty()
    });
    let blocked: Vec<&Value> = findings(&events, "mcp.secret_in_result")
        .into_iter()
        .filter(|f| f["action"] == "block")
        .collect();
    assert_eq!(blocked.len(), 1, "{}", dump(&events));
    assert_eq!(blocked[0]["rule"], "private-key");
    assert_no_secret_in("the events file", &std::fs::read_to_string(&agent.events_path).unwrap());
    assert!(agent.stop().success());
}

#[test]
fn a_secret_in_arguments_is_redacted_before_the_server_reads_it() {
    let agent = agent_gating("sec-args", json!({"unlisted": "allow"}));
    let args = gated_leaky(&agent);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let steps = client_of(
        &agent,
        json!([["call", "echo", {"text": format!("my key is {AWS_ID}")}]]),
        &args,
    );
    // The server echoes what it received: the redacted text.
    assert_eq!(
        steps[0]["text"],
        json!(["my key is [REDACTED:aws-access-key-id]"]),
        "{steps:?}"
    );
    let events = agent.wait_events("secret alert", |ev| {
        !alerts_by_rule(ev, "mcp.secret_in_arguments").is_empty()
    });
    let f = findings(&events, "mcp.secret_in_arguments");
    assert_eq!(
        (&f[0]["rule"], &f[0]["field"]),
        (&json!("aws-access-key-id"), &json!("arguments.text"))
    );
    assert!(agent.stop().success());
}

#[test]
fn without_the_gate_the_capture_raises_secret_in_result() {
    let agent = agent("sec-audit");
    let py = python().to_string_lossy().into_owned();
    let steps = client(
        &agent,
        "leaky",
        json!([["call", "dump_env", {}], ["call", "show_config", {}]]),
        &[&py, &server_script("leaky.py")],
    );
    // No gate: the client got everything.
    assert!(
        steps[0]["text"][0].as_str().unwrap().contains(GITHUB_TOKEN),
        "{steps:?}"
    );
    let events = agent.wait_events("secret alerts", |ev| {
        alerts_by_rule(ev, "mcp.secret_in_result").len() >= 4
    });
    let alerts = alerts_by_rule(&events, "mcp.secret_in_result");
    let seen: Vec<(&Value, &Value)> = alerts
        .iter()
        .map(|a| (&a["tool"], &a["evidence"]["finding"]["rule"]))
        .collect();
    assert_eq!(
        seen,
        [
            (&json!("dump_env"), &json!("github-token")),
            (&json!("show_config"), &json!("private-key")),
            (&json!("show_config"), &json!("aws-access-key-id")),
            (&json!("show_config"), &json!("aws-secret-access-key"))
        ],
        "{}",
        dump(&events)
    );
    for (a, step) in alerts.iter().zip([&steps[0], &steps[1], &steps[1], &steps[1]]) {
        assert_eq!(a["call_id"], step["id"].to_string().trim_matches('"'), "{a}");
        assert_eq!(a["evidence"]["via"], "capture");
        assert_eq!(a["evidence"]["finding"]["action"], "alert");
    }
    assert_no_secret_in("the events file", &std::fs::read_to_string(&agent.events_path).unwrap());
    assert!(agent.stop().success());
}

/// The reference servers (everything, filesystem, memory, time) through the
/// gate, under their shipped manifests with the gate in `unlisted: allow`:
/// every result passes unchanged, no secret finding.
#[test]
fn reference_sessions_through_the_gate_have_no_finding() {
    let manifests = manifests_copy("sec-benign", &["everything", "filesystem", "memory", "time"]);
    for n in ["everything", "filesystem", "memory", "time"] {
        let f = manifests.join(format!("{n}.json"));
        let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        m["gate"] = json!({"unlisted": "allow"});
        std::fs::write(&f, m.to_string()).unwrap();
    }
    let agent = agent_with_manifests("sec-benign", &manifests);
    let root = scratch_dir("sec-benign-root");
    std::fs::write(
        root.join("notes.txt"),
        "API_KEY=${API_KEY}\nthe token bucket refills every 5 s\n",
    )
    .unwrap();
    let r = root.to_string_lossy().into_owned();
    let node = |n: &str| node_server(n).to_string_lossy().into_owned();
    let py = python().to_string_lossy().into_owned();
    let sessions = [
        (
            "everything",
            McpSession::new(&["node", &node("server-everything"), "stdio"])
                .call("echo", json!({"message": "hi"}))
                .call("get-sum", json!({"a": 2, "b": 3}))
                .call("get-tiny-image", json!({}))
                .call("get-structured-content", json!({"location": "New York"}))
                .call("get-env", json!({})),
        ),
        (
            "filesystem",
            McpSession::new(&["node", &node("server-filesystem"), &r])
                .call("list_allowed_directories", json!({}))
                .call("read_text_file", json!({"path": format!("{r}/notes.txt")}))
                .call("list_directory", json!({"path": r}))
                .call("get_file_info", json!({"path": format!("{r}/notes.txt")})),
        ),
        (
            "memory",
            McpSession::new(&["npx", "--no-install", "mcp-server-memory"])
                .cwd(&testenv().join("node"))
                .call(
                    "create_entities",
                    json!({"entities": [{"name": "mcpwatch", "entityType": "tool", "observations": ["api key rotation"]}]}),
                )
                .call("read_graph", json!({})),
        ),
        (
            "time",
            McpSession::new(&[&py, "-m", "mcp_server_time", "--local-timezone", "UTC"])
                .call("get_current_time", json!({"timezone": "Europe/Paris"})),
        ),
    ];
    for (name, s) in sessions {
        let mut s = s.wrapped(&agent, name);
        s.server_cmd.insert(2, "--gate".into());
        s.allow_errors = true;
        let report = s.run();
        assert!(!report.to_string().contains("[REDACTED"), "{name}: {report}");
        assert!(!report["calls"].as_array().unwrap().is_empty(), "{name}: {report}");
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let events = agent.events();
    let secret: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "alert" && e["rule"].as_str().unwrap_or("").starts_with("mcp.secret_"))
        .collect();
    eprintln!(
        "secret findings in the reference sessions through the gate: {}",
        secret.len()
    );
    assert!(
        secret.is_empty(),
        "{}",
        dump(&secret.into_iter().cloned().collect::<Vec<_>>())
    );
    assert!(agent.stop().success());
}
