//! The detector measured on real listings and on poisoned ones.
//!
//! `tests/data/listings/*.json`: the `tools/list` answers of the reference
//! and popular servers, captured with `tests/mcp/capture_listing.py` (the
//! versions are in that directory's README). Nothing there is poisoning:
//! every finding is a false alert.
//!
//! `tests/data/poisoned/listing.json`: poisoned definitions written after the
//! published attacks (tool poisoning, full-schema poisoning, line jumping),
//! each with the rules it must raise (`x-expect`).

use std::{collections::BTreeSet, path::PathBuf};

use serde_json::Value;

use super::{Finding, scan_tool};
use crate::mcp::pins::Tool;

fn data(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(dir)
}

fn read(path: &PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("corpus file")).expect("corpus JSON")
}

/// Every tool of every captured listing, with the server's name (the file's).
fn reference_tools() -> Vec<(String, Tool)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data("listings"))
        .expect("tests/data/listings")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|p| {
            let server = p.file_stem().expect("name").to_string_lossy().into_owned();
            Tool::list(&read(p)).into_iter().map(move |t| (server.clone(), t))
        })
        .collect()
}

#[test]
fn the_reference_and_popular_servers_raise_nothing() {
    let tools = reference_tools();
    let servers: BTreeSet<&str> = tools.iter().map(|(s, _)| s.as_str()).collect();
    assert!(servers.len() >= 17, "{servers:?}");
    assert!(tools.len() >= 110, "{} tools", tools.len());
    // Every server's tools are the others' (as if all were watched at once).
    let mut found: Vec<(String, String, Finding)> = Vec::new();
    for (server, t) in &tools {
        let others: Vec<(String, String)> = tools
            .iter()
            .filter(|(s, _)| s != server)
            .map(|(s, o)| (s.clone(), o.name.clone()))
            .collect();
        found.extend(
            scan_tool(t, &others)
                .into_iter()
                .map(|f| (server.clone(), t.name.clone(), f)),
        );
    }
    let shown: Vec<String> = found
        .iter()
        .map(|(s, t, f)| format!("{s}/{t}: {} in {}: {}", f.rule.id, f.field, f.excerpt))
        .collect();
    assert_eq!(
        found.len(),
        0,
        "false alerts on the reference corpus:\n{}",
        shown.join("\n")
    );
}

#[test]
fn every_poisoned_definition_raises_its_rules() {
    let listing = read(&data("poisoned/listing.json"));
    let others: Vec<(String, String)> = serde_json::from_value(listing["others"].clone()).expect("others");
    let entries = listing["tools"].as_array().expect("tools");
    assert!(entries.len() >= 24);
    let (mut expected, mut caught, mut findings) = (0, 0, 0);
    let mut missed = Vec::new();
    for e in entries {
        let t = Tool::from_value(e).expect("tool");
        let f = scan_tool(&t, &others);
        assert!(!f.is_empty(), "{}: nothing found", t.name);
        findings += f.len();
        for rule in e["x-expect"].as_array().expect("x-expect") {
            let rule = rule.as_str().expect("rule id");
            expected += 1;
            match f.iter().find(|f| f.rule.id == rule) {
                Some(hit) => {
                    caught += 1;
                    // The span is the offending text in its field.
                    assert!(hit.span.start < hit.span.end, "{}: {rule} empty span", t.name);
                }
                None => missed.push(format!(
                    "{}: {rule} (found {:?})",
                    t.name,
                    f.iter().map(|f| f.rule.id).collect::<Vec<_>>()
                )),
            }
        }
    }
    assert!(missed.is_empty(), "missed:\n{}", missed.join("\n"));
    assert_eq!(caught, expected);
    // The counts the README reports next to the reference corpus's none.
    assert_eq!(
        (entries.len(), expected, findings),
        (24, 45, 61),
        "update the README's counts"
    );
}
