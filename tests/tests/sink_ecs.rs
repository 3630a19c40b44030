//! ECS fidelity: every field of the documents a live agent's file sink
//! writes for real alerts (a credential read, an undeclared connect, the
//! agent's own test alert) exists in ECS 8.11's field reference with the
//! type, array form and allowed values it declares (a pinned copy:
//! tests/data/ecs/ecs_fields-8.11.0.tsv, from elastic/ecs' ecs_flat.yml);
//! `mcpwatch.*` is the custom namespace. The agent id survives a restart.

use std::collections::HashMap;

use mcpwatch_tests::*;
use serde_json::Value;

struct Field {
    ty: String,
    array: bool,
    allowed: Vec<String>,
}

fn reference() -> HashMap<String, Field> {
    let path = repo().join("tests/data/ecs/ecs_fields-8.11.0.tsv");
    let text = std::fs::read_to_string(&path).expect("the pinned ECS reference");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            let allowed = match c[3] {
                "-" => Vec::new(),
                a => a.split(',').map(str::to_owned).collect(),
            };
            (
                c[0].to_owned(),
                Field {
                    ty: c[1].to_owned(),
                    array: c[2] == "array",
                    allowed,
                },
            )
        })
        .collect()
}

/// Every leaf of `doc` as (dotted name, value); arrays are leaves.
fn leaves(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&name, v, out);
            }
        }
        v => out.push((prefix.to_owned(), v.clone())),
    }
}

fn check_value(name: &str, f: &Field, v: &Value) -> Result<(), String> {
    let ok = match f.ty.as_str() {
        "keyword" | "wildcard" | "constant_keyword" | "match_only_text" | "text" => {
            v.as_str().is_some_and(|s| !s.is_empty())
        }
        "long" | "integer" | "short" | "byte" => v.is_i64() || v.is_u64(),
        "float" | "scaled_float" | "double" => v.is_number(),
        "boolean" => v.is_boolean(),
        "ip" => v.as_str().is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok()),
        // RFC 3339 in UTC, as the agent writes it.
        "date" => v
            .as_str()
            .is_some_and(|s| s.len() >= 20 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T' && s.ends_with('Z')),
        other => return Err(format!("{name}: a leaf of type {other}")),
    };
    if !ok {
        return Err(format!("{name}: {v} is not a {}", f.ty));
    }
    if !f.allowed.is_empty() && !f.allowed.iter().any(|a| v == a.as_str()) {
        return Err(format!("{name}: {v} is not one of {:?}", f.allowed));
    }
    Ok(())
}

fn validate(doc: &Value, reference: &HashMap<String, Field>) -> Vec<String> {
    let mut all = Vec::new();
    leaves("", doc, &mut all);
    let mut errors = Vec::new();
    for (name, v) in all {
        if name.starts_with("mcpwatch.") {
            continue;
        }
        let Some(f) = reference.get(&name) else {
            errors.push(format!("{name}: not an ECS field"));
            continue;
        };
        let values: Vec<Value> = match (&v, f.array) {
            (Value::Array(a), true) => a.clone(),
            (Value::Array(a), false) => {
                errors.push(format!("{name}: an array where ECS wants one value"));
                a.clone()
            }
            (v, true) => {
                errors.push(format!("{name}: ECS normalizes it to an array, got {v}"));
                vec![v.clone()]
            }
            (v, false) => vec![v.clone()],
        };
        errors.extend(values.iter().filter_map(|v| check_value(&name, f, v).err()));
    }
    errors
}

#[test]
fn every_field_of_real_alerts_is_ecs_and_the_agent_id_is_stable() {
    let reference = reference();
    assert!(reference.len() > 1500, "the whole reference: {}", reference.len());
    let config = "spool_dir = \"{dir}/spool\"\n[metrics]\naddress = \"127.0.0.1:0\"\n\
                  [[sinks]]\nname = \"local\"\nfile = { path = \"{dir}/alerts.jsonl\" }\n";
    let agent = Agent::start_with_config("ecsfields", config, &[]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    agent.run_python(
        "ecssrv",
        &format!(
            r#"
import os, socket
try:
    open(os.path.expanduser("~/.ssh/id_rsa_mcpwatch_ecs"))
except OSError:
    pass
socket.create_connection(("127.0.0.1", {port})).close()
"#
        ),
    );
    let test_id = agent.test_alert();
    let path = agent.dir.join("alerts.jsonl");
    let read = || -> Vec<Value> {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("an ECS line"))
            .collect()
    };
    let docs = wait_for(
        "the credential, connect and test alerts in the file sink",
        std::time::Duration::from_secs(20),
        || {
            let docs = read();
            let has = |rule: &str| docs.iter().any(|d| d["rule"]["id"] == rule);
            (has("cred.ssh")
                && has("net.connect_undeclared")
                && docs.iter().any(|d| d["event"]["id"] == test_id.as_str()))
            .then_some(docs)
        },
        || agent.log(),
    );
    let errors: Vec<String> = docs
        .iter()
        .flat_map(|d| {
            validate(d, &reference)
                .into_iter()
                .map(move |e| format!("{e} (in {})", d["rule"]["id"]))
        })
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));

    let by_rule = |rule: &str| docs.iter().find(|d| d["rule"]["id"] == rule).unwrap();
    let cred = by_rule("cred.ssh");
    assert!(
        cred["file"]["path"]
            .as_str()
            .unwrap()
            .ends_with("/.ssh/id_rsa_mcpwatch_ecs"),
        "{cred}"
    );
    assert_eq!(cred["event"]["category"], serde_json::json!(["file"]));
    assert_eq!(cred["event"]["action"], "cred.ssh");
    assert!(
        cred["process"]["name"].as_str().unwrap().starts_with("python"),
        "{cred}"
    );
    assert!(
        cred["threat"]["technique"]["subtechnique"]["id"][0]
            .as_str()
            .unwrap()
            .contains('.'),
        "{cred}"
    );
    let conn = by_rule("net.connect_undeclared");
    assert_eq!(conn["destination"]["ip"], "127.0.0.1", "{conn}");
    assert_eq!(conn["destination"]["port"], port, "{conn}");
    let test = docs.iter().find(|d| d["event"]["id"] == test_id.as_str()).unwrap();
    assert!(
        test["process"].get("executable").is_none(),
        "no empty executable: {test}"
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim();
    let id = docs[0]["agent"]["id"].as_str().expect("agent.id").to_owned();
    for d in &docs {
        assert_eq!(d["host"]["name"], host, "{d}");
        assert_eq!(d["agent"]["id"], id.as_str(), "{d}");
    }
    let dir = agent.dir.clone();
    assert!(agent.stop().success());

    // The same state directory after a restart: the same agent id.
    let config = dir.join("config.toml");
    let again = Agent::start_in("ecsfields", dir.clone(), &["--config", config.to_str().unwrap()]);
    let second = again.test_alert();
    let doc = wait_for(
        "the second agent's test alert",
        std::time::Duration::from_secs(20),
        || read().into_iter().find(|d| d["event"]["id"] == second.as_str()),
        || again.log(),
    );
    assert_eq!(doc["agent"]["id"], id.as_str(), "a stable agent.id across restarts");
    assert!(again.stop().success());
}
