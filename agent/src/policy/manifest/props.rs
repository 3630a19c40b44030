//! Properties of the manifest parser and compiler: any text or JSON loads or
//! is refused with an error placed in the file; a manifest generated from
//! the schema's shape loads, means what it says however it is laid out, and
//! one bad entry in it is named by its field and line.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;
use crate::proptesting::{config, json, odd_text};

const FILE: &str = "/etc/mcpwatch/manifests/demo.json";

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    Manifest::parse(Path::new(FILE), text)
}

/// What holds of any refusal: the file, a position when one is known, the field, what is wrong.
fn placed(e: &ManifestError, text: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(e.file.as_path(), Path::new(FILE));
    // The field is the JSON path; an unknown key "" is named as such, by an empty path.
    prop_assert!(!e.what.is_empty(), "{e}");
    prop_assert!(e.line <= text.split('\n').count(), "{e}");
    prop_assert!(
        e.to_string().starts_with(&format!("{FILE}:{}:{}: ", e.line, e.column)),
        "{e}"
    );
    Ok(())
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._@:+-][A-Za-z0-9._@/:+-]{0,20}"
}

/// A path pattern: absolute, `~`, or under an argument; globs now and then.
fn path(args: Vec<String>) -> impl Strategy<Value = String> {
    let base = if args.is_empty() {
        prop_oneof![Just("/".to_owned()), Just("~".to_owned())].boxed()
    } else {
        prop_oneof![
            Just("/".to_owned()),
            Just("~".to_owned()),
            prop::sample::select(args).prop_map(|a| format!("${{{a}}}")),
        ]
        .boxed()
    };
    let part = prop_oneof![
        "[a-z0-9._ -]{1,8}",
        Just("*".to_owned()),
        Just("**".to_owned()),
        Just("{a,b}".to_owned()),
        Just("é".to_owned())
    ];
    (base, prop::collection::vec(part, 0..4)).prop_map(|(b, parts)| {
        let mut p = b;
        for x in parts {
            if !p.ends_with('/') {
                p.push('/');
            }
            p.push_str(&x);
        }
        p
    })
}

fn host() -> impl Strategy<Value = String> {
    let h = prop_oneof![
        "[a-z0-9-]{1,10}(\\.[a-z0-9-]{1,10}){0,2}",
        "\\.[a-z0-9-]{1,10}\\.com",
        Just("localhost".to_owned()),
        Just("10.0.0.0/8".to_owned()),
        Just("127.0.0.1".to_owned()),
        Just("[::1]".to_owned()),
    ];
    (h, prop::option::of(1u16..)).prop_map(|(h, port)| match port {
        Some(p) => format!("{h}:{p}"),
        None => h,
    })
}

fn outbound() -> impl Strategy<Value = Value> {
    (
        any::<bool>(),
        prop::collection::vec(host(), 0..4),
        prop::collection::vec(1u16.., 0..3),
        prop::collection::vec(prop::sample::select(&["tcp", "udp", "TCP", "Udp"][..]), 0..3),
    )
        .prop_map(|(all, hosts, ports, transports)| {
            json!({"insecure_allow_all": all, "allow_host": hosts, "allow_port": ports, "allow_transport": transports})
        })
}

fn exec() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9._+-]{1,12}",
        "/usr/(local/)?bin/[a-z*]{1,8}",
        Just("python{,3,3.*}".to_owned())
    ]
}

/// One tool's grants: each category present or not.
fn tool(args: Vec<String>) -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop::collection::vec(path(args.clone()), 0..3)),
        prop::option::of(prop::collection::vec(path(args), 0..3)),
        prop::option::of(outbound()),
        prop::option::of(prop::collection::vec(exec(), 0..3)),
    )
        .prop_map(|(read, write, out, exec)| {
            let mut t = Map::new();
            read.map(|v| t.insert("read".into(), json!(v)));
            write.map(|v| t.insert("write".into(), json!(v)));
            out.map(|v| t.insert("network".into(), json!({"outbound": v})));
            exec.map(|v| t.insert("exec".into(), json!(v)));
            Value::Object(t)
        })
}

/// A manifest with the schema's shape, every entry valid.
fn manifest() -> impl Strategy<Value = Value> {
    prop::collection::btree_set("[a-z_]{1,6}", 0..3).prop_flat_map(|args| {
        let args: Vec<String> = args.into_iter().collect();
        (
            prop::option::of(name()),
            Just(args.clone()),
            prop::collection::vec(path(args.clone()), 0..4),
            prop::collection::vec(path(args.clone()), 0..3),
            outbound(),
            prop::collection::vec(host(), 0..2),
            prop::collection::vec(prop::sample::select(&["127.0.0.1:8080", "[::1]:*", "*:9000", "localhost:1"][..]), 0..2),
            prop::collection::vec(exec(), 0..3),
            prop::collection::btree_map("[a-z_]{1,8}", tool(args), 0..3),
            prop::option::of(prop::collection::btree_map("[a-z_]{1,8}", "[0-9a-fA-F]{64}", 0..3)),
        )
            .prop_map(|(name, args, read, write, out, inbound, listen, exec, tools, pins)| {
                let mut m = json!({
                    "args": args.iter().map(|a| (a.clone(), json!({"from": format!("server-{a}"), "flag": "--dir"}))).collect::<Map<_, _>>(),
                    "read": read, "write": write,
                    "network": {"outbound": out, "inbound": {"allow_host": inbound}},
                    "listen": listen, "exec": exec, "tools": tools,
                    "match": {"exe": ["**/node"], "argv": ["server-[a-z]+"], "server": ["demo"]},
                });
                if let Some(n) = name {
                    m["name"] = json!(n);
                }
                if let Some(p) = pins {
                    m["pins"] = json!(p.into_iter().map(|(k, v)| (k, json!(format!("sha256:{v}")))).collect::<Map<_, _>>());
                }
                m
            })
    })
}

proptest! {
    #![proptest_config(config(512))]

    /// Any text: a manifest, or an error placed in the file.
    #[test]
    fn any_text_loads_or_is_placed(text in prop_oneof![
        odd_text(),
        any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]) {
        if let Err(e) = parse(&text) {
            placed(&e, &text)?;
        }
    }

    /// Any JSON, and any JSON inside the manifest's own fields.
    #[test]
    fn any_json_loads_or_is_placed(v in json(), field in prop::sample::select(&[
        "read", "write", "network", "listen", "exec", "tools", "pins", "args", "match", "name", "mode",
    ][..])) {
        for text in [v.to_string(), json!({field: v}).to_string()] {
            if let Err(e) = parse(&text) {
                placed(&e, &text)?;
            }
        }
    }

    /// A manifest of the schema's shape loads, whatever its layout, and means what it says.
    #[test]
    fn a_schema_shaped_manifest_loads_as_written(v in manifest()) {
        let compact = v.to_string();
        let m = parse(&compact).map_err(|e| TestCaseError::fail(format!("{e}\n{compact}")))?;
        let pretty = parse(&serde_json::to_string_pretty(&v).expect("a Value serialises"))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(format!("{m:?}"), format!("{pretty:?}"));
        prop_assert_eq!(m.name.as_str(), v["name"].as_str().unwrap_or("demo"));
        prop_assert_eq!(&json!(m.read), &v["read"]);
        prop_assert_eq!(&json!(m.write), &v["write"]);
        let out = &v["network"]["outbound"];
        prop_assert_eq!(&json!(m.outbound.ports), &out["allow_port"]);
        prop_assert_eq!(m.outbound.hosts.len(), out["allow_host"].as_array().map_or(0, Vec::len));
        prop_assert!(m.outbound.transports.iter().all(|t| t == "tcp" || t == "udp"));
        prop_assert_eq!(m.tools.keys().collect::<Vec<_>>(), v["tools"].as_object().expect("tools").keys().collect::<Vec<_>>());
        if let Some(pins) = &m.pins {
            for (tool, hash) in pins {
                let written = v["pins"][tool].as_str().expect("written");
                prop_assert_eq!(hash, &written.to_ascii_lowercase());
            }
        }
    }

    /// One bad entry in a good manifest is named by its field, at its line.
    #[test]
    fn a_bad_entry_is_named_at_its_line(v in manifest(), which in 0usize..4, at in any::<prop::sample::Index>()) {
        let mut v = v;
        let (field, bad) = match which {
            0 => ("read", json!("relative/◊bad")),
            1 => ("write", json!("relative/◊bad")),
            2 => ("exec", json!("")),
            _ => ("listen", json!("no port ◊bad")),
        };
        let list = v[field].as_array_mut().expect("a list");
        let i = at.index(list.len() + 1);
        list.insert(i, bad.clone());
        let text = serde_json::to_string_pretty(&v).expect("a Value serialises");
        let e = parse(&text).err().ok_or_else(|| TestCaseError::fail(format!("loaded: {text}")))?;
        placed(&e, &text)?;
        prop_assert_eq!(e.field, format!("{field}[{i}]"));
        if bad != json!("") {
            let line = text.lines().position(|l| l.contains("◊bad")).expect("written") + 1;
            prop_assert_eq!(e.line, line, "{}", e.what);
        }
    }
}
