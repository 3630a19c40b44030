//! OCSF fidelity: a live agent writes its alerts (file sink, `schema =
//! "ocsf"`) and its events (`[events] format = "ocsf"`) as OCSF 1.6.0 for a
//! real workload (a credential read, an undeclared connect, a DNS query and
//! answer, an exec, the agent's test alert). Every document is checked
//! against a pinned copy of the schema (tests/data/ocsf, compiled from
//! ocsf/ocsf-schema 1.6.0 by ocsf-lib, see its `_source`): its class exists,
//! every attribute exists in the class or object it is in (an attribute of
//! a profile only with that profile in `metadata.profiles`), has the
//! declared type, array form and enum value, and every required attribute
//! is present.

use std::collections::HashMap;

use mcpwatch_tests::{fixtures::*, *};
use serde_json::{Map, Value};

struct Schema {
    classes: HashMap<u64, Value>,
    categories: HashMap<String, u64>,
    objects: Map<String, Value>,
    types: Map<String, Value>,
}

fn schema() -> Schema {
    let path = repo().join("tests/data/ocsf/ocsf-1.6.0-mcpwatch.json");
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("the pinned OCSF schema")).unwrap();
    assert_eq!(s["version"], "1.6.0");
    Schema {
        classes: s["classes"]
            .as_object()
            .unwrap()
            .values()
            .map(|c| (c["uid"].as_u64().unwrap(), c.clone()))
            .collect(),
        categories: s["categories"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect(),
        objects: s["objects"].as_object().unwrap().clone(),
        types: s["types"].as_object().unwrap().clone(),
    }
}

impl Schema {
    /// Every violation in `doc`, one line each.
    fn validate(&self, doc: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        let Some(class) = doc["class_uid"].as_u64().and_then(|u| self.classes.get(&u)) else {
            return vec![format!("no such class: {}", doc["class_uid"])];
        };
        let category = match class["category"].as_str() {
            Some("other") => 0,
            Some(c) => self.categories[c],
            None => 0,
        };
        if doc["category_uid"].as_u64() != Some(category) {
            errors.push(format!("category_uid {} is not {category}", doc["category_uid"]));
        }
        let type_uid = class["uid"].as_u64().unwrap() * 100 + doc["activity_id"].as_u64().unwrap_or(u64::MAX / 200);
        if doc["type_uid"].as_u64() != Some(type_uid) {
            errors.push(format!("type_uid {} is not class * 100 + activity", doc["type_uid"]));
        }
        let profiles: Vec<&str> = doc["metadata"]["profiles"]
            .as_array()
            .map(|p| p.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        self.object("", doc, &class["attributes"], &profiles, &mut errors);
        errors
    }

    fn object(&self, at: &str, v: &Value, attrs: &Value, profiles: &[&str], errors: &mut Vec<String>) {
        let Some(map) = v.as_object() else {
            errors.push(format!("{at}: not an object"));
            return;
        };
        let attrs = attrs.as_object().unwrap();
        for (k, val) in map {
            let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
            let Some(a) = attrs.get(k) else {
                errors.push(format!("{path}: no such attribute"));
                continue;
            };
            if let Some(p) = a["profile"].as_str()
                && !profiles.contains(&p)
            {
                errors.push(format!("{path}: of profile `{p}`, not in metadata.profiles"));
            }
            if a["is_array"] == true {
                match val.as_array() {
                    Some(items) => {
                        for (i, item) in items.iter().enumerate() {
                            self.value(&format!("{path}[{i}]"), item, a, profiles, errors);
                        }
                    }
                    None => errors.push(format!("{path}: not an array")),
                }
            } else {
                self.value(&path, val, a, profiles, errors);
            }
        }
        for (k, a) in attrs {
            let applies = a["profile"].as_str().is_none_or(|p| profiles.contains(&p));
            if a["requirement"] == "required" && applies && !map.contains_key(k) {
                errors.push(format!("{at}.{k}: required, missing"));
            }
        }
    }

    fn value(&self, path: &str, v: &Value, a: &Value, profiles: &[&str], errors: &mut Vec<String>) {
        let ty = a["object_type"].as_str().or(a["type"].as_str()).unwrap();
        // OCSF's `object` is free-form (`unmapped`, `xattributes`).
        if ty == "object" {
            if !v.is_object() {
                errors.push(format!("{path}: not an object"));
            }
            return;
        }
        if let Some(obj) = self.objects.get(ty) {
            self.object(path, v, &obj["attributes"], profiles, errors);
            return;
        }
        let base = self.types.get(ty).and_then(Value::as_str).unwrap_or(ty);
        let ok = match base {
            "string_t" => v.is_string(),
            "integer_t" | "long_t" => v.is_i64() || v.is_u64(),
            "float_t" => v.is_number(),
            "boolean_t" => v.is_boolean(),
            "json_t" => true,
            "object" => v.is_object(),
            other => {
                errors.push(format!("{path}: unknown type {other}"));
                return;
            }
        };
        if !ok {
            errors.push(format!("{path}: {v} is not a {base}"));
        }
        if let Some(values) = a["enum"].as_array() {
            let text = match v {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            if !values.iter().any(|e| e.as_str() == Some(text.as_str())) {
                errors.push(format!("{path}: {v} not among {values:?}"));
            }
        }
    }
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn alerts_and_events_of_a_real_workload_are_valid_ocsf() {
    let schema = schema();
    let stub = dns_stub();
    let config = "spool_dir = \"{dir}/spool\"\n[metrics]\naddress = \"127.0.0.1:0\"\n\
                  [events]\nformat = \"ocsf\"\n\
                  [[sinks]]\nname = \"local\"\nfile = { path = \"{dir}/alerts.jsonl\", schema = \"ocsf\" }\n";
    let agent = Agent::start_with_config("ocsf", config, &[]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    agent.run_python(
        "ocsfsrv",
        &format!(
            r#"
import os, socket, struct, subprocess
try:
    open(os.path.expanduser("~/.ssh/id_rsa_mcpwatch_ocsf"))
except OSError:
    pass
socket.create_connection(("127.0.0.1", {port})).close()
q = struct.pack(">HHHHHH", 0x4343, 0x0100, 1, 0, 0, 0)
for l in b"ocsf.attacker.test".split(b"."): q += bytes([len(l)]) + l
q += b"\0" + struct.pack(">HH", 1, 1)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
u.sendto(q, ("127.0.0.53", 53)); u.recvfrom(512)
subprocess.run(["/bin/true"])
"#
        ),
    );
    stub.join().unwrap();
    let test_id = agent.test_alert();
    let alerts_path = agent.dir.join("alerts.jsonl");
    let alerts = wait_for(
        "the credential, connect and test alerts as OCSF findings",
        std::time::Duration::from_secs(20),
        || {
            let docs = lines(&alerts_path);
            let has = |rule: &str| docs.iter().any(|d| d["finding_info"]["analytic"]["uid"] == rule);
            (has("cred.ssh")
                && has("net.connect_undeclared")
                && docs.iter().any(|d| d["finding_info"]["uid"] == test_id.as_str()))
            .then_some(docs)
        },
        || agent.log(),
    );
    let events_path = agent.events_path.clone();
    let dir = agent.dir.clone();
    assert!(agent.stop().success());
    let events = lines(&events_path);

    // The check can fail: a made-up attribute, a missing required one, a
    // wrong type and a value outside an enum are each found.
    let mut bad = alerts[0].clone();
    bad["made_up"] = Value::Bool(true);
    bad["finding_info"].as_object_mut().unwrap().remove("uid");
    bad["time"] = Value::String("yesterday".into());
    bad["severity_id"] = Value::from(42);
    let found = schema.validate(&bad).join("\n");
    for want in [
        "made_up: no such attribute",
        "finding_info.uid: required",
        "time: \"yesterday\"",
        "severity_id: 42",
    ] {
        assert!(found.contains(want), "{want} not found in:\n{found}");
    }

    let mut errors = Vec::new();
    for d in alerts.iter().chain(&events) {
        for e in schema.validate(d) {
            errors.push(format!(
                "{e} (class {}, {})",
                d["class_uid"], d["metadata"]["event_code"]
            ));
        }
    }
    errors.sort();
    errors.dedup();
    assert!(errors.is_empty(), "{}", errors.join("\n"));

    // Each class is there, with the workload's facts in OCSF's own places.
    let of_class = |c: u64| events.iter().filter(move |d| d["class_uid"] == c);
    let finding = |rule: &str| {
        alerts
            .iter()
            .find(|d| d["finding_info"]["analytic"]["uid"] == rule)
            .unwrap()
    };
    let cred = finding("cred.ssh");
    assert_eq!(cred["class_uid"], 2004);
    assert!(
        cred["evidences"][0]["file"]["path"]
            .as_str()
            .unwrap()
            .ends_with("/.ssh/id_rsa_mcpwatch_ocsf"),
        "{cred}"
    );
    assert!(
        cred["finding_info"]["attacks"][0]["technique"]["uid"].is_string(),
        "{cred}"
    );
    assert!(
        cred["device"]["agent_list"][0]["uid"].is_string(),
        "the stable agent id"
    );
    assert_eq!(cred["actor"]["app_name"], "ocsfsrv");
    let conn = finding("net.connect_undeclared");
    assert_eq!(conn["evidences"][0]["dst_endpoint"]["port"], port);
    assert!(
        of_class(1007).any(|d| d["activity_id"] == 1
            && d["process"]["path"].as_str().is_some_and(|p| p.ends_with("bin/true"))
            && d["process"]["cmd_line"] == "/bin/true"),
        "the exec of /bin/true as a Process Activity Launch"
    );
    assert!(
        of_class(1001).any(|d| d["file"]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/.ssh/id_rsa_mcpwatch_ocsf"))),
        "the key's open as a File System Activity"
    );
    assert!(
        of_class(4001).any(|d| d["dst_endpoint"]["port"] == port && d["activity_id"] == 1),
        "the connect as a Network Activity Open"
    );
    assert!(
        of_class(4003).any(|d| d["query"]["hostname"] == "ocsf.attacker.test" && d["activity_id"] == 1),
        "the DNS query as a DNS Activity Query"
    );
    assert!(
        of_class(4003).any(|d| d["answers"][0]["rdata"] == "127.0.0.77" && d["activity_id"] == 2),
        "the DNS answer as a DNS Activity Response"
    );
    assert!(
        events.iter().any(|d| d["class_uid"] == 2004),
        "alerts in the events file too"
    );
    let _ = std::fs::remove_dir_all(dir);
}
