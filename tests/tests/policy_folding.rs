//! Alerts folded per operation (issue 18): a package manager run inside a
//! watched server (its process and subtree, exec to exit) raises one alert
//! per rule with the exact count and a few examples, emitted when it ends;
//! a credential read inside the same run keeps an alert of its own.

use std::{collections::BTreeMap, path::Path, process::Command};

use mcpwatch_tests::{policy::*, *};
use serde_json::Value;

/// A local package of `files` modules whose install script reads the
/// user's SSH key (a malicious package's postinstall), packed with npm.
fn packed_package(dir: &Path, files: usize) -> String {
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(pkg.join("lib")).unwrap();
    std::fs::write(
        pkg.join("package.json"),
        r#"{"name": "foldpkg", "version": "1.0.0", "main": "lib/f0.js",
            "scripts": {"postinstall": "cat \"$HOME/.ssh/id_rsa\" > /dev/null"}}"#,
    )
    .unwrap();
    for i in 0..files {
        std::fs::write(pkg.join(format!("lib/f{i}.js")), format!("module.exports = {i};\n")).unwrap();
    }
    let out = output(
        Command::new("npm")
            .args(["pack", "--silent", "--pack-destination"])
            .arg(dir)
            .current_dir(&pkg),
    );
    assert!(
        out.status.success(),
        "npm pack: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("foldpkg-1.0.0.tgz").to_string_lossy().into_owned()
}

#[test]
fn an_npm_install_inside_a_server_folds_into_one_alert_per_rule_and_its_key_read_stays_its_own() {
    let dir = scratch_dir("fold-npm-work").canonicalize().unwrap();
    let tgz = packed_package(&dir, 30);
    let home = dir.join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let key = home.join(".ssh/id_rsa");
    std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n").unwrap();
    let app = dir.join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("package.json"), r#"{"name": "app", "version": "1.0.0"}"#).unwrap();
    let manifests = scratch_dir("fold-npm-manifests");
    std::fs::write(
        manifests.join("fold.json"),
        r#"{"name": "fold", "description": "declares nothing", "mode": "audit"}"#,
    )
    .unwrap();
    let agent = agent_with("fold-npm", &manifests, &[]);

    let install = format!("npm install --offline --no-audit --no-fund --no-update-notifier {tgz} && echo installed");
    let out = output(
        agent
            .wrap("fold", &["/bin/sh", "-c", &install])
            .env("HOME", &home)
            .env("npm_config_cache", dir.join("npm-cache"))
            .current_dir(&app),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("installed"),
        "npm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(app.join("node_modules/foldpkg/lib/f29.js").exists());
    let ev = agent.server_events("fold");
    if !reports_file_and_network(&ev) {
        eprintln!("skipped: this agent reports no file events");
        return;
    }
    let a = alerts(&ev, Some("fold"));
    let mut per_rule: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for x in &a {
        per_rule
            .entry(x["rule"].as_str().unwrap().to_owned())
            .or_default()
            .push(x);
    }
    let counts: BTreeMap<&str, (usize, u64)> = per_rule
        .iter()
        .map(|(r, v)| {
            (
                r.as_str(),
                (v.len(), v.iter().map(|x| x["count"].as_u64().unwrap()).sum()),
            )
        })
        .collect();
    eprintln!("alerts per rule (lines, occurrences): {counts:?}");

    // The key read in the postinstall: its own alert, never folded.
    let cred = per_rule
        .get("cred.ssh")
        .unwrap_or_else(|| panic!("no cred.ssh: {}", dump(&ev)));
    assert_eq!(cred.len(), 1, "{}", dump(&ev));
    assert_eq!(cred[0]["evidence"]["path"], key.to_str().unwrap());
    assert_eq!(cred[0]["count"], 1);
    assert_eq!(cred[0]["evidence"]["operation"]["program"], "npm", "{}", cred[0]);

    // npm wrote the 30 modules (and more): one folded alert with the count.
    let writes = &per_rule["file.write_undeclared"];
    assert_eq!(writes.len(), 1, "one folded write alert: {}", dump(&ev));
    let w = writes[0];
    assert!(w["count"].as_u64().unwrap() >= 30, "{w}");
    let op = &w["evidence"]["operation"];
    assert_eq!(op["program"], "npm", "{w}");
    assert!(op["pid"].as_u64().is_some(), "{w}");
    let examples = w["evidence"]["examples"].as_array().unwrap();
    assert!(!examples.is_empty() && examples.len() <= 5, "{w}");
    assert!(w["summary"].as_str().unwrap().contains("npm"), "{w}");

    // Every rule the run raised more than once is one alert line.
    for (rule, v) in &per_rule {
        if rule.starts_with("cred.") {
            continue;
        }
        let in_run: Vec<_> = v.iter().filter(|x| !x["evidence"]["operation"].is_null()).collect();
        assert!(
            in_run.len() <= 1,
            "{rule} raised {} lines in one run: {}",
            in_run.len(),
            dump(&ev)
        );
    }
    assert!(agent.stop().success());
}
